"""What DualOptim costs inside a joint-loss Hugging Face Trainer, and what gamma / alpha still do there.

    python benchmarks/joint_trainer.py [--steps 20] [--hidden_size 64] [--seq_len 64] [--batch_size 4] [--threads 1]

A Trainer shaped like open-unlearning's GradDiff (NLL ascent on the forget set plus NLL on the retain set,
``gamma * forget_loss + alpha * retain_loss``) runs on a random tiny Llama and random tokens, on the CPU:

1. seconds per optimizer step: the plain Trainer (one AdamW on the joint loss), with
   ``DualOptimJointTrainerMixin`` (``gradient_split = "terms"``: one forward, a backward pass per term) and
   with ``gradient_split = "two_pass"`` (``compute_loss`` twice, the other coefficient zeroed);
2. how far ``gamma=5, alpha=0.2`` moves the weights from the ``gamma=alpha=1`` run, as a fraction of that
   run's whole update, with one AdamW and with DualOptim's two moment sets.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import IterableDataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from dualoptim.hf import DualOptimJointTrainerMixin


class GradDiff(Trainer):
    """open-unlearning's shape: a joint batch, one joint loss, ``compute_loss`` without ``num_items_in_batch``."""

    def __init__(self, *args, gamma: float = 1.0, alpha: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma, self.alpha = gamma, alpha

    def compute_loss(self, model, inputs, return_outputs=False):
        loss = self.gamma * -model(**inputs["forget"]).loss + self.alpha * model(**inputs["retain"]).loss
        return (loss, None) if return_outputs else loss


class PlainGradDiff(GradDiff):
    """The baseline: the plain Trainer (>= 4.46) passes ``num_items_in_batch``, which open-unlearning's lacks."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs)


class DualGradDiff(DualOptimJointTrainerMixin, GradDiff):
    pass


class TwoPassDualGradDiff(DualOptimJointTrainerMixin, GradDiff):
    gradient_split = "two_pass"


class Batches(IterableDataset):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


class StepClock(TrainerCallback):
    """Process CPU time from the end of the first ``skip`` steps to the end of training (CPU time, not wall time:
    on a shared machine it still counts only this run's work)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.seconds = skip, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.start = time.process_time()
        if state.global_step == state.max_steps:
            self.seconds = time.process_time() - self.start


def random_batches(count: int, vocab: int, batch_size: int, seq_len: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def part():
        ids = torch.randint(vocab, (batch_size, seq_len), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    return [{"forget": part(), "retain": part()} for _ in range(count)]


def run(trainer_class, model, batches, steps: int, skip: int, out_dir: str, **kwargs):
    """Train ``steps`` steps; returns (seconds per step after the first ``skip``, final weights)."""
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=1, max_steps=steps, learning_rate=1e-3,
                             weight_decay=0.01, max_grad_norm=1.0, report_to=[], save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, logging_strategy="no")
    clock = StepClock(skip)
    trainer = trainer_class(model=model, args=args, train_dataset=Batches(batches),
                            data_collator=lambda items: items[0], callbacks=[clock], **kwargs)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return clock.seconds / (steps - skip), {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def relative_change(a, b, start) -> float:
    """``|a - b| / |b - start|`` over all weights."""
    num = sum(float((a[k] - b[k]).double().square().sum()) for k in start)
    den = sum(float((b[k] - start[k]).double().square().sum()) for k in start)
    return (num / den) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = LlamaConfig(vocab_size=512, hidden_size=args.hidden_size, intermediate_size=2 * args.hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    start = LlamaForCausalLM(config).state_dict()
    batches = random_batches(args.steps, config.vocab_size, args.batch_size, args.seq_len)

    def model():
        fresh = LlamaForCausalLM(config)
        fresh.load_state_dict(start)
        return fresh

    skip = min(3, args.steps - 1)
    weights = {}
    with tempfile.TemporaryDirectory() as out:
        print(f"tiny Llama: hidden {args.hidden_size}, 2 layers, {sum(v.numel() for v in start.values())} weights; "
              f"batch {args.batch_size} x {args.seq_len} tokens per set; {torch.get_num_threads()} threads")
        for name, trainer_class, extra in (("plain Trainer, one AdamW", PlainGradDiff, {}),
                                           ("DualOptim, terms", DualGradDiff, {"forget_lr": 1e-3}),
                                           ("DualOptim, two_pass", TwoPassDualGradDiff, {"forget_lr": 1e-3})):
            seconds, weights[trainer_class] = run(trainer_class, model(), batches, args.steps, skip, out, **extra)
            print(f"{name:28s} {1000 * seconds:8.1f} ms CPU per step")
        for name, trainer_class, extra in (("one AdamW", PlainGradDiff, {}),
                                           ("DualOptim", DualGradDiff, {"forget_lr": 1e-3})):
            _, scaled = run(trainer_class, model(), batches, args.steps, skip, out, gamma=5.0, alpha=0.2, **extra)
            print(f"gamma 5 / alpha 0.2 against 1 / 1, {name:9s}: weights differ by "
                  f"{100 * relative_change(scaled, weights[trainer_class], start):.2f}% of the update")


if __name__ == "__main__":
    main()
