"""The norm of every moment buffer an optimizer keeps, by the objective it serves (what ``--report_to`` logs)."""
from __future__ import annotations

from typing import Any, Dict

import torch

from dualoptim.optim.base import OBJECTIVES

__all__ = ["moment_norms"]


def moment_norms(optimizer: Any) -> Dict[str, float]:
    """The L2 norm, over all parameters, of every moment buffer an optimizer keeps, by the objective it serves.

    Keys are ``<objective>/<buffer>``: ``forget/exp_avg`` and ``retain/momentum_buffer`` for a
    :class:`DualOptim` (AdamW + SGD), ``forget/exp_avg`` and ``retain/exp_avg`` for a :class:`DecoupledAdamW`,
    ``shared/exp_avg`` for one state serving both (a plain torch optimizer, :class:`SharedOptim`, a moment
    :class:`DecoupledAdamW` keeps shared). These are the quantities behind the paper's argument that one state
    mixes the two objectives' gradient statistics. Step counts and non-float (8-bit) buffers are skipped.
    """
    forget = getattr(optimizer, "forget_optimizer", optimizer)
    retain = getattr(optimizer, "retain_optimizer", optimizer)
    sources = {"shared": forget} if forget is retain else {"forget": forget, "retain": retain}
    squares: Dict[str, float] = {}
    for label, torch_optimizer in sources.items():
        for param, state in torch_optimizer.state.items():
            for key, value in state.items():
                if not torch.is_tensor(value) or not value.is_floating_point() or value.shape != param.shape:
                    continue
                objective = label
                for name in OBJECTIVES:
                    if key.endswith("_" + name):
                        objective, key = name, key[:-len(name) - 1]
                squares[f"{objective}/{key}"] = squares.get(f"{objective}/{key}", 0.0) + float(
                    value.detach().float().square().sum())
    return {key: squares[key] ** 0.5 for key in sorted(squares)}
