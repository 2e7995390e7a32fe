"""Evaluate a real-world unlearning run on its forget and neighbor sets (and, optionally, downstream tasks).

    python LLM/real_world_eval.py --config LLM/config/real_world.yaml --data_path data/real_world \\
        --save_dir results/real_world/.../ME+GD/epoch5_... --eval_unlearn_step last

The model is ``<save_dir>/checkpoint-<eval_unlearn_step>`` (``0``: the
``--model_path`` model before unlearning).  ``<retain>_perturbed.json`` and
``<split>_perturbed.json`` give, per question, the ground truth
(``--answer_key``, default ``golden_answer``), the answer the truth ratio
starts from (``--base_answer_key``) and perturbed answers
(``--perturbed_answer_key``).  Written into ``<save_dir>/eval_results-<step>/``,
as the original: ``eval_log.json`` (neighbor set, reported as "Retain"),
``eval_log_forget.json``, ``eval_log_aggregated.json``,
``unlearning_results.txt``, ``aggregate_stat.json``/``.txt`` and ``run.json``.
``--downstream_tasks arc_challenge,mmlu,...`` also runs lm-evaluation-harness
(``pip install lm-eval``) on the model and adds its scores.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common.device import add_device_args
from common.errors import ArgumentParser, UsageError, cli_main, non_negative_int, positive_int
from common.io import atomic_write_json, atomic_write_text, check_writable_dir, read_json, write_run_record
from common.seed import add_seed_args, seed_everything
from LLM.data import Row, TofuSource, load_eval_idk
from LLM.eval_logs import SetSpec, evaluate_set, save_eval_outputs, unlearn_checkpoint
from LLM.judges import add_judge_args, load_judges, report_skipped
from LLM.metrics import FORGET_FILE, aggregate, downstream_summary
from LLM.models import add_dtype_arg, check_model_path, load_causal_lm, load_tokenizer, resolve_precision
from LLM.options import add_model_args, parse_with_config, template_from_args
from LLM.trainer import make_accelerator

SUMMARY_KEYS = ("Untargeted Forget Efficacy", "Targeted Forget Efficacy", "Model Utility", "TOFU Model Utility",
                "Forget ROUGE", "Retain ROUGE")
#: Unlearning settings recorded in ``unlearning_results.txt`` next to the metrics (as the original),
#: read from the run's ``run.json`` that ``real_world_unlearn.py`` wrote.
RECORDED_FLAGS = ("split", "forget_loss", "optim_cfg", "forget_coeff", "regularization_coeff", "lr", "forget_lr",
                  "num_epochs", "mask")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--data_path", type=str, default="data/real_world", help="folder of the JSON splits")
    parser.add_argument("--split", type=str, default="forget", help="forget set name (<split>_perturbed.json)")
    parser.add_argument("--retain", type=str, default="neighbor", help="neighbor set name (<retain>_perturbed.json)")
    parser.add_argument("--save_dir", type=str, required=True, help="the unlearning run's folder")
    parser.add_argument("--eval_unlearn_step", type=str, default="last",
                        help="checkpoint to evaluate: last, a step number, or 0 for --model_path")
    parser.add_argument("--question_key", type=str, default="question")
    parser.add_argument("--answer_key", type=str, default="golden_answer", help="ground-truth answer field")
    parser.add_argument("--base_answer_key", type=str, default="paraphrased_answer")
    parser.add_argument("--perturbed_answer_key", type=str, default="perturbed_answer")
    parser.add_argument("--ds_size", type=non_negative_int, default=0, help="at most this many rows per set (0: all)")
    parser.add_argument("--batch_size", type=positive_int, default=100)
    parser.add_argument("--max_length", type=positive_int, default=200, help="generation length incl. prompt")
    parser.add_argument("--max_new_tokens", type=positive_int, default=None)
    parser.add_argument("--downstream_tasks", type=str, default="",
                        help="comma-separated lm-eval tasks, e.g. arc_challenge,mmlu,truthfulqa,triviaqa,gsm8k")
    parser.add_argument("--idk_path", type=str, default=None,
                        help="refusal answers of the IDK scores (default: <data_path>/idontknow.jsonl if present)")
    add_judge_args(parser)
    add_dtype_arg(parser)
    add_seed_args(parser, default=1001)
    add_device_args(parser)
    return parser


def canonical_rows(rows: Sequence[Row], args: argparse.Namespace) -> List[Row]:
    """Rows with the evaluation fields renamed to TOFU's ``question``, ``answer``, ``paraphrased_answer``
    and ``perturbed_answer``."""
    keys = {"question": args.question_key, "answer": args.answer_key,
            "paraphrased_answer": args.base_answer_key, "perturbed_answer": args.perturbed_answer_key}
    return [{name: row[key] for name, key in keys.items()} for row in rows]


def unlearning_settings(save_dir: str) -> Dict[str, object]:
    """The :data:`RECORDED_FLAGS` of the unlearning run in ``save_dir`` (empty without its ``run.json``)."""
    record = Path(save_dir) / "run.json"
    if not record.is_file():
        return {}
    config = read_json(record, "--save_dir").get("config", {})
    return {flag: config[flag] for flag in RECORDED_FLAGS if flag in config}


def run_downstream(model_dir: str, tasks: str, eval_dir: Path) -> Dict[str, float]:
    """Run lm-evaluation-harness through ``accelerate launch`` and summarise its results file."""
    output = eval_dir / "downstream_tasks"
    command = [sys.executable, "-m", "accelerate.commands.launch", "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={model_dir},add_bos_token=True", "--tasks", tasks,
               "--batch_size", "auto:4", "--output_path", str(output)]
    print(" ".join(command))
    if subprocess.run(command).returncode != 0:
        raise UsageError(f"--downstream_tasks {tasks}: lm-eval failed (see its output above)")
    result_files = sorted(output.rglob("results*.json"))
    if not result_files:
        raise UsageError(f"--downstream_tasks {tasks}: lm-eval wrote no results*.json under {output}")
    return downstream_summary(json.loads(result_files[-1].read_text())["results"])


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_with_config(build_parser(), argv)
    if args.downstream_tasks and importlib.util.find_spec("lm_eval") is None:
        raise UsageError("--downstream_tasks: needs lm-evaluation-harness (pip install lm-eval)")
    source = TofuSource(args.data_path)
    fields = (args.question_key, args.answer_key, args.base_answer_key, args.perturbed_answer_key)
    sets = []
    for name, file in ((args.retain, "eval_log.json"), (args.split, FORGET_FILE)):
        rows = canonical_rows(source.load(f"{name}_perturbed", fields), args)
        sets.append((f"{name}_perturbed", file, rows[:args.ds_size] if args.ds_size else rows))
    model_dir = unlearn_checkpoint(args.save_dir, args.eval_unlearn_step, args.model_path, "--save_dir")
    check_model_path(model_dir, "--save_dir checkpoint" if args.eval_unlearn_step != "0" else "--model_path")
    tokenizer = load_tokenizer(model_dir)
    idk_answers, idk_file = load_eval_idk(args.idk_path, args.data_path)
    eval_dir = Path(args.save_dir) / f"eval_results-{args.eval_unlearn_step}"
    accelerator = make_accelerator(args.device, args.gpu)
    resolve_precision(args, accelerator.device)
    judges = load_judges(args.embedding_model, args.nli_model, accelerator.device)
    check_writable_dir(eval_dir, "--save_dir")
    seed_everything(args.seed, args.deterministic)

    model = load_causal_lm(model_dir, args.dtype, attn_implementation=args.attn_implementation)
    model = model.to(accelerator.device).eval()
    model.config.use_cache = True
    template = template_from_args(args)
    # the original scores real-world sets with the generation as the NLI premise (its tofu=False)
    specs = {"eval_log.json": SetSpec(generation_premise=True),
             FORGET_FILE: SetSpec(generation_premise=True, idk=idk_answers)}
    results = {file: evaluate_set(accelerator, model, tokenizer, template, rows, specs[file], args.batch_size,
                                  args.max_length, args.max_new_tokens, desc=split, judges=judges)
               for split, file, rows in sets}
    summary = aggregate(results)
    del model
    if args.downstream_tasks and accelerator.is_main_process:
        summary = {**run_downstream(model_dir, args.downstream_tasks, eval_dir), **summary}
    if accelerator.is_main_process:
        save_eval_outputs(eval_dir, results, summary)
        atomic_write_json(results, eval_dir / "eval_log_aggregated.json")
        recorded = dict(summary, **unlearning_settings(args.save_dir), unlearn_step=args.eval_unlearn_step)
        atomic_write_text("".join(f"{key}: {value}\n" for key, value in recorded.items()),
                          eval_dir / "unlearning_results.txt")
        write_run_record(eval_dir, args, summary)
        report_skipped(judges, idk_answers, idk_file)
        print(f"After Unlearn Step {args.eval_unlearn_step}, "
              + " | ".join(f"{key} {summary[key]:.4f}" for key in SUMMARY_KEYS if key in summary)
              + f" -> {eval_dir}")
    return summary


if __name__ == "__main__":
    main()
