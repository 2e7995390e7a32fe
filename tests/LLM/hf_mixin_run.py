"""Unlearning with ``DualOptimTrainerMixin`` in a Hugging Face Trainer, and the same steps with the project's
own LLM loop (``LLM.trainer.run_schedule``), on the same micro-batches in the same order.

    accelerate launch --cpu --num_processes 1 tests/LLM/hf_mixin_run.py MODEL TOFU_DIR OUT.pt

saves the weights the mixin's Trainer ends with (the test runs this under a one-process launch).
"""
import sys
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from dualoptim import DualOptimTrainerMixin
from LLM.data import PromptTemplate, UnlearnDataset, collate_unlearn, read_rows
from LLM.schedule import BatchStream, Schedule

STEPS, ACCUMULATION, BATCH, WARMUP = 4, 2, 2, 1
LR, FORGET_LR, WEIGHT_DECAY = 1e-3, 3e-3, 0.01
TEMPLATE = PromptTemplate("Question: ", "\n", "Answer: ")


def schedule(model_path, tofu_dir) -> Schedule:
    """Alternating forget/retain steps of ``ACCUMULATION`` micro-batches of ``BATCH`` TOFU rows."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    streams = {}
    for seed, (kind, file) in enumerate((("forget", "forget01.json"), ("retain", "retain90.json"))):
        rows = read_rows(Path(tofu_dir) / file, file)
        dataset = UnlearnDataset(rows, tokenizer, TEMPLATE, 32, kinds=(kind,))
        streams[kind] = BatchStream(dataset, BATCH, lambda items: collate_unlearn(items, tokenizer.pad_token_id), seed)
    return Schedule(streams, STEPS, ACCUMULATION, 1, 1)


def objective_loss(model, objective: str, inputs) -> torch.Tensor:
    """Gradient ascent on the forget batches, descent on the retain ones (the model's mean token NLL)."""
    loss = model(**inputs).loss
    return -loss if objective == "forget" else loss


class TwoLossTrainer(Trainer):
    """An ordinary two-objective Trainer: the loss of a micro-batch depends on its objective."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return objective_loss(model, self.objective, inputs)


class DualTwoLossTrainer(DualOptimTrainerMixin, TwoLossTrainer):
    """The same Trainer stepping DualOptim: the whole change."""


class MicroBatches(IterableDataset):
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def train_with_mixin(model_path, tofu_dir, out_dir) -> DualTwoLossTrainer:
    """The mixin's Trainer over the schedule's micro-batches, each tagged with its step's objective."""
    items = [{**batch[objective], "objective": objective}
             for _, objective, batches in schedule(model_path, tofu_dir) for batch in batches]
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=1, max_steps=STEPS,
                             gradient_accumulation_steps=ACCUMULATION, learning_rate=LR, weight_decay=WEIGHT_DECAY,
                             warmup_steps=WARMUP, lr_scheduler_type="linear", max_grad_norm=1.0, report_to=[],
                             save_strategy="no", use_cpu=True, remove_unused_columns=False, logging_steps=1,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = DualTwoLossTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                                 train_dataset=MicroBatches(items), data_collator=lambda batch: batch[0],
                                 forget_lr=FORGET_LR)
    trainer.train()
    return trainer


if __name__ == "__main__":
    model_path, tofu_dir, out = sys.argv[1:4]
    trained = train_with_mixin(model_path, tofu_dir, Path(out).parent / "trainer")
    torch.save({k: v.detach().cpu() for k, v in trained.model.state_dict().items()}, out)
