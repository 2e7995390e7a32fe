"""The two-objective optimizers, one module per family (the maths of each is in its docstring).

=========================== ============================================================================
module                      family
=========================== ============================================================================
:mod:`.base`                :class:`TwoObjectiveOptimizer`, the interface every family implements
:mod:`.dual`                :class:`DualOptim`: two torch optimizers, one state per objective
:mod:`.hybrid`              :class:`HybridAdamSGD`: ``dual_share``, Adam and SGD with one first moment
:mod:`.shared`              :class:`SharedOptim`: one torch optimizer and one state for both objectives
:mod:`.per_objective`       :class:`ObjectiveOptim` over a :class:`PerObjectiveState` torch optimizer
:mod:`.decoupled_adamw`     :class:`DecoupledAdamW`: AdamW with moments per objective, one torch optimizer
:mod:`.lion`                :class:`Lion`: the sign-momentum optimizer of the Lion ablations
:mod:`.paired`              :class:`PairedOptimizer`: two torch optimizers behind one, routed by objective
:mod:`.lrfree`              the learning-rate-free package optimizers (``prodigy``, ``adamw_sf``), by name
:mod:`.moments`             :func:`moment_norms`, :func:`step_size_estimates`: what ``--report_to`` logs
=========================== ============================================================================

The bitsandbytes variant of :class:`DecoupledAdamW` lives in :mod:`dualoptim.optimizers_8bit`, imported
only when asked for.
"""
from dualoptim.optim.base import (OBJECTIVES, ObjectiveView, Params, TwoObjectiveOptimizer, check_objective,
                                  eval_weights, evaluation_weights, train_weights)
from dualoptim.optim.decoupled_adamw import DecoupledAdamW
from dualoptim.optim.dual import ADAM_WEIGHT_DECAY, OPTIMIZERS, DualOptim, build_optimizer
from dualoptim.optim.hybrid import HybridAdamSGD
from dualoptim.optim.lion import Lion
from dualoptim.optim.moments import moment_norms, step_size_estimates
from dualoptim.optim.paired import PairedOptimizer
from dualoptim.optim.per_objective import ObjectiveOptim, PerObjectiveState, set_objective
from dualoptim.optim.shared import SharedOptim

__all__ = ["ADAM_WEIGHT_DECAY", "OBJECTIVES", "OPTIMIZERS", "DecoupledAdamW", "DualOptim", "HybridAdamSGD", "Lion",
           "ObjectiveOptim", "ObjectiveView", "PairedOptimizer", "Params", "PerObjectiveState", "SharedOptim", "TwoObjectiveOptimizer",
           "build_optimizer", "check_objective", "eval_weights", "evaluation_weights", "moment_norms", "set_objective",
           "step_size_estimates", "train_weights"]
