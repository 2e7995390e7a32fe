"""DualOptim in a Hugging Face ``transformers.Trainer`` (the base of LLM unlearning frameworks such as
open-unlearning).

:class:`DualOptimTrainerMixin` turns a Trainer subclass that trains on forget and retain batches into
DualOptim's LLM recipe: one :class:`~dualoptim.optimizers.DecoupledAdamW` with AdamW moments per objective,
told before every micro-batch which objective it serves::

    class DualGradDiff(DualOptimTrainerMixin, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = model(**inputs).loss
            return -loss if self.objective == "forget" else loss    # gradient ascent / descent

    trainer = DualGradDiff(model=model, args=TrainingArguments(..., learning_rate=1e-5), forget_lr=1e-5,
                           train_dataset=batches, data_collator=lambda items: items[0])

Every micro-batch carries its objective under ``"objective"`` (``"forget"`` or ``"retain"``; popped before
``compute_loss``, which reads it as ``self.objective``). The micro-batches of one optimizer step must share it:
the data order alternates whole steps (``gradient_accumulation_steps`` forget micro-batches, then as many
retain ones, ...), as the project's own LLM schedule does with ``--alternate``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from transformers import TrainerCallback

from dualoptim.optimizers import OBJECTIVES, DecoupledAdamW, set_objective

__all__ = ["DualOptimTrainerMixin"]


class _EndOfStep(TrainerCallback):
    """Tells the mixin that an optimizer step is done, so the next micro-batch may change the objective."""

    def __init__(self, trainer: "DualOptimTrainerMixin") -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.step_objective = None


class DualOptimTrainerMixin:
    """Make a ``transformers.Trainer`` subclass step DualOptim (list it before the Trainer class).

    * ``create_optimizer`` builds a :class:`~dualoptim.optimizers.DecoupledAdamW` over the Trainer's own
      weight-decay groups with the ``TrainingArguments``' AdamW settings (``learning_rate``, ``adam_beta1/2``,
      ``adam_epsilon``, ``weight_decay``); forget steps run at ``forget_lr`` (default: ``learning_rate``),
      and the Trainer's scheduler scales both rates alike.
    * ``training_step`` takes each micro-batch's objective (:meth:`objective_of`), exposes it as
      ``self.objective`` and sets it on the optimizer; a micro-batch whose objective differs from the one of
      the optimizer step it accumulates into is a ``ValueError``.
    * ``compute_loss`` returns the mean loss of its micro-batch (``loss_is_scaled_for_ga = False``): the
      Trainer divides it by the accumulation count, so a step averages its micro-batches.
    """

    loss_is_scaled_for_ga = False
    objective_key = "objective"

    def __init__(self, *args: Any, forget_lr: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if forget_lr is not None and forget_lr <= 0:
            raise ValueError(f"forget_lr: must be positive, got {forget_lr}")
        self.forget_lr = forget_lr
        self.objective: Optional[str] = None       # of the micro-batch being computed
        self.step_objective: Optional[str] = None  # of the optimizer step being accumulated
        self.add_callback(_EndOfStep(self))

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

    def objective_of(self, inputs: Dict[str, Any]) -> str:
        """The objective of a micro-batch: its ``objective_key`` entry (a string, or one per example, all
        equal), removed from ``inputs``. Override to derive it otherwise."""
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
