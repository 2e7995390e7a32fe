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
:mod:`.moments`             :func:`moment_norms`: the moment buffers' norms by objective
=========================== ============================================================================

The bitsandbytes variant of :class:`DecoupledAdamW` lives in :mod:`dualoptim.optimizers_8bit`, imported
only when asked for.
"""
from dualoptim.optim.base import OBJECTIVES, ObjectiveView, Params, TwoObjectiveOptimizer, check_objective
from dualoptim.optim.decoupled_adamw import DecoupledAdamW
from dualoptim.optim.dual import ADAM_WEIGHT_DECAY, OPTIMIZERS, DualOptim, build_optimizer
from dualoptim.optim.hybrid import HybridAdamSGD
from dualoptim.optim.lion import Lion
from dualoptim.optim.moments import moment_norms
from dualoptim.optim.per_objective import ObjectiveOptim, PerObjectiveState, set_objective
from dualoptim.optim.shared import SharedOptim

__all__ = ["ADAM_WEIGHT_DECAY", "OBJECTIVES", "OPTIMIZERS", "DecoupledAdamW", "DualOptim", "HybridAdamSGD", "Lion",
           "ObjectiveOptim", "ObjectiveView", "Params", "PerObjectiveState", "SharedOptim", "TwoObjectiveOptimizer",
           "build_optimizer", "check_objective", "moment_norms", "set_objective"]
