r"""Torch optimizers that keep one state per objective themselves, and their two-objective wrapper.

Such an optimizer (:class:`~dualoptim.optim.decoupled_adamw.DecoupledAdamW`, its bitsandbytes 8-bit variant
``dualoptim.optimizers_8bit.DecoupledAdamW8bit``) is *one* ``torch.optim.Optimizer`` -- so it drops into
HF ``Trainer``, ``accelerate``, DeepSpeed and LR schedulers -- whose state holds moments per objective
:math:`o \in \{f, r\}`.  The objective of the next step is set explicitly (:func:`set_objective`) and
stored in every param group, and forget steps run at :math:`\rho_f \gamma` (``forget_lr_ratio`` times the
scheduled ``lr``), retain steps at :math:`\gamma`.  :class:`ObjectiveOptim` puts such an optimizer behind
:class:`~dualoptim.optim.base.TwoObjectiveOptimizer`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from torch.optim import Optimizer

from dualoptim.optim.base import OBJECTIVES, TwoObjectiveOptimizer, check_objective

__all__ = ["ObjectiveOptim", "PerObjectiveState", "set_objective"]


class PerObjectiveState:
    """The objective protocol of torch optimizers that keep one state per objective (a mixin).

    The objective of the next step lives in every param group under ``"objective"`` (so it survives
    optimizer wrappers and ``state_dict``), next to ``forget_lr_ratio``, ``decouple_m`` and
    ``decouple_v``.  Per-parameter state keys carry the suffix ``_forget`` / ``_retain`` when they belong
    to one objective.
    """

    @staticmethod
    def _objective_defaults(forget_lr_ratio: float, decouple_m: bool, decouple_v: bool) -> Dict[str, Any]:
        """The param-group entries of the protocol (the first steps serve ``retain``)."""
        if forget_lr_ratio < 0.0:
            raise ValueError(f"Invalid forget_lr_ratio: {forget_lr_ratio}")
        return dict(forget_lr_ratio=forget_lr_ratio, decouple_m=decouple_m, decouple_v=decouple_v,
                    objective="retain")

    def set_objective(self, objective: str) -> None:
        """Select the objective (``"forget"`` or ``"retain"``) the next steps serve."""
        check_objective(objective)
        for group in self.param_groups:
            group["objective"] = objective

    @property
    def objective(self) -> str:
        return self.param_groups[0]["objective"]

    @property
    def is_dual(self) -> bool:
        """Whether a moment is kept per objective (``decouple_m`` or ``decouple_v``)."""
        return any(group["decouple_m"] or group["decouple_v"] for group in self.param_groups)

    @staticmethod
    def _group_objective(group: Dict[str, Any]) -> str:
        objective = group["objective"]
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r} in param group")
        return objective

    @classmethod
    def _lr_ratio(cls, group: Dict[str, Any]) -> float:
        """Factor on the group's (scheduled) ``lr`` for the step's objective."""
        return group["forget_lr_ratio"] if cls._group_objective(group) == "forget" else 1.0

    @staticmethod
    def _state_suffixes(group: Dict[str, Any], objective: str) -> Tuple[str, str, str]:
        """Key suffixes of ``objective``'s (step count, first moment, second moment) in ``group``.

        A shared moment has no suffix; step counts are per objective whenever
        any moment is decoupled (as the original DualOptim code does).
        """
        suffix = "_" + objective
        decoupled = group["decouple_m"] or group["decouple_v"]
        return (suffix if decoupled else "", suffix if group["decouple_m"] else "",
                suffix if group["decouple_v"] else "")


def set_objective(optimizer: Any, objective: str) -> None:
    """Set the objective of a :class:`PerObjectiveState` optimizer, through any wrappers.

    ``accelerate``'s ``AcceleratedOptimizer`` and DeepSpeed engines wrap the
    optimizer but share its ``param_groups``, which is where the objective is
    stored; optimizers without an objective (plain AdamW) are left alone.
    """
    check_objective(objective)
    for group in optimizer.param_groups:
        if "objective" in group:
            group["objective"] = objective


class ObjectiveOptim(TwoObjectiveOptimizer):
    r"""A :class:`PerObjectiveState` optimizer (``DecoupledAdamW``, ``DecoupledAdamW8bit``) as a two-objective
    optimizer.

    A forget or retain step selects the objective (:func:`set_objective`) and steps the one optimizer, so
    :math:`\theta \leftarrow \theta - \mathrm{Opt}(\nabla L_o(\theta); s_o, \rho_o \gamma)`.  ``is_dual`` is
    the optimizer's: true when a moment is decoupled.  Its ``state_dict`` is ``{"shared": ...}``: one torch
    optimizer serves both objectives, and its own state holds what each objective keeps apart.

    Args:
        optimizer: the :class:`PerObjectiveState` optimizer.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.forget_optimizer = self.retain_optimizer = optimizer

    @property
    def is_dual(self) -> bool:
        return self.retain_optimizer.is_dual

    def lr(self, objective: str) -> float:
        group = self.retain_optimizer.param_groups[0]
        return group["lr"] * (group["forget_lr_ratio"] if check_objective(objective) == "forget" else 1.0)

    def _objective_step(self, objective: str, closure: Optional[Callable[[], Any]]) -> Any:
        set_objective(self.retain_optimizer, objective)
        return self.retain_optimizer.step(closure)

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._objective_step("forget", closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._objective_step("retain", closure)
