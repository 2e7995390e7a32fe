"""What ``--report_to`` logs of an optimizer's state, by the objective it serves: the norm of every moment buffer
and the step sizes a learning-rate-free optimizer estimates."""
from __future__ import annotations

from typing import Any, Dict

import torch

from dualoptim.optim.base import OBJECTIVES

__all__ = ["moment_norms", "step_size_estimates"]


def objective_optimizers(optimizer: Any) -> Dict[str, Any]:
    """The torch optimizers behind ``optimizer`` by the objective they serve: ``{"forget": ..., "retain": ...}``,
    or ``{"shared": ...}`` when one serves both.

    ``optimizer``: a two-objective optimizer, a torch optimizer, or ``accelerate``'s wrapper around one (its
    ``optimizer``); a :class:`~dualoptim.optim.paired.PairedOptimizer` is its two optimizers.
    """
    optimizer = getattr(optimizer, "optimizer", optimizer)
    forget = getattr(optimizer, "forget_optimizer", optimizer)
    retain = getattr(optimizer, "retain_optimizer", optimizer)
    forget = getattr(forget, "forget_optimizer", forget)  # a PairedOptimizer behind an ObjectiveOptim
    retain = getattr(retain, "retain_optimizer", retain)
    return {"shared": forget} if forget is retain else {"forget": forget, "retain": retain}


def step_size_estimates(optimizer: Any) -> Dict[str, float]:
    r"""The step sizes the optimizers estimate for themselves, as ``{"<objective>/d": value}``.

    Prodigy (and D-Adaptation) keep their estimate :math:`d_t` of the distance to the solution in every param
    group (the step is :math:`\gamma d_t` times Adam's); it is read from the first group of each objective's
    torch optimizer.  Empty for optimizers that estimate nothing.
    """
    return {f"{label}/d": float(torch_optimizer.param_groups[0]["d"])
            for label, torch_optimizer in objective_optimizers(optimizer).items()
            if "d" in torch_optimizer.param_groups[0]}


def moment_norms(optimizer: Any) -> Dict[str, float]:
    """The L2 norm, over all parameters, of every moment buffer an optimizer keeps, by the objective it serves.

    Keys are ``<objective>/<buffer>``: ``forget/exp_avg`` and ``retain/momentum_buffer`` for a
    :class:`DualOptim` (AdamW + SGD), ``forget/exp_avg`` and ``retain/exp_avg`` for a :class:`DecoupledAdamW`,
    ``shared/exp_avg`` for one state serving both (a plain torch optimizer, :class:`SharedOptim`, a moment
    :class:`DecoupledAdamW` keeps shared). These are the quantities behind the paper's argument that one state
    mixes the two objectives' gradient statistics. Step counts and non-float (8-bit) buffers are skipped.
    """
    sources = objective_optimizers(optimizer)
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
