"""The optimizer recipes: what each ``--optim`` (image classification and generation) and ``--optim_cfg`` (LLM)
name builds.

A recipe turns the model's parameters and a :class:`RecipeSettings` into an
object with the :class:`~dualoptim.optim.base.TwoObjectiveOptimizer` interface
(``forget_step`` / ``retain_step`` / ``optimizers`` / ``is_dual``).  Callers
never read the name again: whether a run keeps one state per objective is the
object's ``is_dual``.  Each recipe says which flags accept it (the two
modalities' research code gives ``adam`` and ``sgd`` to both); the LLM takes
the one torch optimizer of a recipe (``optimizers[0]``) and tells it each
step's objective itself.

============== ============================================ ================================================
name           forget objective                              retain objective
============== ============================================ ================================================
``sgd``        SGD(momentum, weight_decay)                   the same optimizer (``shared_lrs``)
``adam``       AdamW(wd 0.05)                                the same optimizer (``shared_lrs``)
``dual``       AdamW(forget_lr, wd 0.05)                     SGD(retain_lr, momentum, weight_decay)
``dual_as``    as ``dual``                                   as ``dual``
``dual_aa``    AdamW(forget_lr, wd 0.05)                     AdamW(retain_lr, wd 0.05)
``dual_sa``    SGD(forget_lr, momentum, weight_decay)        AdamW(retain_lr, wd 0.05)
``dual_ss``    SGD(forget_lr, momentum, weight_decay)        SGD(retain_lr, momentum, weight_decay)
``dual_ls``    Lion(forget_lr, wd 0.01)                      SGD(retain_lr, momentum, weight_decay)
``dual_ll``    Lion(forget_lr, wd 0.01)                      Lion(retain_lr, wd 0.01)
``dual_sl``    SGD(forget_lr, momentum, weight_decay)        Lion(retain_lr, wd 0.01)
``dual_share`` Adam(forget_lr, L2 weight_decay)              SGD(retain_lr, momentum=dampening=0.9), one
                                                             first moment with the forget side
                                                             (:class:`~dualoptim.optim.hybrid.HybridAdamSGD`)
``dual_aa_m``  DecoupledAdamW(wd 0.05): m per objective,     v shared
``dual_aa_v``  DecoupledAdamW(wd 0.05): v per objective,     m shared
``dual_aa_8bit`` DecoupledAdamW8bit(wd 0.05), 8-bit m, v     per objective (bitsandbytes)
``dual_prodigy`` Prodigy(forget_lr, wd 0.05) (prodigyopt)    SGD(retain_lr, momentum, weight_decay)
``dual_sf``    AdamWScheduleFree(forget_lr, wd 0.05)         SGD(retain_lr, momentum, weight_decay)
               (schedulefree)
``dual_prodigy_adam`` Prodigy(forget_lr, wd 0.05)           AdamW(retain_lr, wd 0.05), one torch optimizer
                                                             (:class:`~dualoptim.optim.paired.PairedOptimizer`)
``dual_sf_adam`` AdamWScheduleFree(forget_lr, wd 0.05)       as ``dual_prodigy_adam``
============== ============================================ ================================================

The names from ``dual_sa`` on are the paper's optimizer ablations; as in the
research code only SFR-on accepts them in image classification (``Recipe.ablation``).

Image generation (DDPM and DiT ``--optim``) takes every image-classification
recipe (registering one for ``--optim`` registers it for both) plus two of its
own, the optimizers of the diffusion research code, which the model describes in
``RecipeSettings.native_forget`` / ``native_retain``:

=============== ============================================ ================================================
``native``      the model's optimizer at ``shared_lrs``, one state for both objectives (the default)
``dual_native`` ``native_forget`` at ``forget_lr``             ``native_retain`` at ``retain_lr`` (``--dual``)
=============== ============================================ ================================================
  The LLM's
``--optim_cfg`` names are ``adam``, ``sgd`` (both on the LLM's weight-decay
param groups, at ``--lr`` for every step), ``dual_adam``
(:class:`~dualoptim.optim.decoupled_adamw.DecoupledAdamW`, forget steps at ``--forget_lr``),
``adam_8bit`` and ``dual_adam_8bit`` (bitsandbytes, ``fp32_params`` kept in
32 bits).

``dual_prodigy`` and ``dual_sf`` (``--optim``), ``dual_prodigy_adam`` and ``dual_sf_adam`` (``--optim_cfg``,
forget steps at ``--forget_lr`` times the schedule's factor, as ``dual_adam``'s) are learning-rate-free
forget optimizers (:mod:`dualoptim.optim.lrfree`, optional packages: ``pip install 'dualoptim[lrfree]'``); a recipe that needs an absent package fails with
one line at :func:`get_recipe`, before anything is loaded.  Their forget lr (``--unlearn_lr``) is the
package's own ``lr`` (``--forget_lr`` for the LLM): :data:`LR_FREE_DEFAULT_LR` holds the packages' defaults (Prodigy's 1.0 multiplies its
estimated step size), the one setting meant to need no search.  Measured like the other recipes, their
grid is :data:`LR_FREE_MULTIPLIERS` times that default: three points per decade, as the other recipes'
forget-lr grids, from 0.022x to 46x.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import torch

from dualoptim.optim import (ADAM_WEIGHT_DECAY, DecoupledAdamW, DualOptim, HybridAdamSGD, ObjectiveOptim,
                             PairedOptimizer, Params, SharedOptim, TwoObjectiveOptimizer, build_optimizer)
from dualoptim.optim.base import materialize
from dualoptim.optim.lrfree import import_lrfree_package
from dualoptim.errors import UsageError
from dualoptim.registry import Registry

__all__ = ["GENERATION_FLAG", "IMAGE_FLAG", "LLM_FLAG", "LR_FREE_DEFAULT_LR", "LR_FREE_MULTIPLIERS", "OPTIM_RECIPES",
           "OptimizerChoice", "Recipe", "RecipeSettings", "build_recipe", "get_recipe", "make_unlearn_optimizer",
           "recipe_names"]

#: The flags that name a recipe: image classification's and the LLM's.
IMAGE_FLAG, LLM_FLAG = "--optim", "--optim_cfg"
#: Image generation's ``--optim`` (DDPM and DiT), told apart from image classification's by this key;
#: messages print it as :data:`FLAG_TEXT` says.
GENERATION_FLAG = "image generation --optim"
#: How a flag key reads in a message, where it is not the flag itself.
FLAG_TEXT = {GENERATION_FLAG: "--optim"}

#: The forget lr of each learning-rate-free recipe that needs no search: its package's default ``lr``.
LR_FREE_DEFAULT_LR = {"dual_prodigy": 1.0, "dual_sf": 0.0025, "dual_prodigy_adam": 1.0, "dual_sf_adam": 0.0025}

#: Their forget-lr grid, as multipliers on that default: 10^(k/3) for k = -5..5.
LR_FREE_MULTIPLIERS = tuple(float(f"{10 ** (k / 3):.3g}") for k in range(-5, 6))

#: Weight decay of every Lion optimizer of the research code's ablations (``--weight_decay`` reaches SGD only).
LION_WEIGHT_DECAY = 1e-2


@dataclass(frozen=True)
class OptimizerChoice:
    """One torch optimizer as a model's research code configures it: a
    :data:`~dualoptim.optim.dual.OPTIMIZERS` name, its weight decay and further
    keyword arguments (``betas``, ``eps``, ``amsgrad`` ...); the SGD momentum is
    ``RecipeSettings.momentum``."""

    name: str
    weight_decay: float = 0.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeSettings:
    """The hyperparameters a recipe reads.

    Args:
        forget_lr, retain_lr: learning rates of the forget and retain
            optimizers of a dual recipe.
        shared_lrs: ``(forget, retain)`` learning rates of a single optimizer
            serving both objectives (``sgd``, ``adam``); the first is its base
            lr.  Which they are is the method's choice: the research code's RL
            and SCRUB switch between ``--unlearn_lr`` and ``--retain_lr``, FT
            stays at ``--unlearn_lr``, SFR-on at ``--retain_lr``.
        momentum, weight_decay: of every SGD optimizer (Adam-type and Lion
            optimizers use the research code's fixed weight decays).
        adam_betas: of the single ``adam`` optimizer (SFR-on's research code
            gives it ``(--momentum, 0.999)``; the dual recipes' AdamWs keep
            torch's defaults).
        fp32_params: tensors an 8-bit optimizer keeps in 32 bits.
        native_forget, native_retain: the optimizers of a diffusion model's
            research code, for the ``native`` (retain side only) and
            ``dual_native`` recipes; None where a model has none.
    """

    forget_lr: float
    retain_lr: float
    shared_lrs: Tuple[float, float]
    momentum: float = 0.9
    weight_decay: float = 5e-4
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    fp32_params: Sequence[torch.Tensor] = ()
    native_forget: Optional[OptimizerChoice] = None
    native_retain: Optional[OptimizerChoice] = None


@dataclass(frozen=True)
class Recipe:
    """A registered recipe: its builder, the flags that accept it, whether it is an SFR-on ablation, and the
    learning-rate-free optimizers (:data:`~dualoptim.optim.lrfree.LR_FREE_OPTIMIZERS`) whose optional
    packages it needs."""

    build: Callable[[list, RecipeSettings], TwoObjectiveOptimizer]
    flags: Tuple[str, ...]
    ablation: bool = False
    needs: Tuple[str, ...] = ()


#: Recipe name -> :class:`Recipe`.
OPTIM_RECIPES: Registry[Recipe] = Registry("--optim")


def recipe(*names: str, flags: Tuple[str, ...] = (IMAGE_FLAG,), ablation: bool = False,
           needs: Tuple[str, ...] = ()):
    """Register ``build(params, settings)`` as the recipe(s) ``names``; an image-classification recipe serves
    image generation too."""
    if IMAGE_FLAG in flags:
        flags = (*flags, GENERATION_FLAG)

    def decorator(build):
        OPTIM_RECIPES.register(*names)(Recipe(build, flags, ablation, needs))
        return build
    return decorator


def recipe_names(flag: str) -> list:
    """The names ``flag`` accepts, sorted."""
    return [name for name in OPTIM_RECIPES if flag in OPTIM_RECIPES.get(name).flags]


def get_recipe(flag: str, name: str) -> Recipe:
    """The recipe ``flag name``; a name the flag does not accept, or whose optional package is absent, is a
    one-line ``UsageError``."""
    if name not in OPTIM_RECIPES or flag not in OPTIM_RECIPES.get(name).flags:
        raise UsageError(f"{FLAG_TEXT.get(flag, flag)}: unknown value {name!r}; "
                         f"expected one of {', '.join(recipe_names(flag))}")
    found = OPTIM_RECIPES.get(name)
    for optimizer in found.needs:
        import_lrfree_package(optimizer, f"{FLAG_TEXT.get(flag, flag)} {name}")
    return found


def build_recipe(flag: str, name: str, params: Params, settings: RecipeSettings) -> TwoObjectiveOptimizer:
    """Build the recipe ``flag name`` over ``params``."""
    return get_recipe(flag, name).build(materialize(params), settings)


def is_dual_recipe(flag: str, name: str) -> bool:
    """Whether the recipe ``flag name`` keeps a separate state per objective, asked of the optimizer it
    builds (over one probe scalar), so no caller reads it from the name."""
    probe = torch.zeros(1, requires_grad=True)
    return build_recipe(flag, name, [probe], RecipeSettings(forget_lr=1e-3, retain_lr=1e-3, shared_lrs=(1e-3, 1e-3))).is_dual


def make_unlearn_optimizer(optim: str, params: Params, unlearn_lr: float, retain_lr: float,
                           momentum: float = 0.9, weight_decay: float = 5e-4) -> TwoObjectiveOptimizer:
    """The ``--optim`` optimizer with forget steps at ``unlearn_lr`` and retain steps at ``retain_lr``.

    A single optimizer (``sgd``, ``adam``) switches between the two rates,
    as the research code's RL and SCRUB do.
    """
    settings = RecipeSettings(unlearn_lr, retain_lr, (unlearn_lr, retain_lr), momentum, weight_decay)
    return build_recipe(IMAGE_FLAG, optim, params, settings)


def _weight_decay(name: str, s: RecipeSettings) -> float:
    """The research code's weight decay of a ``name`` optimizer: ``--weight_decay`` reaches SGD only."""
    return {"sgd": s.weight_decay, "lion": LION_WEIGHT_DECAY}.get(name, ADAM_WEIGHT_DECAY)


def _pair(forget: str, retain: str) -> Callable[[list, RecipeSettings], TwoObjectiveOptimizer]:
    """A :class:`DualOptim` recipe: ``forget`` / ``retain`` are names of :func:`build_optimizer`."""
    def build(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
        return DualOptim(params, forget, s.forget_lr, _weight_decay(forget, s),
                         retain, s.retain_lr, s.momentum, _weight_decay(retain, s))
    return build


def _shared(name: str) -> Callable[[list, RecipeSettings], TwoObjectiveOptimizer]:
    """A :class:`SharedOptim` recipe over one ``name`` optimizer at ``shared_lrs``."""
    def build(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
        kwargs = {"betas": s.adam_betas} if name == "adamw" else {}
        optimizer = build_optimizer(name, params, s.shared_lrs[0], _weight_decay(name, s), s.momentum, **kwargs)
        return SharedOptim(optimizer, *s.shared_lrs)
    return build


recipe("sgd", flags=(IMAGE_FLAG, LLM_FLAG))(_shared("sgd"))
recipe("adam", flags=(IMAGE_FLAG, LLM_FLAG))(_shared("adamw"))
recipe("dual", "dual_as")(_pair("adamw", "sgd"))
recipe("dual_aa")(_pair("adamw", "adamw"))
recipe("dual_sa", ablation=True)(_pair("sgd", "adamw"))
recipe("dual_ss", ablation=True)(_pair("sgd", "sgd"))
recipe("dual_ls", ablation=True)(_pair("lion", "sgd"))
recipe("dual_ll", ablation=True)(_pair("lion", "lion"))
recipe("dual_sl", ablation=True)(_pair("sgd", "lion"))
recipe("dual_prodigy", needs=("prodigy",))(_pair("prodigy", "sgd"))
recipe("dual_sf", needs=("adamw_sf",))(_pair("adamw_sf", "sgd"))


def _paired_with_adamw(forget: str) -> Callable[[list, RecipeSettings], TwoObjectiveOptimizer]:
    """A :class:`PairedOptimizer` recipe: the ``forget`` optimizer, AdamW for retain steps (the retain side of
    ``dual_adam``), one torch optimizer scheduled at ``retain_lr``, forget steps at ``forget_lr``."""
    def build(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
        forget_optimizer = build_optimizer(forget, materialize(params), s.forget_lr, ADAM_WEIGHT_DECAY)
        retain_optimizer = build_optimizer("adamw", materialize(params), s.retain_lr, ADAM_WEIGHT_DECAY)
        return ObjectiveOptim(PairedOptimizer(forget_optimizer, retain_optimizer, s.forget_lr / s.retain_lr))
    return build


recipe("dual_prodigy_adam", flags=(LLM_FLAG,), needs=("prodigy",))(_paired_with_adamw("prodigy"))
recipe("dual_sf_adam", flags=(LLM_FLAG,), needs=("adamw_sf",))(_paired_with_adamw("adamw_sf"))


@recipe("dual_share", ablation=True)
def _dual_share(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
    return HybridAdamSGD(params, s.forget_lr, s.retain_lr, weight_decay=s.weight_decay)


def _decoupled(decouple_m: bool, decouple_v: bool) -> Callable[[list, RecipeSettings], TwoObjectiveOptimizer]:
    """A :class:`DecoupledAdamW` recipe (base lr ``retain_lr``, forget steps at ``forget_lr``)."""
    def build(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
        return ObjectiveOptim(DecoupledAdamW(params, lr=s.retain_lr, weight_decay=ADAM_WEIGHT_DECAY,
                                             forget_lr_ratio=s.forget_lr / s.retain_lr,
                                             decouple_m=decouple_m, decouple_v=decouple_v))
    return build


recipe("dual_adam", flags=(LLM_FLAG,))(_decoupled(True, True))
recipe("dual_aa_m", ablation=True)(_decoupled(True, False))
recipe("dual_aa_v", ablation=True)(_decoupled(False, True))


def _native_choices(name: str, s: RecipeSettings) -> Tuple[OptimizerChoice, OptimizerChoice]:
    """``(native_forget, native_retain)``, or a one-line error for a model that names none."""
    if s.native_forget is None or s.native_retain is None:
        raise UsageError(f"--optim {name}: this model has no research-code optimizer to use")
    return s.native_forget, s.native_retain


@recipe("native", flags=(GENERATION_FLAG,))
def _native(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
    """The diffusion research code's optimizer without ``--dual``: ``native_retain``, one state at ``shared_lrs``."""
    retain = _native_choices("native", s)[1]
    optimizer = build_optimizer(retain.name, params, s.shared_lrs[0], retain.weight_decay, s.momentum,
                                **retain.kwargs)
    return SharedOptim(optimizer, *s.shared_lrs)


@recipe("dual_native", flags=(GENERATION_FLAG,))
def _dual_native(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
    """The diffusion research code's ``--dual``: ``native_forget`` at ``forget_lr``, ``native_retain`` at
    ``retain_lr``, one state each."""
    forget, retain = _native_choices("dual_native", s)
    return DualOptim(params, forget.name, s.forget_lr, forget.weight_decay, retain.name, s.retain_lr, s.momentum,
                     retain.weight_decay, dict(forget.kwargs), dict(retain.kwargs))


def import_dualoptim_8bit(flag: str, name: str):
    """``dualoptim.optimizers_8bit``, imported on demand: bitsandbytes is an optional dependency."""
    try:
        return importlib.import_module("dualoptim.optimizers_8bit")
    except ModuleNotFoundError as err:
        if err.name != "bitsandbytes":
            raise
        raise UsageError(f"{flag} {name}: needs the bitsandbytes package (pip install bitsandbytes)") from None


@recipe("adam_8bit", flags=(LLM_FLAG,))
def _adam_8bit(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
    """bitsandbytes' AdamW with 8-bit block-wise states, one for both objectives."""
    optimizer = import_dualoptim_8bit(LLM_FLAG, "adam_8bit").AdamW8bit(
        params, lr=s.shared_lrs[0], weight_decay=ADAM_WEIGHT_DECAY, fp32_params=s.fp32_params)
    return SharedOptim(optimizer, *s.shared_lrs)


def _decoupled_8bit(flag: str, name: str) -> Callable[[list, RecipeSettings], TwoObjectiveOptimizer]:
    """``DecoupledAdamW8bit`` (m and v per objective, base lr ``retain_lr``), as ``flag name``."""
    def build(params: list, s: RecipeSettings) -> TwoObjectiveOptimizer:
        return ObjectiveOptim(import_dualoptim_8bit(flag, name).DecoupledAdamW8bit(
            params, lr=s.retain_lr, weight_decay=ADAM_WEIGHT_DECAY, forget_lr_ratio=s.forget_lr / s.retain_lr,
            fp32_params=s.fp32_params))
    return build


recipe("dual_adam_8bit", flags=(LLM_FLAG,))(_decoupled_8bit(LLM_FLAG, "dual_adam_8bit"))
recipe("dual_aa_8bit", ablation=True)(_decoupled_8bit(IMAGE_FLAG, "dual_aa_8bit"))
