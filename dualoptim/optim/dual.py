r"""DualOptim: two torch optimizers over the same parameters, one state per objective (Algorithm 1 of the paper).

Each optimizer sees only the gradients of its own objective.  With the paper's image-task pair, AdamW for
forget steps and SGD with momentum for retain steps, the moments :math:`m_f, v_f` are estimated from forget
gradients :math:`g_f` alone and the momentum buffer :math:`b_r` from retain gradients :math:`g_r` alone:

.. math::
    \text{forget:}\quad & t_f \leftarrow t_f + 1,\
        \theta \leftarrow \theta (1 - \gamma_f \lambda_f),\
        m_f \leftarrow \beta_1 m_f + (1 - \beta_1) g_f,\
        v_f \leftarrow \beta_2 v_f + (1 - \beta_2) g_f^2, \\
        & \theta \leftarrow \theta - \gamma_f \frac{m_f / (1 - \beta_1^{t_f})}{\sqrt{v_f / (1 - \beta_2^{t_f})}
          + \epsilon} \\
    \text{retain:}\quad & b_r \leftarrow \mu b_r + (g_r + \lambda_r \theta),\
        \theta \leftarrow \theta - \gamma_r b_r

The update is delegated to the wrapped torch optimizers, so it is exactly that of ``torch.optim.AdamW``
and ``torch.optim.SGD`` run side by side (including their foreach/fused kernels); any pair of
:data:`OPTIMIZERS` works the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch.optim import Optimizer

from dualoptim.optim.base import Params, TwoObjectiveOptimizer, materialize
from dualoptim.optim.lion import Lion
from dualoptim.optim.lrfree import LR_FREE_OPTIMIZERS, build_lrfree_optimizer

__all__ = ["ADAM_WEIGHT_DECAY", "OPTIMIZERS", "DualOptim", "build_optimizer"]

#: Optimizer names accepted by ``forget_optim`` / ``retain_optim``.
OPTIMIZERS: Dict[str, type] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "lion": Lion,
    "rmsprop": torch.optim.RMSprop,
}

# The research code fixes AdamW's weight decay at 0.05 for every adaptive
# optimizer it builds (``--weight_decay`` only reaches SGD); we keep that.
ADAM_WEIGHT_DECAY = 0.05


def build_optimizer(name: str, params: Params, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.0, **kwargs: Any) -> Optimizer:
    """Build one torch optimizer by name: ``adamw``, ``adam``, ``sgd``, ``lion``, ``rmsprop``, or a
    learning-rate-free one of an optional package (``prodigy``, ``adamw_sf``: :mod:`dualoptim.optim.lrfree`)."""
    key = name.lower()
    if key in LR_FREE_OPTIMIZERS:
        return build_lrfree_optimizer(key, params, lr, weight_decay, **kwargs)
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join([*OPTIMIZERS, *LR_FREE_OPTIMIZERS])}")
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
    return OPTIMIZERS[key](params, lr=lr, weight_decay=weight_decay, **kwargs)


class DualOptim(TwoObjectiveOptimizer):
    """Two optimizers over the same parameters, one per unlearning objective (see the module docstring).

    Its ``state_dict`` is ``{"forget": ..., "retain": ...}``, the two torch optimizers' own.

    Args:
        params: parameters or param groups, shared by both optimizers.
        forget_optim, retain_optim: ``"adamw"``, ``"adam"``, ``"sgd"``, ``"lion"``, ``"rmsprop"``, or
            ``"prodigy"`` / ``"adamw_sf"`` (learning-rate free, optional packages: :mod:`dualoptim.optim.lrfree`).
        forget_lr, retain_lr: learning rates of the two optimizers.
        forget_weight_decay, retain_weight_decay: their weight decays.
        momentum: momentum of an SGD optimizer (either side).
        forget_kwargs, retain_kwargs: extra keyword arguments (``betas``,
            ``foreach``, ``fused``, ``nesterov`` ...) for each optimizer.
    """

    #: One optimizer state per objective.
    is_dual = True

    def __init__(self, params: Params, forget_optim: str = "adamw", forget_lr: float = 1e-3,
                 forget_weight_decay: float = ADAM_WEIGHT_DECAY, retain_optim: str = "sgd",
                 retain_lr: float = 0.01, momentum: float = 0.9,
                 retain_weight_decay: float = 5e-4,
                 forget_kwargs: Optional[Dict[str, Any]] = None,
                 retain_kwargs: Optional[Dict[str, Any]] = None) -> None:
        params = materialize(params)
        self.forget_optimizer = build_optimizer(
            forget_optim, materialize(params), forget_lr, forget_weight_decay, momentum,
            **(forget_kwargs or {}))
        self.retain_optimizer = build_optimizer(
            retain_optim, materialize(params), retain_lr, retain_weight_decay, momentum,
            **(retain_kwargs or {}))

    def lr(self, objective: str) -> float:
        return self.torch_optimizer(objective).param_groups[0]["lr"]

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self.forget_optimizer.step(closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self.retain_optimizer.step(closure)
