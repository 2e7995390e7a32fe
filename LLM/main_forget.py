"""Unlearn TOFU forget tasks from a fine-tuned causal LM (DualOptim and baselines).

    python LLM/main_forget.py --config LLM/config/phi1-5_tofu.yaml --data_path data/tofu \\
        --split forget05 --task_list 1 --forget_loss ME+GD --alternate --optim_cfg dual_adam \\
        --forget_lr 1e-5 --lr 1e-5 --retain_freq 5

Sequential (continual) unlearning: ``--task_list 1,2,3`` gives the order; each
task starts from the previous task's ``checkpoint-last``.  Without
``--task_id`` every task of the list runs in order; with it, only that task
(its predecessors' checkpoints must exist).  Outputs, as the original:
``<save_dir>/<task list joined by ->/unlearn_times_<k>/checkpoint-last/`` and
``run.json`` beside it.  A task whose results exist is refused unless
``--overwrite``; ``--resume`` skips finished tasks and continues an interrupted
one from its resume snapshot.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Sequence

from common.checkpointing import refuse_overwrite
from common.errors import ArgumentParser, UsageError, cli_main
from common.io import check_writable_dir, read_json
from LLM.data import TofuSource, forget_percent, load_idk, load_task_data
from LLM.models import check_model_path, load_tokenizer
from LLM.options import parse_task_list, parse_with_config
from LLM.trainer import make_accelerator
from LLM.unlearn import UnlearnConfig, add_unlearn_args, needs_idk, unlearn, validate_unlearn_args


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", type=str, default="locuslab/TOFU", help="TOFU folder or hub id")
    parser.add_argument("--split", type=str, default="forget05", help="forget01, forget05 or forget10")
    parser.add_argument("--task_list", type=str, default=None,
                        help="order of sequential tasks, e.g. 1,2,3 (default: $TASK_LIST, else --task_id)")
    parser.add_argument("--task_id", type=int, default=None, help="run only this task of --task_list")
    parser.add_argument("--fix_ref_model", action="store_true",
                        help="reference model = --model_path for every task (else the task's start model)")
    parser.add_argument("--save_root", type=str, default="results")
    parser.add_argument("--save_dir", type=str, default=None, help="default: the original's results pattern")
    add_unlearn_args(parser)
    return parser


def default_save_dir(args: argparse.Namespace, first_task: int) -> str:
    """The original's ``save_dir`` pattern."""
    return os.path.join(
        args.save_root, args.model_family, f"{args.split}_task_{first_task}", args.forget_loss,
        f"epoch{args.num_epochs}_lr_{args.forget_lr}_{args.lr}_freq_{args.forget_freq}_{args.retain_freq}"
        f"_FixRef{args.fix_ref_model}_mask{args.mask}_{args.forget_coeff}_{args.regularization_coeff}")


def validate(args: argparse.Namespace) -> List[int]:
    """Check every input before anything is loaded or written; returns the tasks to run."""
    validate_unlearn_args(args)
    forget_percent(args.split)
    task_text = args.task_list or os.environ.get("TASK_LIST") or str(args.task_id or 1)
    task_list = parse_task_list(task_text)
    if args.task_id is not None and args.task_id not in task_list:
        raise UsageError(f"--task_id {args.task_id}: not in --task_list {task_text}")
    args.task_list = ",".join(map(str, task_list))
    if len(task_list) > 1:
        args.save_steps = "last"  # as the original: continual unlearning keeps each task's last model only
    if args.save_dir is None:
        args.save_dir = default_save_dir(args, task_list[0])
    return [args.task_id] if args.task_id is not None else task_list


def task_dir(args: argparse.Namespace, unlearn_times: int) -> Path:
    return Path(args.save_dir) / args.task_list.replace(",", "-") / f"unlearn_times_{unlearn_times}"


#: What a finished task leaves in its folder; ``run.json`` is written last.
FINISHED_FILES = ("checkpoint-last", "run.json")


def unlearn_task(args: argparse.Namespace, config: UnlearnConfig, accelerator, loss, source: TofuSource,
                 task_list: List[int], task_id: int, idk_answers) -> dict:
    """Unlearn one task from the previous task's model and save ``checkpoint-last``; returns the metrics."""
    unlearn_times = task_list.index(task_id) + 1
    model_path = args.model_path if unlearn_times == 1 else str(task_dir(args, unlearn_times - 1) / "checkpoint-last")
    ref_path = args.model_path if args.fix_ref_model else model_path
    forget_rows, retain_rows = load_task_data(source, args.split, task_id, task_list[:unlearn_times])
    return unlearn(config, accelerator, loss, forget_rows, retain_rows, model_path, ref_path,
                   task_dir(args, unlearn_times), idk_answers,
                   desc=f"unlearn task {task_id} ({unlearn_times}/{len(task_list)})",
                   extra_metrics={"task_id": task_id, "unlearn_times": unlearn_times})


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_with_config(build_parser(), argv)
    tasks = validate(args)
    task_list = parse_task_list(args.task_list)
    loss = validate_unlearn_args(args)
    source = TofuSource(args.data_path)
    for task in tasks:  # every task's data must be there before the first one runs
        load_task_data(source, args.split, task, task_list[:task_list.index(task) + 1])
    idk_answers = None
    if needs_idk(loss):
        idk_answers = load_idk(args.idk_path or os.path.join(args.data_path, "idontknow.jsonl"))
    check_model_path(args.model_path)
    load_tokenizer(args.model_path)
    first = task_list.index(tasks[0]) + 1
    if first > 1 and not (task_dir(args, first - 1) / "checkpoint-last").is_dir():
        raise UsageError(f"--task_id {tasks[0]}: the previous task's model "
                         f"{task_dir(args, first - 1) / 'checkpoint-last'} does not exist; run it first")
    times = {task: task_list.index(task) + 1 for task in tasks}
    finished = {task for task in tasks if (task_dir(args, times[task]) / "run.json").is_file()}
    if not args.resume:
        for task in tasks:
            refuse_overwrite(task_dir(args, times[task]), FINISHED_FILES, args.overwrite)
    accelerator = make_accelerator(args.device, args.gpu)
    config = UnlearnConfig.from_args(args, accelerator.device)
    check_writable_dir(args.save_dir)
    results = []
    for task in tasks:
        if args.resume and task in finished:
            if accelerator.is_main_process:
                print(f"task {task} already unlearned in {task_dir(args, times[task])}; skipped (--resume)")
            results.append(read_json(task_dir(args, times[task]) / "run.json", "--resume")["metrics"])
        else:
            results.append(unlearn_task(args, config, accelerator, loss, source, task_list, task, idk_answers))
    if accelerator.is_main_process:
        last = results[-1]
        print(f"unlearned task(s) {','.join(str(r['task_id']) for r in results)} with {args.forget_loss} / "
              f"{args.optim_cfg}: final loss {last['final_loss']:.4f} -> {task_dir(args, last['unlearn_times'])}")
    return results


if __name__ == "__main__":
    main()
