"""What the LLM entry scripts and their real-world twins share: flags, pre-flight checks and start-up.

``main_forget.py`` and ``real_world_unlearn.py`` check the same inputs of an unlearning run
(:func:`unlearn_inputs`) and start it the same way (:func:`start_unlearning`); ``eval.py`` and
``real_world_eval.py`` take the same evaluation flags (:func:`add_eval_args`), check and load the evaluated
model, the judges and the output folder the same way (:func:`start_eval`, :func:`load_eval_model`) and
print the same summary line (:func:`summary_line`).  Each ``start_*`` function makes the output folder
last: a bad input fails before anything is written.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Tuple

from common.io import check_writable_dir
from common.seed import add_seed_args, seed_everything
from LLM.data import load_idk
from LLM.judges import Judges, add_judge_args, load_judges
from LLM.losses import UnlearnLoss
from LLM.models import add_dtype_arg, check_model_path, load_causal_lm, load_tokenizer, resolve_precision
from LLM.options import template_from_args
from LLM.trainer import check_launch_precision, make_accelerator
from LLM.unlearn import UnlearnConfig, needs_idk

__all__ = ["SUMMARY_KEYS", "add_eval_args", "load_eval_model", "start_eval", "start_unlearning", "summary_line",
           "unlearn_inputs"]

#: The summaries the evaluation scripts print, under the original's names, when present (a real-world run
#: has no forget quality).
SUMMARY_KEYS = ("Untargeted Forget Efficacy", "Targeted Forget Efficacy", "Model Utility", "TOFU Model Utility",
                "Forget Quality", "Forget ROUGE", "Retain ROUGE")


def unlearn_inputs(args: argparse.Namespace, loss: UnlearnLoss) -> Optional[List[str]]:
    """Check the inputs every unlearning run reads besides its data: the refusal answers of an IDK loss
    (``--idk_path``, default ``<data_path>/idontknow.jsonl``; returned, None for other losses) and the start
    model's folder and tokenizer (``--model_path``)."""
    idk_answers = None
    if needs_idk(loss):
        idk_answers = load_idk(args.idk_path or os.path.join(args.data_path, "idontknow.jsonl"))
    check_model_path(args.model_path)
    load_tokenizer(args.model_path)
    return idk_answers


def start_unlearning(args: argparse.Namespace, save_dir: Path):
    """The accelerator and the run's frozen :class:`~LLM.unlearn.UnlearnConfig` (precision resolved for the
    accelerator's device), then a check that ``save_dir`` can be written (the first write creates it);
    returns ``(accelerator, config)``."""
    accelerator = make_accelerator(args.device, args.gpu)
    config = UnlearnConfig.from_args(args, accelerator.device)
    check_launch_precision(accelerator, config.dtype)
    check_writable_dir(save_dir)
    return accelerator, config


def add_eval_args(parser: argparse.ArgumentParser, seed: int) -> None:
    """The evaluation scripts' ``--idk_path``, judge models, ``--dtype`` and ``--seed`` (default ``seed``)."""
    parser.add_argument("--idk_path", type=str, default=None,
                        help="refusal answers of the IDK scores (default: <data_path>/idontknow.jsonl if present)")
    add_judge_args(parser)
    add_dtype_arg(parser)
    add_seed_args(parser, default=seed)


def start_eval(args: argparse.Namespace, model_path: str, save_dir: Path, model_flag: str = "--model_path",
               save_flag: str = "--save_dir") -> Tuple[object, object, Judges]:
    """Check the evaluated model (``model_flag`` names it in errors) and its tokenizer, build the
    accelerator, resolve the precision (``--dtype``), load the judges, check that ``save_dir`` can be written and seed
    the run; returns ``(accelerator, tokenizer, judges)``."""
    check_model_path(model_path, model_flag)
    tokenizer = load_tokenizer(model_path)
    accelerator = make_accelerator(args.device, args.gpu)
    resolve_precision(args, accelerator.device)
    judges = load_judges(args.embedding_model, args.nli_model, accelerator.device)
    check_writable_dir(save_dir, save_flag)
    seed_everything(args.seed, args.deterministic)
    return accelerator, tokenizer, judges


def load_eval_model(args: argparse.Namespace, model_path: str, device):
    """The evaluated model on ``device`` in eval mode, generating with its key/value cache; and the
    chat template of ``--model_family``.  Returns ``(model, template)``."""
    model = load_causal_lm(model_path, args.dtype, attn_implementation=args.attn_implementation)
    model = model.to(device).eval()
    model.config.use_cache = True
    return model, template_from_args(args)


def summary_line(summary: dict) -> str:
    """The :data:`SUMMARY_KEYS` present, with four decimals (the original's eval.py prints the first three)."""
    return " | ".join(f"{key} {summary[key]:.4f}" for key in SUMMARY_KEYS if key in summary)
