"""Unlearn TOFU forget tasks from a fine-tuned causal LM (DualOptim and baselines).

    python LLM/main_forget.py --config LLM/config/phi1-5_tofu.yaml --data_path data/tofu \\
        --split forget05 --task_list 1 --forget_loss ME+GD --alternate --optim_cfg dual_adam \\
        --forget_lr 1e-5 --lr 1e-5 --retain_freq 5

Sequential (continual) unlearning: ``--task_list 1,2,3`` gives the order; each
task starts from the previous task's ``checkpoint-last``.  Without
``--task_id`` every task of the list runs in order; with it, only that task
(its predecessors' checkpoints must exist).  Outputs, as the original:
``<save_dir>/<task list joined by ->/unlearn_times_<k>/checkpoint-last/`` and
``run.json`` beside it.
"""
from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from common.device import add_device_args
from common.errors import UsageError, cli_main
from common.io import ensure_writable_dir, write_run_record
from common.seed import seed_everything
from LLM.data import TofuSource, UnlearnDataset, collate_unlearn, forget_percent, load_idk, load_task_data
from LLM.losses import FORGET_LOSSES
from LLM.models import DTYPES, apply_lora, check_model_path, load_causal_lm, load_tokenizer
from LLM.options import add_model_args, parse_task_list, parse_with_config, template_from_args
from LLM.schedule import FORGET, JOINT, RETAIN, BatchStream, Schedule, steps_per_epoch
from LLM.trainer import OPTIMIZERS, build_optimizer, build_scheduler, make_accelerator, run_schedule, save_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--data_path", type=str, default="locuslab/TOFU", help="TOFU folder or hub id")
    parser.add_argument("--idk_path", type=str, default=None,
                        help="refusal answers, one a line (default: <data_path>/idontknow.jsonl)")
    parser.add_argument("--split", type=str, default="forget05", help="forget01, forget05 or forget10")
    parser.add_argument("--task_list", type=str, default=None,
                        help="order of sequential tasks, e.g. 1,2,3 (default: $TASK_LIST, else --task_id)")
    parser.add_argument("--task_id", type=int, default=None, help="run only this task of --task_list")
    parser.add_argument("--forget_loss", type=str, default="ME+GD", help=", ".join(FORGET_LOSSES.names()))
    parser.add_argument("--optim_cfg", type=str, default="adam", help=", ".join(OPTIMIZERS.names()))
    parser.add_argument("--alternate", action="store_true",
                        help="alternate forget and retain steps (--forget_freq, --retain_freq)")
    parser.add_argument("--forget_freq", type=int, default=1, help="forget steps per cycle")
    parser.add_argument("--retain_freq", type=int, default=1, help="retain steps per cycle")
    parser.add_argument("--lr", type=float, default=1e-5, help="(retain) learning rate")
    parser.add_argument("--forget_lr", type=float, default=1e-5, help="forget learning rate of dual_adam")
    parser.add_argument("--num_epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=5, help="per-process micro-batch size")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=4)
    parser.add_argument("--forget_coeff", type=float, default=1.0)
    parser.add_argument("--regularization_coeff", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.1, help="inverse temperature of NPO/DPO/AP")
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mask", action=argparse.BooleanOptionalAction, default=True,
                        help="exclude question tokens from the forget labels")
    parser.add_argument("--fix_ref_model", action="store_true",
                        help="reference model = --model_path for every task (else the task's start model)")
    parser.add_argument("--max_length", type=int, default=500)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--use_LoRA", action="store_true")
    parser.add_argument("--LoRA_r", type=int, default=8)
    parser.add_argument("--LoRA_alpha", type=int, default=32)
    parser.add_argument("--LoRA_dropout", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1001)
    parser.add_argument("--save_root", type=str, default="results")
    parser.add_argument("--save_dir", type=str, default=None, help="default: the original's results pattern")
    add_device_args(parser)
    return parser


def default_save_dir(args: argparse.Namespace, first_task: int) -> str:
    """The original's ``save_dir`` pattern."""
    return os.path.join(
        args.save_root, args.model_family, f"{args.split}_task_{first_task}", args.forget_loss,
        f"epoch{args.num_epochs}_lr_{args.forget_lr}_{args.lr}_freq_{args.forget_freq}_{args.retain_freq}"
        f"_FixRef{args.fix_ref_model}_mask{args.mask}_{args.forget_coeff}_{args.regularization_coeff}")


def validate(args: argparse.Namespace) -> List[int]:
    """Check every input before anything is loaded or written; returns the tasks to run."""
    for flag in ("num_epochs", "batch_size", "gradient_accumulation_steps", "forget_freq", "retain_freq",
                 "max_length"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag}: must be >= 1, got {getattr(args, flag)}")
    loss = FORGET_LOSSES.get(args.forget_loss)
    OPTIMIZERS.get(args.optim_cfg)
    forget_percent(args.split)
    if args.alternate and loss.regularizer is None:
        raise UsageError(f"--alternate: --forget_loss {args.forget_loss} has no retain term; use e.g. "
                         f"{args.forget_loss}+GD")
    if args.optim_cfg.startswith("dual") and not args.alternate:
        raise UsageError(f"--optim_cfg {args.optim_cfg}: needs --alternate (a joint step serves both "
                         f"objectives, so there is no objective to pick an optimizer state for)")
    task_text = args.task_list or os.environ.get("TASK_LIST") or str(args.task_id or 1)
    task_list = parse_task_list(task_text)
    if args.task_id is not None and args.task_id not in task_list:
        raise UsageError(f"--task_id {args.task_id}: not in --task_list {task_text}")
    args.task_list = ",".join(map(str, task_list))
    if args.save_dir is None:
        args.save_dir = default_save_dir(args, task_list[0])
    return [args.task_id] if args.task_id is not None else task_list


def task_dir(args: argparse.Namespace, unlearn_times: int) -> Path:
    return Path(args.save_dir) / args.task_list.replace(",", "-") / f"unlearn_times_{unlearn_times}"


def unlearn_task(args, accelerator, loss, source: TofuSource, task_list: List[int], task_id: int,
                 idk_answers) -> dict:
    """Unlearn one task and save ``checkpoint-last``; returns the run metrics."""
    unlearn_times = task_list.index(task_id) + 1
    out_dir = task_dir(args, unlearn_times)
    model_path = args.model_path if unlearn_times == 1 else str(task_dir(args, unlearn_times - 1) / "checkpoint-last")
    ref_path = args.model_path if args.fix_ref_model else model_path
    forget_rows, retain_rows = load_task_data(source, args.split, task_id, task_list[:unlearn_times])
    seed_everything(args.seed)

    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, args.dtype)
    if args.use_LoRA:
        model = apply_lora(model, args.LoRA_r, args.LoRA_alpha, args.LoRA_dropout)
    ref_model = None
    if loss.needs_ref:
        ref_model = load_causal_lm(ref_path, args.dtype, flag="--model_path (reference)").to(accelerator.device)
        ref_model.eval().requires_grad_(False)

    template, world, rank = template_from_args(args), accelerator.num_processes, accelerator.process_index
    collate = partial(collate_unlearn, pad_id=tokenizer.pad_token_id)
    make = partial(UnlearnDataset, tokenizer=tokenizer, template=template, max_length=args.max_length,
                   idk_answers=idk_answers, mask_question=args.mask)
    if args.alternate:
        forget_set = make(forget_rows, kinds=loss.forget_term.kinds)
        retain_set = make(retain_rows, kinds=loss.regularizer.kinds)
        streams = {FORGET: BatchStream(forget_set, args.batch_size, collate, args.seed, rank, world),
                   RETAIN: BatchStream(retain_set, args.batch_size, collate, args.seed + 1, rank, world)}
        num_retain = len(retain_set)
    else:
        joint_set = make(forget_rows, kinds=loss.kinds, retain_rows=retain_rows)
        streams = {JOINT: BatchStream(joint_set, args.batch_size, collate, args.seed, rank, world)}
        num_retain = len(retain_rows)
    per_epoch = steps_per_epoch(len(forget_rows), num_retain, args.batch_size, args.gradient_accumulation_steps,
                                world, args.alternate, args.forget_freq, args.retain_freq)
    max_steps = args.num_epochs * per_epoch
    schedule = Schedule(streams, max_steps, args.gradient_accumulation_steps, args.forget_freq, args.retain_freq)

    optimizer = build_optimizer(args.optim_cfg, model, args.lr, args.forget_lr, args.weight_decay)
    scheduler = build_scheduler(optimizer, max_steps, warmup_steps=per_epoch if per_epoch > 1 else 0)
    model, optimizer = accelerator.prepare(model, optimizer)

    def step_loss(objective: str, batch) -> torch.Tensor:
        if objective == FORGET:
            return args.forget_coeff * loss.forget(model, ref_model, batch, args.beta)
        if objective == RETAIN:
            return args.regularization_coeff * loss.regularization(model, ref_model, batch, args.beta)
        return loss.joint(model, ref_model, batch, args.beta, args.forget_coeff, args.regularization_coeff)

    if accelerator.is_main_process:
        print(f"######### Unlearn task {task_id} ({unlearn_times}/{len(task_list)}) -> {out_dir}; "
              f"max steps {max_steps}")
    history = run_schedule(accelerator, model, optimizer, scheduler, schedule, step_loss, args.max_grad_norm,
                           desc=f"unlearn task {task_id}")
    save_model(accelerator, model, tokenizer, out_dir / "checkpoint-last")
    metrics = {"task_id": task_id, "unlearn_times": unlearn_times, "num_forget": len(forget_rows),
               "num_retain": len(retain_rows), "max_steps": max_steps, "steps_per_epoch": per_epoch,
               "num_processes": world, "final_loss": history[-1]["loss"] if history else None,
               "model_path": model_path, "ref_model_path": ref_path if loss.needs_ref else None}
    if accelerator.is_main_process:
        write_run_record(out_dir, args, metrics, history=history)
    accelerator.free_memory()
    return metrics


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_with_config(build_parser(), argv)
    tasks = validate(args)
    task_list = parse_task_list(args.task_list)
    loss = FORGET_LOSSES.get(args.forget_loss)
    source = TofuSource(args.data_path)
    for task in tasks:  # every task's data must be there before the first one runs
        load_task_data(source, args.split, task, task_list[:task_list.index(task) + 1])
    needs_idk = any(kind.endswith("_idk") for kind in loss.kinds)
    idk_answers = None
    if needs_idk:
        idk_answers = load_idk(args.idk_path or os.path.join(args.data_path, "idontknow.jsonl"))
    check_model_path(args.model_path)
    load_tokenizer(args.model_path)
    first = task_list.index(tasks[0]) + 1
    if first > 1 and not (task_dir(args, first - 1) / "checkpoint-last").is_dir():
        raise UsageError(f"--task_id {tasks[0]}: the previous task's model "
                         f"{task_dir(args, first - 1) / 'checkpoint-last'} does not exist; run it first")
    accelerator = make_accelerator(args.device, args.gpu)
    ensure_writable_dir(args.save_dir)
    results = [unlearn_task(args, accelerator, loss, source, task_list, task, idk_answers) for task in tasks]
    if accelerator.is_main_process:
        last = results[-1]
        print(f"unlearned task(s) {','.join(str(r['task_id']) for r in results)} with {args.forget_loss} / "
              f"{args.optim_cfg}: final loss {last['final_loss']:.4f} -> {task_dir(args, last['unlearn_times'])}")
    return results


if __name__ == "__main__":
    main()
