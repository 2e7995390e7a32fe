"""Fine-tune a causal LM on TOFU question/answer pairs (the "original" and "retain" models).

    python LLM/main_train.py --model_family phi1.5 --data_path data/tofu --split full --save_dir ft/phi
    python LLM/main_train.py --model_family phi1.5 --data_path data/tofu --split retain90 --save_dir ft/phi_retain90

``--split full`` trains on all 4,000 pairs (``full.json`` if the folder has
it, else ``forget01`` plus its retain split); a retain split trains the
reference model that forget quality compares against.  The loss is the
answer tokens' negative log-likelihood under the family's prompt template.
A folder that holds a trained model is refused unless ``--overwrite``; a resume
snapshot is written every ``--save_every`` steps (default: every epoch) and
``--resume`` continues from it (and skips a finished run).
"""
from __future__ import annotations

import argparse
import math
from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence

from common.checkpointing import Snapshotter, add_resume_args, refuse_overwrite
from common.device import add_device_args
from common.errors import ArgumentParser, cli_main, non_negative_float, positive_float, positive_int
from common.io import add_trust_args, check_writable_dir, read_json, write_run_record
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args, tracking
from common.seed import add_seed_args, seed_everything
from LLM.data import UnlearnDataset, TofuSource, collate_unlearn, retain_split_name
from LLM.losses import REGULARIZERS
from LLM.models import (add_weight_args, apply_lora, check_model_path, load_causal_lm, load_tokenizer,
                        resolve_precision, trained_weights_dtype)
from LLM.options import add_model_args, parse_with_config, template_from_args
from LLM.schedule import RETAIN, TRAIN, BatchStream, Schedule
from LLM.trainer import (build_optimizer, build_scheduler, check_launch_precision, make_accelerator,
                         prepare_for_training, run_schedule, save_model, schedule_snapshots, training_precision)

#: What a finished fine-tuning leaves in ``--save_dir`` (``run.json`` last).
FINISHED_FILES = ("config.json", "run.json")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--data_path", type=str, default="locuslab/TOFU", help="TOFU folder or hub id")
    parser.add_argument("--split", type=str, default="full", help="full, or a split name such as retain90")
    parser.add_argument("--lr", type=positive_float, default=1e-5)
    parser.add_argument("--num_epochs", type=positive_int, default=5)
    parser.add_argument("--batch_size", type=positive_int, default=16, help="per-process micro-batch size")
    parser.add_argument("--gradient_accumulation_steps", type=positive_int, default=4)
    parser.add_argument("--weight_decay", type=non_negative_float, default=0.01)
    parser.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="0: no clipping")
    parser.add_argument("--max_length", type=positive_int, default=500)
    add_weight_args(parser)
    add_seed_args(parser, default=42)
    parser.add_argument("--save_dir", type=str, required=True, help="folder for the fine-tuned model and run.json")
    add_resume_args(parser, save_every="0: at the end of every epoch")
    add_device_args(parser)
    add_trust_args(parser)
    add_nonfinite_args(parser)
    add_report_args(parser)
    return parser


def load_training_rows(source: TofuSource, split: str) -> List[dict]:
    """Rows of ``split``; ``full`` falls back to forget01 + its retain split without duplicates."""
    if split != "full" or source.has("full"):
        return source.load(split)
    forget = source.load("forget01")
    retain = source.load(retain_split_name("forget01", any("task_id" in row for row in forget)))
    seen, rows = set(), []
    for row in forget + retain:
        key = (row["question"], row["answer"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_with_config(build_parser(), argv)
    resumable = args.resume and Snapshotter(args.save_dir).exists()
    if args.resume and not resumable and (Path(args.save_dir) / "run.json").is_file():
        print(f"{args.save_dir} already holds a fine-tuned model; skipped (--resume)")
        return read_json(Path(args.save_dir) / "run.json", "--resume")["metrics"]
    if not resumable:
        refuse_overwrite(args.save_dir, FINISHED_FILES, args.overwrite)
    rows = load_training_rows(TofuSource(args.data_path), args.split)
    check_model_path(args.model_path)
    tokenizer = load_tokenizer(args.model_path)
    accelerator = make_accelerator(args.device, args.gpu)
    resolve_precision(args, accelerator.device)
    check_launch_precision(accelerator, args.dtype)
    check_writable_dir(args.save_dir)
    seed_everything(args.seed, args.deterministic)

    model = load_causal_lm(args.model_path, trained_weights_dtype(args.dtype, args.low_precision_weights),
                           attn_implementation=args.attn_implementation)
    if args.use_LoRA:
        model = apply_lora(model, args.LoRA_r, args.LoRA_alpha, args.LoRA_dropout)
    dataset = UnlearnDataset(rows, tokenizer, template_from_args(args), args.max_length, kinds=(RETAIN,))
    world = accelerator.num_processes
    steps_per_epoch = math.ceil(len(dataset) / (args.batch_size * args.gradient_accumulation_steps * world))
    max_steps = args.num_epochs * steps_per_epoch
    stream = BatchStream(dataset, args.batch_size, partial(collate_unlearn, pad_id=tokenizer.pad_token_id),
                         args.seed, accelerator.process_index, world)
    schedule = Schedule({TRAIN: stream}, max_steps, args.gradient_accumulation_steps)

    optimizer = build_optimizer("adam", model, args.lr, args.lr, args.weight_decay)
    scheduler = build_scheduler(optimizer, max_steps, warmup_steps=max(1, max_steps // 10))
    model, optimizer = prepare_for_training(accelerator, model, optimizer, args.batch_size,
                                            args.gradient_accumulation_steps, args.max_grad_norm)
    precision = training_precision(accelerator, args.dtype)
    nll = REGULARIZERS["GD"]
    snapshots = schedule_snapshots(accelerator, Path(args.save_dir), args.resume, vars(args),
                                   args.save_every or steps_per_epoch)
    # save_model replaces the model folder: the tracker writes beside it, to <save_dir>_<report_to>
    log_dir = Path(args.save_dir).parent / f"{Path(args.save_dir).name}_{args.report_to}"
    with tracking(args, log_dir.parent, enabled=accelerator.is_main_process, folder=log_dir.name) as reporter:
        history = run_schedule(accelerator, model, optimizer, scheduler, schedule,
                               lambda objective, batch: nll(model, None, batch, 0.0), args.max_grad_norm,
                               desc="fine-tune", snapshots=snapshots, allow_nonfinite=args.allow_nonfinite,
                               precision=precision)
        reporter.metrics({"final_loss": history[-1]["loss"]})
    save_model(accelerator, model, tokenizer, Path(args.save_dir), args.dtype)  # replaces the folder, snapshot included
    metrics = {"num_rows": len(rows), "max_steps": max_steps, "final_loss": history[-1]["loss"],
               "num_processes": world}
    if accelerator.is_main_process:
        write_run_record(args.save_dir, args, metrics, history=history)
        print(f"fine-tuned on {len(rows)} rows for {max_steps} steps: final loss {metrics['final_loss']:.4f} "
              f"-> {args.save_dir}")
    return metrics


if __name__ == "__main__":
    main()
