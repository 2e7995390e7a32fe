"""Lion, the sign-momentum optimizer of the research code's ``dual_ls`` / ``dual_ll`` / ``dual_sl`` ablations."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch.optim import Optimizer

from dualoptim.optim.base import Params, closure_loss

__all__ = ["Lion"]


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023): the sign of an interpolated momentum, with decoupled weight decay.

    The update of ``lion_pytorch.Lion`` (the research code's ``dual_ls`` /
    ``dual_ll`` / ``dual_sl`` ablations), in the same floating-point order,
    on torch's multi-tensor (foreach) kernels:

    .. math::
        \theta &\leftarrow \theta (1 - \gamma \lambda) \\
        \theta &\leftarrow \theta - \gamma \operatorname{sign}(\beta_1 m + (1 - \beta_1) g) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2) g

    Args:
        params: parameters or param groups.
        lr: :math:`\gamma` (default 1e-4).
        betas: :math:`(\beta_1, \beta_2)` (default ``(0.9, 0.99)``).
        weight_decay: :math:`\lambda` (default 0).
    """

    def __init__(self, params: Params, lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            (beta1, beta2), lr = group["betas"], group["lr"]
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
            update = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(update, torch._foreach_mul(grads, 1.0 - beta1))
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta2)
        return loss
