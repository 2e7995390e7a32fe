"""The DDPM's optimizers: the YAML ``optim:`` section for training, and the ``--optim`` recipe for forgetting.

The research code trains with the config's optimizer (``Adam`` with ``beta1`` / ``eps`` /
``amsgrad``, ``SGD`` with momentum 0.9, or ``RMSProp``, each with ``optim.weight_decay``) at
``optim.lr``.  Forgetting names a recipe (:mod:`ImageGeneration.core.optim`): ``native`` is that
optimizer with one state for both objectives, ``dual_native`` (``--dual``) adds an Adam with the
config's betas / eps / amsgrad / weight decay for the forget loss at ``--forget_lr``, the research
code's ``optimizer_f``.  The image-classification recipes get ``--forget_lr`` / ``optim.lr`` as their
forget / retain rates, ``optim.lr`` for both objectives of a one-state recipe, and
``optim.weight_decay`` for their SGD; their AdamW keeps its weight decay of 0.05 and the config's
``beta1``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from common.errors import UsageError
from dualoptim.optim import TwoObjectiveOptimizer, build_optimizer as build_named_optimizer
from dualoptim.recipes import OptimizerChoice, RecipeSettings
from ImageGeneration.core.optim import build_forget_optimizer

#: ``optim.optimizer`` values -> :data:`dualoptim.optim.OPTIMIZERS` names.
CONFIG_OPTIMIZERS = {"Adam": "adam", "SGD": "sgd", "RMSProp": "rmsprop"}
#: The momentum of the config's SGD (the research code's).
SGD_MOMENTUM = 0.9


def adam_choice(config: SimpleNamespace) -> OptimizerChoice:
    """Adam with the config's ``beta1``, ``eps``, ``amsgrad`` and weight decay (the ``--dual`` forget optimizer)."""
    o = config.optim
    return OptimizerChoice("adam", o.weight_decay, {"betas": (o.beta1, 0.999), "eps": o.eps, "amsgrad": o.amsgrad})


def config_choice(config: SimpleNamespace) -> OptimizerChoice:
    """The ``optim:`` section's optimizer."""
    o = config.optim
    if o.optimizer not in CONFIG_OPTIMIZERS:
        raise UsageError(f"--config: optim.optimizer {o.optimizer!r} is not one of {', '.join(CONFIG_OPTIMIZERS)}")
    if o.optimizer == "Adam":
        return adam_choice(config)
    return OptimizerChoice(CONFIG_OPTIMIZERS[o.optimizer], o.weight_decay)


def build_optimizer(config: SimpleNamespace, params, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """The ``optim:`` section's optimizer at ``lr`` (default ``optim.lr``)."""
    choice = config_choice(config)
    return build_named_optimizer(choice.name, params, config.optim.lr if lr is None else lr, choice.weight_decay,
                                 SGD_MOMENTUM, **choice.kwargs)


def recipe_settings(config: SimpleNamespace, forget_lr: float) -> RecipeSettings:
    """What the recipes read of a DDPM run (see the module docstring)."""
    o = config.optim
    return RecipeSettings(forget_lr=forget_lr, retain_lr=o.lr, shared_lrs=(o.lr, o.lr), momentum=SGD_MOMENTUM,
                          weight_decay=o.weight_decay, adam_betas=(o.beta1, 0.999),
                          native_forget=adam_choice(config), native_retain=config_choice(config))


def build_unlearn_optimizer(config: SimpleNamespace, model: torch.nn.Module, recipe: str,
                            forget_lr: float) -> TwoObjectiveOptimizer:
    """The forgetting optimizer of ``--optim recipe`` (``native``: the config's; ``dual_native``: ``--dual``)."""
    return build_forget_optimizer(recipe, model.parameters(), recipe_settings(config, forget_lr))
