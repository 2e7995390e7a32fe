"""The forgetting optimizer of every diffusion model: ``--optim``, ``--dual`` and ``--forget_lr``.

``--optim`` names a recipe of :mod:`dualoptim.recipes` (:data:`~dualoptim.recipes.GENERATION_FLAG`):
every image-classification recipe (``sgd``, ``adam``, ``dual``, ``dual_aa``, ``dual_sa``, ``dual_ll``
...) and the research code's own two, ``native`` (the model's optimizer, one state for both
objectives; the default) and ``dual_native`` (a second state for the forget loss at ``--forget_lr``).
``--dual`` is the research code's flag and means ``--optim dual_native``.  Each model says what its
research code's optimizers are in the :class:`~dualoptim.recipes.RecipeSettings` it passes
(``native_forget`` / ``native_retain``); a run whose optimizer keeps one state per objective
alternates its forget and remain steps (:func:`ImageGeneration.core.methods.plan_method`).
"""
from __future__ import annotations

import argparse
from typing import Optional

from common.errors import UsageError, positive_float
from dualoptim.optim import Params, TwoObjectiveOptimizer
from dualoptim.recipes import GENERATION_FLAG, RecipeSettings, build_recipe, get_recipe, recipe_names

#: The recipe of a run without ``--optim`` and ``--dual``, and the one ``--dual`` names.
NATIVE, DUAL_NATIVE = "native", "dual_native"


def add_optim_args(parser: argparse.ArgumentParser) -> None:
    """``--optim``, ``--dual`` and ``--forget_lr``, the same for every model (read by :func:`forget_recipe`)."""
    parser.add_argument("--optim", type=str, default=None,
                        help=f"optimizer recipe: {', '.join(recipe_names(GENERATION_FLAG))} (default {NATIVE}, "
                             f"or {DUAL_NATIVE} with --dual)")
    parser.add_argument("--dual", action="store_true",
                        help=f"DualOptim: separate forget/remain optimizer states (--optim {DUAL_NATIVE})")
    parser.add_argument("--forget_lr", type=positive_float, default=1e-4,
                        help="learning rate of the forget optimizer of a dual recipe")


def forget_recipe(optim: Optional[str], dual: bool) -> str:
    """The recipe ``--optim`` / ``--dual`` name: ``--dual`` is ``dual_native``, neither flag ``native``."""
    if optim is None:
        return DUAL_NATIVE if dual else NATIVE
    get_recipe(GENERATION_FLAG, optim)
    if dual and optim != DUAL_NATIVE:
        raise UsageError(f"--dual: means --optim {DUAL_NATIVE}; it does not go with --optim {optim}")
    return optim


def recipe_tag(recipe: str) -> str:
    """The run-folder tag of ``recipe``: none for ``native``, the research code's ``dual`` for ``dual_native``,
    else the recipe's name."""
    return {NATIVE: "", DUAL_NATIVE: "dual"}.get(recipe, recipe)


def build_forget_optimizer(recipe: str, params: Params, settings: RecipeSettings) -> TwoObjectiveOptimizer:
    """The recipe ``recipe`` over ``params`` with the model's ``settings``."""
    return build_recipe(GENERATION_FLAG, recipe, params, settings)
