r"""One torch optimizer, one state, for both objectives: the baseline DualOptim improves on (``--optim sgd|adam``)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.optim import Optimizer

from dualoptim.optim.base import TwoObjectiveOptimizer

__all__ = ["SharedOptim"]


class SharedOptim(TwoObjectiveOptimizer):
    r"""One optimizer for both objectives, each stepped at its own learning rate.

    ``forget_optimizer`` and ``retain_optimizer`` are the same object, so the
    two objectives share one state :math:`s`.  The research code steps forget batches
    at ``--unlearn_lr`` and retain batches at ``--retain_lr`` with that one
    optimizer; we reproduce this by scaling every group's (possibly scheduled)
    learning rate :math:`\gamma` by :math:`\rho_o` for the duration of the step:

    .. math::
        \rho_f = \gamma_f / \gamma_0, \quad \rho_r = \gamma_r / \gamma_0, \qquad
        \theta \leftarrow \theta - \mathrm{Opt}(\nabla L_o(\theta); s, \rho_o \gamma)

    where :math:`\gamma_0` is the optimizer's ``lr`` when wrapped.  (Two param groups per parameter, one per
    learning rate, are not possible: a torch optimizer refuses a parameter in two groups.)  A factor of 1
    steps the optimizer untouched.  Its ``state_dict`` is ``{"shared": ...}``, the optimizer's own.

    Args:
        optimizer: the torch optimizer serving both objectives.
        forget_lr, retain_lr: :math:`\gamma_f`, :math:`\gamma_r`.
    """

    is_dual = False

    def __init__(self, optimizer: Optimizer, forget_lr: float, retain_lr: float) -> None:
        self.forget_optimizer = self.retain_optimizer = optimizer
        base_lr = optimizer.param_groups[0]["lr"]
        self._scale = {"forget": forget_lr / base_lr, "retain": retain_lr / base_lr}

    def _scaled_step(self, objective: str, closure: Optional[Callable[[], Any]]) -> Any:
        scale = self._scale[objective]
        if scale == 1.0:
            return self.retain_optimizer.step(closure)
        groups = self.retain_optimizer.param_groups
        saved = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] = group["lr"] * scale
        try:
            return self.retain_optimizer.step(closure)
        finally:
            for group, lr in zip(groups, saved):
                group["lr"] = lr

    def lr(self, objective: str) -> float:
        return self.retain_optimizer.param_groups[0]["lr"] * self._scale[objective]

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._scaled_step("forget", closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._scaled_step("retain", closure)
