"""Joint-loss unlearning Trainers written in open-unlearning's shape (its code is not copied), DualOptim added
with one class line each, and the reference they must equal: two independent ``torch.optim.AdamW``.

* :class:`GradDiffLike` -- NLL ascent on the forget set plus NLL on the retain set,
  ``gamma * forget_loss + alpha * retain_loss``, and a ``compute_loss`` without ``num_items_in_batch``;
* :class:`NPOLike` -- the same with NPO's forget term against a frozen copy of the start model.

Every batch holds both sets, ``{"forget": {...}, "retain": {...}}``.

    accelerate launch --cpu --num_processes 1 tests/LLM/joint_trainers.py MODEL TOFU_DIR OUT.pt

saves the weights :class:`DualGradDiff` ends with (the test runs this under a one-process launch).
"""
import copy
import sys
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments,
                          get_linear_schedule_with_warmup)

from dualoptim.hf import DualOptimJointTrainerMixin
from LLM.data import PromptTemplate, UnlearnDataset, collate_unlearn, read_rows
from LLM.losses import npo_loss, sequence_nll
from LLM.models import decay_parameter_groups
from LLM.schedule import BatchStream

STEPS, ACCUMULATION, BATCH, WARMUP = 3, 2, 2, 1
LR, FORGET_LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-3, 3e-3, 0.01, 1.0
GAMMA, ALPHA, BETA = 1.5, 0.5, 0.5
TEMPLATE = PromptTemplate("Question: ", "\n", "Answer: ")


def joint_stream(model_path, tofu_dir, batch_size: int = BATCH, seed: int = 0) -> BatchStream:
    """Micro-batches of TOFU rows, each ``{"forget": {...}, "retain": {...}}`` (the project's joint stream)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    forget = read_rows(Path(tofu_dir) / "forget01.json", "forget01.json")
    retain = read_rows(Path(tofu_dir) / "retain90.json", "retain90.json")
    dataset = UnlearnDataset(forget, tokenizer, TEMPLATE, 32, kinds=("forget", "retain"), retain_rows=retain)
    return BatchStream(dataset, batch_size, lambda items: collate_unlearn(items, tokenizer.pad_token_id), seed)


def joint_batches(model_path, tofu_dir, count: int, batch_size: int = BATCH, seed: int = 0):
    """The first ``count`` micro-batches of :func:`joint_stream`."""
    stream = joint_stream(model_path, tofu_dir, batch_size, seed)
    return [next(stream) for _ in range(count)]


def nll_ascent(model, inputs) -> torch.Tensor:
    return -model(**inputs).loss


def nll(model, inputs) -> torch.Tensor:
    return model(**inputs).loss


def npo_term(model, ref_model, inputs, beta: float) -> torch.Tensor:
    with torch.no_grad():
        ref = sequence_nll(ref_model(**inputs).logits, inputs["labels"])
    return npo_loss(sequence_nll(model(**inputs).logits, inputs["labels"]), ref, beta)


class GradDiffLike(Trainer):
    """Gradient difference as open-unlearning's trainers are written: one joint loss per batch."""

    def __init__(self, *args, gamma: float = 1.0, alpha: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma, self.alpha = gamma, alpha

    def compute_loss(self, model, inputs, return_outputs=False):
        forget_loss = nll_ascent(model, inputs["forget"])
        retain_loss = nll(model, inputs["retain"])
        loss = self.gamma * forget_loss + self.alpha * retain_loss
        return (loss, None) if return_outputs else loss


class NPOLike(GradDiffLike):
    """NPO's forget term against a frozen copy of the start model, plus the retain NLL."""

    def __init__(self, *args, beta: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = beta
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False):
        forget_loss = npo_term(model, self.ref_model, inputs["forget"], self.beta)
        retain_loss = nll(model, inputs["retain"])
        loss = self.gamma * forget_loss + self.alpha * retain_loss
        return (loss, None) if return_outputs else loss


class DualGradDiff(DualOptimJointTrainerMixin, GradDiffLike):
    pass


class DualNPO(DualOptimJointTrainerMixin, NPOLike):
    pass


class MicroBatches(IterableDataset):
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def training_args(out_dir, steps: int = STEPS, accumulation: int = ACCUMULATION, **overrides) -> TrainingArguments:
    settings = dict(output_dir=str(out_dir), per_device_train_batch_size=1, max_steps=steps,
                    gradient_accumulation_steps=accumulation, learning_rate=LR, weight_decay=WEIGHT_DECAY,
                    warmup_steps=WARMUP, lr_scheduler_type="linear", max_grad_norm=MAX_GRAD_NORM, report_to=[],
                    save_strategy="no", use_cpu=True, remove_unused_columns=False, logging_steps=1,
                    dataloader_num_workers=0, disable_tqdm=True)
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(trainer_class, model_path, batches, out_dir, steps: int = STEPS, accumulation: int = ACCUMULATION,
                 forget_lr=FORGET_LR, gamma=GAMMA, alpha=ALPHA, **overrides):
    extra = {"beta": BETA} if issubclass(trainer_class, NPOLike) else {}
    if forget_lr is not None:
        extra["forget_lr"] = forget_lr
    return trainer_class(model=AutoModelForCausalLM.from_pretrained(model_path),
                         args=training_args(out_dir, steps, accumulation, **overrides),
                         train_dataset=MicroBatches(batches), data_collator=lambda items: items[0],
                         gamma=gamma, alpha=alpha, **extra)


def two_adamw(model_path, batches, npo: bool = False, steps: int = STEPS, accumulation: int = ACCUMULATION,
              gamma: float = GAMMA, alpha: float = ALPHA, forget_lr: float = FORGET_LR):
    """The reference: two independent ``torch.optim.AdamW`` over the Trainer's weight-decay groups, the forget one
    at ``forget_lr`` on ``gamma * L_forget``, the retain one at ``LR`` on ``alpha * L_retain``, each under the
    Trainer's linear schedule. A step takes both gradients at the same weights (each micro-batch's term divided
    by the accumulation count), clips each to ``MAX_GRAD_NORM``, then steps the forget optimizer and the retain
    one, in that order."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {"forget": torch.optim.AdamW(decay_parameter_groups(model, WEIGHT_DECAY), lr=forget_lr),
                  "retain": torch.optim.AdamW(decay_parameter_groups(model, WEIGHT_DECAY), lr=LR)}
    schedulers = [get_linear_schedule_with_warmup(o, WARMUP, steps) for o in optimizers.values()]
    for step in range(steps):
        grads = {"forget": [torch.zeros_like(p) for p in params], "retain": [torch.zeros_like(p) for p in params]}
        for batch in batches[step * accumulation:(step + 1) * accumulation]:
            forget = (npo_term(model, ref_model, batch["forget"], BETA) if npo else nll_ascent(model, batch["forget"]))
            terms = {"forget": gamma * forget, "retain": alpha * nll(model, batch["retain"])}
            for objective, term in terms.items():
                for total, grad in zip(grads[objective], torch.autograd.grad(term / accumulation, params)):
                    total += grad
        for objective, optimizer in optimizers.items():
            for p, grad in zip(params, grads[objective]):
                p.grad = grad
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return model.state_dict()


if __name__ == "__main__":
    model_path, tofu_dir, out = sys.argv[1:4]
    trainer = make_trainer(DualGradDiff, model_path, joint_batches(model_path, tofu_dir, STEPS * ACCUMULATION),
                           Path(out).parent / "trainer")
    trainer.train()
    torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, out)
