"""Dual optimizers for machine unlearning (DualOptim, Zhong, Luo & Liu, NeurIPS 2025), under the module path
earlier releases documented (``from dualoptim.optimizers import DualOptim``).

The classes live one family per module in :mod:`dualoptim.optim` (see its table); this module re-exports
them, so imports and saved ``state_dict`` files of earlier releases keep working.  Every two-objective
optimizer implements :class:`TwoObjectiveOptimizer` (``forget_step`` / ``retain_step`` / ``optimizers`` /
``is_dual`` / ``state_dict``); the ``--optim`` / ``--optim_cfg`` names that build them live in
:mod:`dualoptim.recipes`.
"""
from dualoptim.optim import (ADAM_WEIGHT_DECAY, OBJECTIVES, OPTIMIZERS, DecoupledAdamW, DualOptim, HybridAdamSGD,
                             Lion, ObjectiveOptim, ObjectiveView, PairedOptimizer, Params, PerObjectiveState,
                             SharedOptim, TwoObjectiveOptimizer, build_optimizer, eval_weights, evaluation_weights, moment_norms,
                             set_objective, step_size_estimates)

__all__ = ["ADAM_WEIGHT_DECAY", "OPTIMIZERS", "OBJECTIVES", "DualOptim", "SharedOptim", "ObjectiveOptim",
           "HybridAdamSGD", "Lion", "DecoupledAdamW", "PairedOptimizer", "PerObjectiveState", "TwoObjectiveOptimizer",
           "build_optimizer", "eval_weights", "evaluation_weights", "moment_norms", "set_objective", "step_size_estimates"]
