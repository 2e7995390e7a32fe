r"""The research code's ``dual_share`` ablation: Adam forget steps and SGD retain steps sharing one first moment."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from dualoptim.optim.base import Params
from dualoptim.optim.dual import DualOptim

__all__ = ["HybridAdamSGD"]


class HybridAdamSGD(DualOptim):
    r"""Adam forget steps, SGD retain steps, one first moment.

    Both objectives update the same first moment :math:`m`; the second
    moment :math:`v` and the step count :math:`t` (of the bias corrections)
    belong to the forget (Adam) steps alone.  Weight decay :math:`\lambda` is
    an L2 term added to the gradient on both sides:

    .. math::
        \text{forget:}\quad & g \leftarrow g + \lambda\theta,\ t \leftarrow t + 1,
            m \leftarrow \beta_1 m + (1-\beta_1) g,\ v \leftarrow \beta_2 v + (1-\beta_2) g^2, \\
            & \theta \leftarrow \theta - \gamma_f \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon} \\
        \text{retain:}\quad & g \leftarrow g + \lambda\theta,
            m \leftarrow \beta_1 m + (1-\beta_1) g,\ \theta \leftarrow \theta - \gamma_r m

    That is a :class:`~dualoptim.optim.dual.DualOptim` of ``torch.optim.Adam`` (forget) and
    ``torch.optim.SGD`` with ``momentum = dampening = beta1`` (retain) whose momentum buffer *is* Adam's
    ``exp_avg`` tensor, so both updates run on torch's kernels.  The tie is made when the states are
    created and again after :meth:`load_state_dict` (which copies tensors).  ``is_dual`` stays true, as
    for every ``dual_*`` recipe: the second moments and step counts are the forget side's alone.
    """

    def __init__(self, params: Params, forget_lr: float, retain_lr: float, weight_decay: float = 0.0,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, forget_optim="adam", forget_lr=forget_lr, forget_weight_decay=weight_decay,
                         retain_optim="sgd", retain_lr=retain_lr, momentum=betas[0],
                         retain_weight_decay=weight_decay, forget_kwargs=dict(betas=betas, eps=eps),
                         retain_kwargs=dict(dampening=betas[0]))
        self._tie_first_moment()

    def _tie_first_moment(self) -> None:
        for group in self.forget_optimizer.param_groups:
            for p in group["params"]:
                adam = self.forget_optimizer.state[p]
                if not adam:  # Adam's own fresh state, made now so SGD can share its exp_avg
                    adam.update(step=torch.zeros((), dtype=torch.float32),
                                exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                                exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
                self.retain_optimizer.state[p]["momentum_buffer"] = adam["exp_avg"]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._tie_first_moment()
