r"""Two torch optimizers behind one ``torch.optim.Optimizer``: each step goes to the forget or the retain one.

The LLM loop, ``accelerate``, HF ``Trainer`` and LR schedulers take one torch optimizer and tell it each
step's objective (:func:`~dualoptim.optim.per_objective.set_objective`).  :class:`PairedOptimizer` lets a
pair of existing torch optimizers -- a learning-rate-free package optimizer for forget steps, AdamW for
retain steps -- serve there, with one state per objective:

.. math::
    \text{forget:}\quad \theta \leftarrow \theta - \mathrm{Opt}_f(g_f; s_f, \rho_f \gamma_t) \qquad
    \text{retain:}\quad \theta \leftarrow \theta - \mathrm{Opt}_r(g_r; s_r, \gamma_t)

where :math:`\gamma_t` is the scheduled ``lr`` of the pair's param groups and :math:`\rho_f` their
``forget_lr_ratio`` (forget steps follow the schedule as those of
:class:`~dualoptim.optim.decoupled_adamw.DecoupledAdamW` do).  The pair's param groups *are* the retain
optimizer's (the same dicts), so a scheduler, ``GradScaler.unscale_`` and gradient clipping see every
parameter once; before a forget step the forget optimizer's groups get :math:`\rho_f \gamma_t`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from torch.optim import Optimizer

from dualoptim.optim.base import train_weights, eval_weights
from dualoptim.optim.per_objective import PerObjectiveState

__all__ = ["PairedOptimizer"]


class PairedOptimizer(PerObjectiveState, Optimizer):
    """One torch optimizer that steps ``forget`` or ``retain`` by the objective in its param groups.

    Its ``state_dict`` is ``{"forget": ..., "retain": ...}``, the two optimizers' own (the retain one's
    param groups carry ``objective`` and ``forget_lr_ratio``).

    Args:
        forget, retain: torch optimizers over the same parameters in the same param groups (built from
            the same list); ``retain``'s learning rates are the scheduled ones.
        forget_lr_ratio: :math:`\\rho_f`, forget steps run at this times the scheduled ``lr``.
    """

    def __init__(self, forget: Optimizer, retain: Optimizer, forget_lr_ratio: float) -> None:
        if [list(g["params"]) for g in forget.param_groups] != [list(g["params"]) for g in retain.param_groups]:
            raise ValueError("PairedOptimizer: the forget and retain optimizers must hold the same parameters "
                             "in the same param groups")
        if forget_lr_ratio < 0.0:
            raise ValueError(f"Invalid forget_lr_ratio: {forget_lr_ratio}")
        self.forget_optimizer, self.retain_optimizer = forget, retain
        # Optimizer.__init__ adopts the retain optimizer's group dicts themselves (adding our two entries)
        super().__init__(retain.param_groups, dict(forget_lr_ratio=forget_lr_ratio, objective="retain"))

    @property
    def is_dual(self) -> bool:
        return True

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        if self._group_objective(self.param_groups[0]) == "retain":
            return self.retain_optimizer.step(closure)
        for forget_group, group in zip(self.forget_optimizer.param_groups, self.param_groups):
            forget_group["lr"] = self._lr_ratio(group) * group["lr"]
        return self.forget_optimizer.step(closure)

    def train(self) -> None:
        """The weights to train on (a schedule-free optimizer's, see :mod:`dualoptim.optim.lrfree`)."""
        train_weights(self.forget_optimizer)
        train_weights(self.retain_optimizer)

    def eval(self) -> None:
        """The weights to evaluate or save."""
        eval_weights(self.forget_optimizer)
        eval_weights(self.retain_optimizer)

    def state_dict(self) -> Dict[str, Any]:
        return {"forget": self.forget_optimizer.state_dict(), "retain": self.retain_optimizer.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if set(state_dict) != {"forget", "retain"}:
            raise ValueError(f"PairedOptimizer state_dict must have the keys ['forget', 'retain'], "
                             f"got {sorted(state_dict)}")
        self.forget_optimizer.load_state_dict(state_dict["forget"])
        self.retain_optimizer.load_state_dict(state_dict["retain"])
        self.param_groups = self.retain_optimizer.param_groups  # loading replaced the group dicts
