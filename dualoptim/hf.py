"""DualOptim in a Hugging Face ``transformers.Trainer`` (the base of LLM unlearning frameworks such as
open-unlearning). Two mixins, by what a batch holds; list one before the Trainer class.

:class:`DualOptimJointTrainerMixin` -- every batch holds both sets and ``compute_loss`` returns one joint loss,
``gamma * forget_loss + alpha * retain_loss`` (open-unlearning's GradDiff, NPO, SimNPO, DPO, RMU, WGA ...)::

    class DualGradDiff(DualOptimJointTrainerMixin, GradDiff):
        pass

    trainer = DualGradDiff(model=model, args=TrainingArguments(..., learning_rate=1e-5), forget_lr=1e-5, ...)

Each optimizer step updates the forget moments from the forget term's gradient only and the retain moments
from the retain term's only (:class:`dualoptim.joint.SplitGradients`: forget update, then retain update, both
from the gradients at the step's starting weights).

:class:`DualOptimTrainerMixin` -- every micro-batch serves one objective and says which under ``"objective"``
(``"forget"`` or ``"retain"``; popped before ``compute_loss``, which reads it as ``self.objective``)::

    class DualTwoLoss(DualOptimTrainerMixin, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = model(**inputs).loss
            return -loss if self.objective == "forget" else loss    # gradient ascent / descent

The micro-batches of one optimizer step must share their objective: the data order alternates whole steps
(``gradient_accumulation_steps`` forget micro-batches, then as many retain ones, ...), as the project's own
LLM schedule does with ``--alternate``.

Both build one :class:`~dualoptim.optimizers.DecoupledAdamW` (AdamW moments per objective) from the
``TrainingArguments``; forget steps run at ``forget_lr``. They refuse, when constructed, a transformers older
than they fit (:data:`MIN_TRANSFORMERS`: 4.46 for ``DualOptimTrainerMixin``, 4.55 for the joint mixin); the suite
runs on 5.25.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import transformers
from packaging.version import Version
import torch
from transformers import TrainerCallback

from dualoptim.errors import UsageError
from dualoptim.joint import SplitGradients
from dualoptim.optimizers import OBJECTIVES, DecoupledAdamW, set_objective

__all__ = ["DualOptimJointTrainerMixin", "DualOptimTrainerMixin", "MIN_TRANSFORMERS", "check_transformers"]

#: The oldest transformers each mixin fits, and why: ``training_step`` gained ``num_items_in_batch`` in 4.46;
#: the joint mixin also reads ``current_gradient_accumulation_steps`` (4.55) and needs ``accelerator.backward``
#: not to divide by the accumulation count (4.46 set accelerate's count and divided there).
MIN_TRANSFORMERS = {"DualOptimTrainerMixin": ("4.46", "Trainer.training_step with num_items_in_batch"),
                    "DualOptimJointTrainerMixin": ("4.55", "Trainer.current_gradient_accumulation_steps")}


def check_transformers(mixin: str, version: str = transformers.__version__) -> None:
    """Refuse, in one line, a transformers release ``mixin`` cannot work with."""
    minimum, needs = MIN_TRANSFORMERS[mixin]
    if Version(version) < Version(minimum):
        raise UsageError(f"{mixin}: needs transformers >= {minimum} ({needs}), found {version}; "
                         f"pip install 'transformers>={minimum}'")


class _DecoupledAdamWTrainer:
    """What both mixins share: ``forget_lr``, the transformers check and the optimizer.

    ``create_optimizer`` builds a :class:`~dualoptim.optimizers.DecoupledAdamW` over the Trainer's own
    weight-decay groups with the ``TrainingArguments``' AdamW settings (``learning_rate``, ``adam_beta1/2``,
    ``adam_epsilon``, ``weight_decay``); forget steps run at ``forget_lr`` (default: ``learning_rate``), and the
    Trainer's scheduler scales both rates alike (the forget rate is a fixed ratio of the scheduled one).
    """

    def __init__(self, *args: Any, forget_lr: Optional[float] = None, **kwargs: Any) -> None:
        check_transformers(self.mixin)
        if forget_lr is not None and forget_lr <= 0:
            raise ValueError(f"forget_lr: must be positive, got {forget_lr}")
        super().__init__(*args, **kwargs)
        self.forget_lr = forget_lr

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for name, p in trainable if name in decay], "weight_decay": self.args.weight_decay},
                      {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0}]
            lr = self.args.learning_rate
            forget_lr = lr if self.forget_lr is None else self.forget_lr
            self.optimizer = DecoupledAdamW(groups, lr=lr, betas=(self.args.adam_beta1, self.args.adam_beta2),
                                            eps=self.args.adam_epsilon, weight_decay=self.args.weight_decay,
                                            forget_lr_ratio=forget_lr / lr)
        return self.optimizer


class _EndOfStep(TrainerCallback):
    """Tells the mixin that an optimizer step is done, so the next micro-batch may change the objective."""

    def __init__(self, trainer: "DualOptimTrainerMixin") -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.step_objective = None


class DualOptimTrainerMixin(_DecoupledAdamWTrainer):
    """Make a ``transformers.Trainer`` subclass whose micro-batches each serve one objective step DualOptim.

    * The optimizer: see :class:`_DecoupledAdamWTrainer`.
    * ``training_step`` takes each micro-batch's objective (:meth:`objective_of`), exposes it as
      ``self.objective`` and sets it on the optimizer; a micro-batch whose objective differs from the one of
      the optimizer step it accumulates into is a ``ValueError``, and so is a joint batch (one holding both a
      ``"forget"`` and a ``"retain"`` set: its loss serves both objectives, :class:`DualOptimJointTrainerMixin`).
    * ``compute_loss`` returns the mean loss of its micro-batch (``loss_is_scaled_for_ga = False``): the
      Trainer divides it by the accumulation count, so a step averages its micro-batches.
    """

    mixin = "DualOptimTrainerMixin"  # its key in MIN_TRANSFORMERS
    loss_is_scaled_for_ga = False
    objective_key = "objective"

    def __init__(self, *args: Any, forget_lr: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, forget_lr=forget_lr, **kwargs)
        self.objective: Optional[str] = None       # of the micro-batch being computed
        self.step_objective: Optional[str] = None  # of the optimizer step being accumulated
        self.add_callback(_EndOfStep(self))

    def objective_of(self, inputs: Dict[str, Any]) -> str:
        """The objective of a micro-batch: its ``objective_key`` entry (a string, or one per example, all
        equal), removed from ``inputs``. Override to derive it otherwise."""
        if all(objective in inputs for objective in OBJECTIVES):
            raise ValueError("DualOptimTrainerMixin: a micro-batch holds both a 'forget' and a 'retain' set, so "
                             "its loss serves both objectives; list DualOptimJointTrainerMixin first instead")
        if self.objective_key not in inputs:
            raise ValueError(f"DualOptimTrainerMixin: a micro-batch has no {self.objective_key!r} entry; each "
                             f"must say which objective it serves ({' or '.join(OBJECTIVES)})")
        value = inputs.pop(self.objective_key)
        values = set(value) if isinstance(value, (list, tuple)) else {value}
        if len(values) != 1 or not values <= set(OBJECTIVES):
            raise ValueError(f"DualOptimTrainerMixin: {self.objective_key!r} must be one of {OBJECTIVES} for the "
                             f"whole micro-batch, got {sorted(map(str, values))}")
        return values.pop()

    def training_step(self, model, inputs, num_items_in_batch=None):
        objective = self.objective_of(inputs)
        if self.step_objective not in (None, objective):
            raise ValueError(f"DualOptimTrainerMixin: optimizer step {self.state.global_step + 1} accumulates "
                             f"{self.step_objective} and {objective} micro-batches; order the data so that each "
                             f"step's {self.args.gradient_accumulation_steps} micro-batches share one objective")
        self.objective = self.step_objective = objective
        set_objective(self.optimizer, objective)
        return super().training_step(model, inputs, num_items_in_batch)


class _Coefficient(float):
    """A loss coefficient (``gamma``, ``alpha``) that records every tensor product it forms.

    ``coefficient * loss`` (the coefficient on the left, as open-unlearning writes its joint losses) returns
    the ordinary product and appends it to ``products``; as a number it is the plain float.
    """

    def __new__(cls, value: float, products: List[Any]) -> "_Coefficient":
        coefficient = super().__new__(cls, value)
        coefficient.products = products
        return coefficient

    def __mul__(self, other: Any) -> Any:
        product = float(self) * other
        if isinstance(product, torch.Tensor):
            self.products.append(product)
        return product


class DualOptimJointTrainerMixin(_DecoupledAdamWTrainer):
    r"""Make a joint-loss ``transformers.Trainer`` subclass step DualOptim: one class line,
    ``class DualGradDiff(DualOptimJointTrainerMixin, GradDiff): pass``, data, collator and configs unchanged.

    The Trainer's ``compute_loss(model, inputs[, return_outputs][, num_items_in_batch])`` returns
    :math:`L = \gamma L_f + \alpha L_r` for a batch holding both sets, with :math:`\gamma` and :math:`\alpha`
    read from the attributes named by ``forget_coefficient`` / ``retain_coefficient`` (default ``gamma`` and
    ``alpha``, open-unlearning's names) and each term a mean over its micro-batch. Every optimizer step
    accumulates :math:`g_f = \nabla(\gamma L_f)` and :math:`g_r = \nabla(\alpha L_r)` apart over the step's
    micro-batches (each divided by their number), clips each to ``max_grad_norm`` on its own, and steps the
    forget moments on :math:`g_f` at ``forget_lr`` then the retain moments on :math:`g_r` at ``learning_rate``
    (both scaled by the Trainer's scheduler). How the two gradients are taken (``gradient_split``):

    * ``"terms"`` (default): ``compute_loss`` runs once with coefficients that record the two products
      ``gamma * forget_loss`` and ``alpha * retain_loss`` (each must be formed once, coefficient on the left,
      and the loss must be their sum: checked every step), then one backward pass per term. Same forward cost
      as the joint loss; single process only.
    * ``"two_pass"``: ``compute_loss`` runs twice, with ``alpha = 0`` (the forget term) and with
      ``gamma = 0`` (the retain term), each followed by its backward pass: about twice the compute, for a loss
      that is linear in the two coefficients but does not form the two products as above.

    ``gamma`` and ``alpha`` still scale the two gradients, but Adam normalises each objective's moments, so
    their effect almost vanishes: ``forget_lr`` and ``learning_rate`` set the balance. Refused at construction:
    DeepSpeed and FSDP (they own the gradients the split swaps), fp16 loss scaling (one scaler cannot unscale
    two gradient sets per step; use bf16), ``"terms"`` with several processes (DDP's reducer expects one
    backward pass per forward); a batch tagged with one ``"objective"`` is refused at its step.
    """

    mixin = "DualOptimJointTrainerMixin"  # its key in MIN_TRANSFORMERS
    forget_coefficient = "gamma"
    retain_coefficient = "alpha"
    gradient_split = "terms"
    objective_key = "objective"

    def __init__(self, *args: Any, forget_lr: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, forget_lr=forget_lr, **kwargs)
        name = type(self).__name__
        for attribute in (self.forget_coefficient, self.retain_coefficient):
            value = getattr(self, attribute, None)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{name}: no number {attribute!r} (found {value!r}); DualOptimJointTrainerMixin "
                                 f"splits {self.forget_coefficient} * forget_loss + {self.retain_coefficient} * "
                                 f"retain_loss: set forget_coefficient / retain_coefficient to your trainer's names")
        if self.gradient_split not in ("terms", "two_pass"):
            raise UsageError(f"{name}.gradient_split: expected 'terms' or 'two_pass', got {self.gradient_split!r}")
        for flag, refused in (("DeepSpeed", self.is_deepspeed_enabled), ("FSDP", self.is_fsdp_enabled),
                              ("fp16", self.args.fp16)):
            if refused:
                raise UsageError(f"{name}: DualOptimJointTrainerMixin does not run under {flag} (it keeps the forget "
                                 f"and retain gradients apart in p.grad); use bf16/fp32 on one process or DDP")
        if self.gradient_split == "terms" and self.args.world_size > 1:
            raise UsageError(f"{name}: gradient_split 'terms' runs on one process (DDP reduces once per forward); "
                             f"set gradient_split = 'two_pass' for {self.args.world_size} processes")
        self._split: Optional[SplitGradients] = None

    @contextmanager
    def _coefficients(self, forget: float, retain: float) -> Iterator[None]:
        """Set the two coefficients for one ``compute_loss`` call."""
        saved = getattr(self, self.forget_coefficient), getattr(self, self.retain_coefficient)
        setattr(self, self.forget_coefficient, forget)
        setattr(self, self.retain_coefficient, retain)
        try:
            yield
        finally:
            setattr(self, self.forget_coefficient, saved[0])
            setattr(self, self.retain_coefficient, saved[1])

    def _joint_loss(self, model, inputs, num_items_in_batch):
        """``compute_loss`` as the Trainer subclass defines it, with ``num_items_in_batch`` only if it takes it."""
        with self.compute_loss_context_manager():
            if "num_items_in_batch" in inspect.signature(self.compute_loss).parameters:
                return self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            return self.compute_loss(model, inputs)

    def _terms(self, model, inputs, num_items_in_batch):
        """One ``compute_loss``: the joint loss and its two products, checked to be the whole loss."""
        products = {objective: [] for objective in OBJECTIVES}
        gamma, alpha = getattr(self, self.forget_coefficient), getattr(self, self.retain_coefficient)
        with self._coefficients(_Coefficient(gamma, products["forget"]), _Coefficient(alpha, products["retain"])):
            loss = self._joint_loss(model, inputs, num_items_in_batch)
        counts = {objective: len(found) for objective, found in products.items()}
        if counts != {"forget": 1, "retain": 1}:
            raise ValueError(f"{type(self).__name__}: compute_loss formed {self.forget_coefficient} * <tensor> "
                             f"{counts['forget']} and {self.retain_coefficient} * <tensor> {counts['retain']} times; "
                             f"gradient_split 'terms' needs each once, coefficient first; set gradient_split = "
                             f"'two_pass'")
        forget_term, retain_term = products["forget"][0], products["retain"][0]
        if not torch.allclose(loss.detach(), (forget_term + retain_term).detach(), rtol=1e-5, atol=1e-7):
            parts = float((forget_term + retain_term).detach())
            raise ValueError(f"{type(self).__name__}: compute_loss returned {float(loss.detach()):.6g}, not "
                             f"{self.forget_coefficient} * forget + {self.retain_coefficient} * retain = {parts:.6g}; "
                             f"set gradient_split = 'two_pass' if the loss is linear in the two coefficients")
        return loss, forget_term, retain_term

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.objective_key in inputs:
            raise ValueError(f"{type(self).__name__}: a micro-batch tagged with one {self.objective_key!r} serves "
                             f"that objective alone; list DualOptimTrainerMixin first instead")
        model.train()
        inputs = self._prepare_inputs(inputs)
        if self._split is None:
            self._split = SplitGradients(p for group in self.optimizer.param_groups for p in group["params"])
        micro_batches = self.current_gradient_accumulation_steps
        if self.gradient_split == "terms":
            loss, forget_term, retain_term = self._terms(model, inputs, num_items_in_batch)
            # the two terms may share a graph (one forward for both sets): keep it for the second pass
            self._split.backward_forget(
                lambda: self.accelerator.backward(forget_term / micro_batches, retain_graph=True))
            self.accelerator.backward(retain_term / micro_batches)
        else:
            gamma, alpha = getattr(self, self.forget_coefficient), getattr(self, self.retain_coefficient)
            with self._coefficients(gamma, 0.0):
                forget_loss = self._joint_loss(model, inputs, num_items_in_batch)
            self._split.backward_forget(lambda: self.accelerator.backward(forget_loss / micro_batches))
            with self._coefficients(0.0, alpha):
                retain_loss = self._joint_loss(model, inputs, num_items_in_batch)
            self.accelerator.backward(retain_loss / micro_batches)
            loss = forget_loss + retain_loss
        if self.accelerator.sync_gradients:  # the step's last micro-batch: the Trainer steps the retain state next
            self._split.forget_step(self.optimizer, self._clip)
        return loss.detach() / micro_batches

    def _clip(self) -> None:
        """Clip the gradients in ``p.grad`` to ``max_grad_norm`` (0: no clipping), as the Trainer clips the
        retain ones."""
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
