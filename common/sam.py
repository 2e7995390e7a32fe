"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) around any torch optimizer.

SAM minimises the worst loss in an L2 ball of radius ``rho`` around the
weights.  With gradient :math:`g = \\nabla L(w)` one update is two passes:

.. math::
    e &= \\rho \\, \\frac{T^2 g}{\\lVert T g \\rVert_2 + 10^{-12}}
        \\qquad (T = \\mathrm{diag}(|w|) \\text{ if adaptive (ASAM), else } I) \\\\
    w' &= w + e \\qquad \\text{(first step: climb to the local worst case)} \\\\
    g' &= \\nabla L(w') \\qquad \\text{(a second forward/backward pass at } w') \\\\
    w &\\leftarrow \\mathrm{BaseStep}(w, g') \\qquad \\text{(second step, from the original } w)

The norm runs over every parameter with a gradient, in all groups.  The
base optimizer (SGD with momentum in the research code's ``main_train.py
--optim sam`` and ``retrain_sam``) keeps its own state and shares the param
groups, so learning-rate schedulers and per-group learning rates act on it.

The research code drives it as ``first_step()``, recompute the loss,
``backward()``, ``second_step()``.  Here the second half is :meth:`SAM.step`,
so the optimizer drops into loops, ``GradScaler`` and ``SharedOptim`` that
call ``step()``: the training loop calls :meth:`SAM.first_step` after the
first backward pass (see ``ImageClassification.unlearn.engine``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Type

import torch
from torch.optim import Optimizer

__all__ = ["SAM", "sam_of"]


class SAM(Optimizer):
    """SAM around ``base_optimizer(params, **kwargs)``.

    Args:
        params: parameters or param groups.
        base_optimizer: the optimizer class of the second step (e.g. ``torch.optim.SGD``).
        rho: radius of the neighbourhood (the research code's default, 0.05).
        adaptive: ASAM, the perturbation scaled element-wise by ``|w|``.
        **kwargs: the base optimizer's arguments (``lr``, ``momentum``, ``weight_decay`` ...).
    """

    def __init__(self, params: Any, base_optimizer: Type[Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **kwargs: Any) -> None:
        if rho < 0.0:
            raise ValueError(f"Invalid rho: {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(p=2)
                 for group in self.param_groups for p in group["params"] if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(norms), 2)

    @torch.no_grad()
    def first_step(self) -> None:
        """Move every parameter with a gradient to ``w + e(w)``, remembering ``w``."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                e_w = (p.pow(2) if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Second step: back to ``w`` and the base optimizer's update with the current (perturbed) gradients.

        Parameters :meth:`first_step` did not move are stepped as they are.
        """
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)
        return self.base_optimizer.step(closure)

    def state_dict(self) -> Dict[str, Any]:
        # between steps SAM holds no state of its own: the base optimizer's is the whole state
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def sam_of(optimizer: Any, objective: str) -> Optional[SAM]:
    """The :class:`SAM` serving ``objective`` in a ``DualOptim`` (``None`` when it is another optimizer)."""
    torch_optimizer = optimizer.torch_optimizer(objective)
    return torch_optimizer if isinstance(torch_optimizer, SAM) else None
