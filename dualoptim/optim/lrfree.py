r"""Learning-rate-free torch optimizers from their own packages, which :class:`~dualoptim.optim.dual.DualOptim`
pairs by name (the optional extra ``dualoptim[lrfree]`` installs both packages).

* ``prodigy``: ``prodigyopt.Prodigy`` (default lr 1.0; Mishchenko & Defazio, 2024) takes Adam's step times an
  estimate :math:`d_t` of the distance :math:`\lVert\theta_0 - \theta_*\rVert`, grown from ``d0 = 1e-6`` as
  the gradients allow; ``lr`` multiplies :math:`d_t`.  A forget loss that is ascended (gradient ascent, SCRUB's
  max steps, SFR-on) has no minimum to be distant from, and :math:`d_t` grows for as long as the ascent goes on;
  Prodigy's ``growth_rate`` (``forget_kwargs={"growth_rate": ...}``) bounds
  :math:`d_{t+1} \le \text{growth\_rate}\, d_t` (benchmarks/README.md, the CIFAR-10 subset's ``dual_prodigy`` rows).
* ``adamw_sf``: ``schedulefree.AdamWScheduleFree`` (default lr 0.0025; Defazio et al., 2024) needs no
  schedule: gradients are taken at :math:`y = (1 - \beta_1) z + \beta_1 x`, :math:`z` takes AdamW steps and
  :math:`x`, their weighted average, is the weights to evaluate.

The packages' own classes run every step; nothing here re-implements them.  Their state lives where torch
optimizers keep it (``state[p]`` and the param groups: Prodigy's :math:`d_t` is ``param_groups[i]["d"]``),
so ``state_dict`` / ``load_state_dict`` round-trip exactly.

A schedule-free optimizer holds :math:`y` in the parameters while training and swaps in :math:`x` with its
``eval()`` (back with ``train()``);
:meth:`~dualoptim.optim.base.TwoObjectiveOptimizer.eval_mode` / ``train_mode`` call them wherever the project
evaluates or saves a model.  Paired with a retain optimizer, a retain step moves :math:`y` by
:math:`\delta` while :math:`z` is unchanged, so the evaluated :math:`x = (y - (1 - \beta_1) z) / \beta_1`
moves by :math:`\delta / \beta_1` (1.11 :math:`\delta` at the default :math:`\beta_1 = 0.9`).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Dict, Tuple

from torch.optim import Optimizer

from dualoptim.errors import UsageError
from dualoptim.optim.base import Params, train_weights

__all__ = ["LR_FREE_EXTRA", "LR_FREE_OPTIMIZERS", "build_lrfree_optimizer", "import_lrfree_package"]

#: Name -> (package module, optimizer class) of the learning-rate-free optimizers.
LR_FREE_OPTIMIZERS: Dict[str, Tuple[str, str]] = {
    "prodigy": ("prodigyopt", "Prodigy"),
    "adamw_sf": ("schedulefree", "AdamWScheduleFree"),
}

#: The optional extra that installs their packages.
LR_FREE_EXTRA = "dualoptim[lrfree]"


def import_lrfree_package(name: str, needed_by: str) -> ModuleType:
    """The package of the optimizer ``name``; absent, a one-line ``UsageError`` saying what ``needed_by``
    (a flag and value, or an optimizer) needs and how to install it."""
    module = LR_FREE_OPTIMIZERS[name][0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise UsageError(f"{needed_by}: needs the {module} package "
                         f"(pip install {module}, or pip install '{LR_FREE_EXTRA}')") from None


def build_lrfree_optimizer(name: str, params: Params, lr: float, weight_decay: float, **kwargs: Any) -> Optimizer:
    """The package's optimizer ``name`` (``prodigy`` or ``adamw_sf``) over ``params``, ready to step.

    A schedule-free optimizer is built in eval mode; it is switched to train mode here (a no-op on the
    weights before the first step, where :math:`x = y = z`), as the training loops expect.
    """
    cls = LR_FREE_OPTIMIZERS[name][1]
    optimizer = getattr(import_lrfree_package(name, f"optimizer {name!r}"), cls)(
        params, lr=lr, weight_decay=weight_decay, **kwargs)
    train_weights(optimizer)
    return optimizer
