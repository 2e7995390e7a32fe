"""Evaluate a (fine-tuned or unlearned) model on TOFU: forget, retain, real-authors and world-facts sets.

    python LLM/eval.py --model_path results/.../unlearn_times_1/checkpoint-last --data_path data/tofu \\
        --split forget05 --task_id 1 --retain_result ft/phi_retain90/eval_results-last

Writes, as the original, ``eval_log.json``, ``eval_real_author_wo_options.json``,
``eval_real_world_wo_options.json``, ``eval_log_forget.json`` (per-question
statistics and generations), ``aggregate_stat.json``/``.txt`` (summary
metrics) and ``run.json`` into ``--save_dir`` (default: ``eval_results-last``
beside the model folder), and prints a one-line summary.  As the original's
``eval_unlearn_step``, ``--unlearn_dir <run>/<tasks>/unlearn_times_<k> --eval_unlearn_step N``
evaluates the run's ``checkpoint-N`` (saved by ``main_forget.py --save_steps``)
into ``eval_results-N`` there; step 0 evaluates ``--model_path``.  The original's form
``eval.py --config-name=phi1-5_tofu.yaml task_id=1 eval_unlearn_step=last <the run's key=value>`` finds
that folder from the run's keys, as the original does.  Forget quality
needs ``--retain_result``: the eval folder (or ``eval_log_forget.json``) of
the retain model on the same forget set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from common.device import add_device_args
from common.errors import ArgumentParser, UsageError, cli_main, non_negative_int, positive_int
from common.io import check_writable_dir, read_json, write_run_record
from common.seed import add_seed_args, seed_everything
from LLM.data import TofuSource, filter_task, forget_percent, load_eval_idk
from LLM.eval_logs import EVAL_SETS, SetSpec, evaluate_set, save_eval_outputs, unlearn_checkpoint
from LLM.judges import add_judge_args, load_judges, report_skipped
from LLM.metrics import FORGET_FILE, aggregate
from LLM.models import add_dtype_arg, check_model_path, load_causal_lm, load_tokenizer, resolve_precision
from LLM.options import (HYDRA_KEYS, add_model_args, model_families, parse_task_list, parse_with_config,
                         template_from_args)
from LLM.trainer import make_accelerator

SUMMARY_KEYS = ("Untargeted Forget Efficacy", "Targeted Forget Efficacy", "Model Utility", "TOFU Model Utility",
                "Forget Quality", "Forget ROUGE", "Retain ROUGE")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--data_path", type=str, default="locuslab/TOFU", help="TOFU folder or hub id")
    parser.add_argument("--split", type=str, default="forget05", help="forget01, forget05 or forget10")
    parser.add_argument("--task_id", type=int, default=1, help="forget task to evaluate")
    parser.add_argument("--ds_size", type=non_negative_int, default=300, help="at most this many rows per set (0: all)")
    parser.add_argument("--batch_size", type=positive_int, default=16)
    parser.add_argument("--max_length", type=positive_int, default=None,
                        help="generation length incl. prompt (default: the model family's eval_max_length, "
                             "as the original's eval configs: phi1.5 256, llama 200)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=None)
    parser.add_argument("--retain_result", type=str, default=None,
                        help="retain model's eval folder or eval_log_forget.json (enables forget quality)")
    parser.add_argument("--idk_path", type=str, default=None,
                        help="refusal answers of the IDK scores (default: <data_path>/idontknow.jsonl if present)")
    add_judge_args(parser)
    add_dtype_arg(parser)
    add_seed_args(parser, default=0)
    parser.add_argument("--save_dir", type=str, default=None,
                        help="default: eval_results-<step> in --unlearn_dir, else <model folder>/../eval_results-last")
    parser.add_argument("--unlearn_dir", type=str, default=None,
                        help="a task's unlearning folder (<save_dir>/<tasks>/unlearn_times_<k>): evaluate its "
                             "checkpoint --eval_unlearn_step instead of --model_path")
    parser.add_argument("--eval_unlearn_step", type=str, default="last",
                        help="with --unlearn_dir: last, a step saved with --save_steps, or 0 (--model_path, "
                             "the model before unlearning)")
    add_device_args(parser)
    return parser


def unlearning_keys() -> set:
    """The flags of ``main_forget.py`` that eval.py lacks: the keys of the unlearning run (the original runs
    both scripts with one config file and the same ``key=value`` overrides)."""
    from LLM import main_forget
    return {a.dest for a in main_forget.build_parser()._actions} - {a.dest for a in build_parser()._actions}


def unlearning_run_of(argv: Sequence[str]) -> Optional[List[str]]:
    """The original's form, ``eval.py --config-name=X task_id=1 eval_unlearn_step=last <the run's keys>``
    without ``--unlearn_dir``: as the original's eval.py, find the run from its keys -- the folder
    ``main_forget.py`` writes for them (``$TASK_LIST`` and ``task_id`` pick ``unlearn_times_<k>``) -- and
    return ``argv`` without the run's keys, with ``--unlearn_dir`` (None for the other forms)."""
    if not any(token.startswith("--config-name") for token in argv) or "--unlearn_dir" in argv:
        return None
    from LLM import main_forget
    forget_parser = main_forget.build_parser()
    forget_keys, run_keys = {a.dest for a in forget_parser._actions}, unlearning_keys()

    def key_of(token: str) -> Optional[str]:
        """The flag a ``key=value`` token sets (None for other tokens, which both scripts get)."""
        if "=" not in token or token.startswith("-"):
            return None
        key = token.split("=", 1)[0].lstrip("+")
        return HYDRA_KEYS.get(key, key)

    forget_args = parse_with_config(forget_parser, [t for t in argv if key_of(t) is None or key_of(t) in forget_keys],
                                    foreign_keys={a.dest for a in build_parser()._actions} - forget_keys)
    main_forget.validate(forget_args)
    task_id = int(next((t.split("=", 1)[1] for t in argv if key_of(t) == "task_id"), 1))
    tasks = parse_task_list(forget_args.task_list)
    if task_id not in tasks:
        raise UsageError(f"task_id={task_id}: not in the task list {forget_args.task_list} ($TASK_LIST)")
    unlearn_dir = main_forget.task_dir(forget_args, tasks.index(task_id) + 1)
    return [t for t in argv if key_of(t) not in run_keys] + ["--unlearn_dir", str(unlearn_dir)]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags, ``--max_length`` defaulting to the model family's ``eval_max_length``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_config(build_parser(), unlearning_run_of(argv) or argv, foreign_keys=unlearning_keys())
    if args.max_length is None:
        args.max_length = model_families()[args.model_family]["eval_max_length"]
    return args


def summary_line(summary: dict) -> str:
    """The summaries present, under the original's names (its eval.py prints the first three)."""
    return " | ".join(f"{key} {summary[key]:.4f}" for key in SUMMARY_KEYS if key in summary)


def load_retain_result(path: str) -> dict:
    file = Path(path)
    if file.is_dir():
        file = file / FORGET_FILE
    stats = read_json(file, "--retain_result")
    missing = [key for key in ("avg_paraphrased_loss", "average_perturb_loss") if key not in stats]
    if missing:
        raise UsageError(f"--retain_result {file}: lacks {', '.join(missing)} (not an eval_log_forget.json?)")
    return stats


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    forget_percent(args.split)
    source = TofuSource(args.data_path)
    fields = ("question", "answer", "perturbed_answer")
    idk_answers, idk_file = load_eval_idk(args.idk_path, args.data_path)
    sets = []
    for split, file, base_key, reference_key in EVAL_SETS:
        split = split.format(split=args.split)
        rows = source.load(split, fields + (base_key,))
        if file == FORGET_FILE:
            rows = filter_task(rows, args.task_id)
            if not rows:
                raise UsageError(f"--task_id {args.task_id}: split {split} has no rows of this task")
        forget = file == FORGET_FILE
        spec = SetSpec(base_key, reference_key, generation_premise=forget, idk=idk_answers if forget else None)
        sets.append((split, file, spec, rows[:args.ds_size] if args.ds_size else rows))
    retain_result = load_retain_result(args.retain_result) if args.retain_result else None
    model_path = args.model_path
    if args.unlearn_dir:
        model_path = unlearn_checkpoint(args.unlearn_dir, args.eval_unlearn_step, args.model_path, "--unlearn_dir")
        default_dir = Path(args.unlearn_dir) / f"eval_results-{args.eval_unlearn_step}"
    elif args.eval_unlearn_step != "last":
        raise UsageError(f"--eval_unlearn_step {args.eval_unlearn_step}: needs --unlearn_dir (the run's folder)")
    else:
        default_dir = Path(model_path).parent / "eval_results-last"
    check_model_path(model_path)
    tokenizer = load_tokenizer(model_path)
    save_dir = Path(args.save_dir or default_dir)
    accelerator = make_accelerator(args.device, args.gpu)
    resolve_precision(args, accelerator.device)
    judges = load_judges(args.embedding_model, args.nli_model, accelerator.device)
    check_writable_dir(save_dir)
    seed_everything(args.seed, args.deterministic)

    model = load_causal_lm(model_path, args.dtype, attn_implementation=args.attn_implementation)
    model = model.to(accelerator.device).eval()
    model.config.use_cache = True
    template = template_from_args(args)
    results = {}
    for split, file, spec, rows in sets:
        results[file] = evaluate_set(accelerator, model, tokenizer, template, rows, spec, args.batch_size,
                                     args.max_length, args.max_new_tokens, desc=split, judges=judges)
    summary = aggregate(results, retain_result)
    if accelerator.is_main_process:
        save_eval_outputs(save_dir, results, summary)
        write_run_record(save_dir, args, summary)
        report_skipped(judges, idk_answers, idk_file)
        print(summary_line(summary) + f" -> {save_dir}")
    return summary


if __name__ == "__main__":
    main()
