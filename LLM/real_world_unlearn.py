"""Real-world unlearning: forget facts about real people from an instruction-tuned LLM.

    python LLM/real_world_unlearn.py --config LLM/config/real_world.yaml --data_path data/real_world \\
        --forget_loss ME+GD --alternate --optim_cfg dual_adam --forget_lr 1e-5 --lr 5e-6

The forget set is ``<data_path>/<split>.json`` (default ``forget``) and the
retain set the neighbouring knowledge ``<data_path>/<retain>.json`` (default
``neighbor``), both rows of ``question``/``answer``.  Losses, optimizers and
the joint or alternating schedule are those of ``main_forget.py``.  As the
original, a joint run takes ``num_epochs * len(forget) // (batch * accumulation
* processes)`` optimizer steps, and a folder that already holds
``checkpoint-last`` is skipped unless ``--overwrite_dir`` is given; ``--resume``
continues an interrupted run from its snapshot.  Outputs:
``<save_dir>/checkpoint-last/`` and ``<save_dir>/run.json``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from common.errors import ArgumentParser, cli_main
from common.io import check_writable_dir
from LLM.data import TofuSource, load_idk
from LLM.models import check_model_path, load_tokenizer
from LLM.options import parse_with_config
from LLM.trainer import make_accelerator
from LLM.unlearn import UnlearnConfig, add_unlearn_args, needs_idk, unlearn, validate_unlearn_args


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", type=str, default="data/real_world", help="folder of the JSON splits")
    parser.add_argument("--split", type=str, default="forget", help="forget set file name (without .json)")
    parser.add_argument("--retain", type=str, default="neighbor", help="retain (neighbor) set file name")
    parser.add_argument("--save_root", type=str, default="results/real_world")
    parser.add_argument("--save_dir", type=str, default=None, help="default: the original's results pattern")
    parser.add_argument("--overwrite_dir", action="store_true",
                        help="unlearn again even if <save_dir>/checkpoint-last exists")
    add_unlearn_args(parser, lr=5e-6, forget_lr=1e-5, batch_size=4, gradient_accumulation_steps=4,
                     forget_coeff=0.5, max_length=300, overwrite=False)
    return parser


def default_save_dir(args: argparse.Namespace) -> str:
    """The original's pattern, without the TOFU-only task id and reference-model parts."""
    return os.path.join(
        args.save_root, args.model_family, args.split, args.forget_loss,
        f"epoch{args.num_epochs}_lr_{args.forget_lr}_{args.lr}_freq_{args.forget_freq}_{args.retain_freq}"
        f"_mask{args.mask}_{args.forget_coeff}_{args.regularization_coeff}")


def joint_max_steps(num_forget: int, args: argparse.Namespace, world_size: int) -> int:
    """The original's step count for joint runs: all epochs' forget rows over one step's samples."""
    per_step = args.batch_size * args.gradient_accumulation_steps * world_size
    return max(1, args.num_epochs * num_forget // per_step)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> Optional[dict]:
    args = parse_with_config(build_parser(), argv)
    loss = validate_unlearn_args(args)
    if args.save_dir is None:
        args.save_dir = default_save_dir(args)
    source = TofuSource(args.data_path)
    forget_rows, retain_rows = source.load(args.split), source.load(args.retain)
    idk_answers = None
    if needs_idk(loss):
        idk_answers = load_idk(args.idk_path or os.path.join(args.data_path, "idontknow.jsonl"))
    check_model_path(args.model_path)
    load_tokenizer(args.model_path)
    save_dir = Path(args.save_dir)
    if (save_dir / "checkpoint-last").is_dir() and not args.overwrite_dir:
        print(f"Task already unlearned: {save_dir / 'checkpoint-last'} exists (--overwrite_dir to redo)")
        return None
    accelerator = make_accelerator(args.device, args.gpu)
    check_writable_dir(save_dir)
    max_steps = None if args.alternate else joint_max_steps(len(forget_rows), args, accelerator.num_processes)
    config = UnlearnConfig.from_args(args, accelerator.device)
    metrics = unlearn(config, accelerator, loss, forget_rows, retain_rows, args.model_path, args.model_path,
                      save_dir, idk_answers, max_steps=max_steps, desc=f"unlearn {args.split}")
    if accelerator.is_main_process:
        print(f"unlearned {args.split} ({metrics['num_forget']} rows) with {args.forget_loss} / {args.optim_cfg}: "
              f"final loss {metrics['final_loss']:.4f} -> {save_dir / 'checkpoint-last'}")
    return metrics


if __name__ == "__main__":
    main()
