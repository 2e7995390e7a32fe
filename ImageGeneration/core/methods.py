"""The registry of diffusion forgetting methods, shared by the DDPM and the DiT.

A method is one function registered in :data:`METHODS` with its defaults
(:class:`MethodEntry`): given the forgetting flags
(:class:`~ImageGeneration.core.unlearn.ForgetWeights`) and a model's
:class:`ForgetObjectives` (its data streams and diffusion losses), it returns a
:class:`ForgetPlan` -- the forget/remain loss closures, the update schedule and
the gradient masks that :func:`~ImageGeneration.core.unlearn.run_unlearning`
applies.  The entry says what the scripts need to know of a method, so they never
branch on its name:

======= ============ =============== ================ ================== =========
method  loss         --unlearn_loss  --method         config kind        inputs
======= ============ =============== ================ ================== =========
salun   ``rl``       read            --               saliency_unlearn   --
ga      ``ga``       ignored         --               saliency_unlearn   --
rl      ``rl``       ignored         --               saliency_unlearn   --
sfron   ``adaga``    read            ``ron|joint``    sfron              --
sa      ``sa``       ignored         --               sa                 ``sa_fisher``
======= ============ =============== ================ ================== =========

*loss* is the default of ``--unlearn_loss`` (the loss of a method that ignores the
flag, ``sa`` for Selective Amnesia's own noise loss, as the research code records it);
every method applies ``--mask_path`` when given; ``sa_fisher``: the Fisher diagonals
of ``generate_mask.py --mode sa_fim`` and the model's own ``class_samples`` replace the
training data.  The optimizer is not a method's business: :func:`plan_method` switches
every plan to ``alternate`` when the optimizer keeps one state per objective
(``--dual`` or a dual ``--optim``), which needs the two gradients separately.

* ``salun``: ``forget_alpha`` x ``--unlearn_loss`` of the forget data plus the remain term in one
  joint step, the mask on the summed gradient; ``ga`` and ``rl`` are that loop with their loss.
* ``sfron``: ``--method ron`` alternates a masked forget step (alpha cosine-decayed with
  ``--decay_forget_alpha``) and a remain step (masked too for the ``rl`` loss); ``joint`` sums them.
* ``sa``: Selective Amnesia, uniform noise labelled with the forgotten class, joint and masked.

The remain term is ``remain_alpha`` times the diffusion loss of the remain data,
except for Selective Amnesia, whose remain term is the model's own replay loss
with its EWC penalty (:meth:`ForgetObjectives.replay_term`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Tuple

import torch

from common.errors import UsageError
from dualoptim.registry import Registry
from ImageGeneration.core.unlearn import ForgetWeights

LossFn = Callable[[int], torch.Tensor]
#: SFR-on's ``--method`` values: ``ron`` alternates forget and remain steps, ``joint`` sums them.
SFRON_METHODS = ("ron", "joint")


@dataclass
class ForgetPlan:
    """The closures and settings :func:`~ImageGeneration.core.unlearn.run_unlearning` needs."""

    forget_loss: LossFn
    remain_loss: LossFn
    schedule: str
    forget_mask: Callable[[], None]
    remain_mask: Callable[[], None]


class ForgetObjectives:
    """What a model gives the methods: unweighted loss terms of its next batches, its mask and run length.

    ``forget_term(kind)`` draws the next forget batch and returns its forget loss
    ``kind`` (``ga``, ``adaga`` or ``rl``, realised as the model's research code
    does); ``remain_term()`` the diffusion loss of the next remain batch.  Selective
    Amnesia's :meth:`amnesia_batch` (one step's draws), :meth:`noise_term` and
    :meth:`replay_term` (its two terms on those draws) exist only for models that
    implement them.
    """

    n_iters: int
    masker: Callable[[], None]

    def forget_term(self, kind: str) -> torch.Tensor:
        raise NotImplementedError

    def remain_term(self) -> torch.Tensor:
        raise NotImplementedError

    def amnesia_batch(self) -> Any:
        raise UsageError(f"{type(self).__name__}: Selective Amnesia is not available for this model")

    def noise_term(self, batch: Any) -> torch.Tensor:
        raise UsageError(f"{type(self).__name__}: Selective Amnesia is not available for this model")

    def replay_term(self, batch: Any) -> torch.Tensor:
        raise UsageError(f"{type(self).__name__}: Selective Amnesia is not available for this model")


Method = Callable[[ForgetWeights, ForgetObjectives], ForgetPlan]
#: The extra input of Selective Amnesia: its Fisher diagonals and the model's own samples of the other classes.
SA_FISHER = "sa_fisher"
#: The config kinds of the research code's forgetting runs (``<dataset>_<kind>.yml``).
CONFIG_KINDS = ("saliency_unlearn", "sfron", "sa")


@dataclass(frozen=True)
class MethodEntry:
    """A registered method and its defaults (the table of the module docstring).

    Args:
        plan: ``plan(spec, objectives) -> ForgetPlan``.
        loss: the default of ``--unlearn_loss`` (for a method that ignores the flag, the loss it uses).
        reads_loss: whether ``--unlearn_loss`` picks the method's forget loss (a :data:`FORGET_LOSSES` name).
        update_methods: the ``--method`` values it takes (SFR-on's :data:`SFRON_METHODS`); () for none.
            A method that takes them names its run folder ``<method>_<loss>``, as SFR-on's research code.
        config_kind: the research code's config of the method (:data:`CONFIG_KINDS`).
        inputs: extra inputs beyond the training data (:data:`SA_FISHER`).
    """

    plan: Method
    loss: str
    reads_loss: bool = False
    update_methods: Tuple[str, ...] = ()
    config_kind: str = "saliency_unlearn"
    inputs: FrozenSet[str] = frozenset()


METHODS: Registry[MethodEntry] = Registry("--mode")


def register_method(name: str, *, loss: str, reads_loss: bool = False, update_methods: Tuple[str, ...] = (),
                    config_kind: str = "saliency_unlearn", inputs: FrozenSet[str] = frozenset()):
    """Register ``plan(spec, objectives)`` as method ``name`` with its defaults (see :class:`MethodEntry`);
    ``loss`` has no default, so a new method says which loss ``--unlearn_loss`` defaults to."""
    if config_kind not in CONFIG_KINDS:
        raise ValueError(f"config_kind {config_kind!r} is not one of {', '.join(CONFIG_KINDS)}")

    def decorator(plan: Method) -> Method:
        METHODS.register(name)(MethodEntry(plan, loss, reads_loss, update_methods, config_kind, frozenset(inputs)))
        return plan
    return decorator


def no_mask() -> None:
    """The gradient mask of an unmasked step."""


def plan_method(name: str, spec: ForgetWeights, objectives: ForgetObjectives, dual: bool = False) -> ForgetPlan:
    """The plan of method ``name``; ``dual`` (an optimizer with one state per objective, ``is_dual``)
    switches its schedule to ``alternate``."""
    plan = METHODS.get(name).plan(spec, objectives)
    if dual:
        plan.schedule = "alternate"
    return plan


def _remain(spec: ForgetWeights, objectives: ForgetObjectives) -> LossFn:
    return lambda step: spec.remain_alpha * objectives.remain_term()


def _joint_plan(spec: ForgetWeights, objectives: ForgetObjectives, kind: str) -> ForgetPlan:
    """SalUn's loop: ``forget_alpha`` x the ``kind`` loss plus the remain term, the mask on their summed gradient."""
    return ForgetPlan(lambda step: spec.forget_alpha * objectives.forget_term(kind), _remain(spec, objectives),
                      "joint", objectives.masker, objectives.masker)


@register_method("salun", loss="rl", reads_loss=True)
def salun(spec: ForgetWeights, objectives: ForgetObjectives) -> ForgetPlan:
    """SalUn: ``--unlearn_loss`` (default ``rl``) on the forget data, saliency-masked joint steps."""
    return _joint_plan(spec, objectives, spec.unlearn_loss)


@register_method("ga", loss="ga")
def gradient_ascent(spec: ForgetWeights, objectives: ForgetObjectives) -> ForgetPlan:
    """Plain gradient ascent: SalUn's loop with the ``ga`` loss."""
    return _joint_plan(spec, objectives, "ga")


@register_method("rl", loss="rl")
def random_label(spec: ForgetWeights, objectives: ForgetObjectives) -> ForgetPlan:
    """Plain relabelling: SalUn's loop with the ``rl`` loss."""
    return _joint_plan(spec, objectives, "rl")


@register_method("sfron", loss="adaga", reads_loss=True, update_methods=SFRON_METHODS, config_kind="sfron")
def sfron(spec: ForgetWeights, objectives: ForgetObjectives) -> ForgetPlan:
    """SFR-on: ``--method ron`` alternates a masked forget step (alpha cosine-decayed with
    ``--decay_forget_alpha``) and a remain step, masked too for the ``rl`` loss; ``joint`` sums them."""
    def forget_loss(step: int) -> torch.Tensor:
        return spec.forget_weight(step, objectives.n_iters) * objectives.forget_term(spec.unlearn_loss)

    return ForgetPlan(forget_loss, _remain(spec, objectives), "alternate" if spec.method == "ron" else "joint",
                      objectives.masker, objectives.masker if spec.unlearn_loss == "rl" else no_mask)


@register_method("sa", loss="sa", config_kind="sa", inputs={SA_FISHER})
def selective_amnesia(spec: ForgetWeights, objectives: ForgetObjectives) -> ForgetPlan:
    """Selective Amnesia: the diffusion loss of uniform noise labelled with the forgotten class, and the
    replay loss of the model's own samples of the other classes with its EWC penalty (weights from the config).

    Both terms of a step read the same draws (the research code's one set of timesteps, its noise
    batch as large as the replay batch): the forget closure, which every schedule calls first,
    draws them and the remain closure of the same step reads them.
    """
    drawn: Dict[int, Any] = {}

    def noise_loss(step: int) -> torch.Tensor:
        drawn[step] = objectives.amnesia_batch()
        return objectives.noise_term(drawn[step])

    def replay_loss(step: int) -> torch.Tensor:
        return objectives.replay_term(drawn.pop(step))

    return ForgetPlan(noise_loss, replay_loss, "joint", objectives.masker, objectives.masker)
