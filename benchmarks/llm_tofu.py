"""TOFU forget10 task 1 on CPU: a small Llama fine-tuned from scratch, then unlearned with ME+GD and IDK+AP
under AdamW vs DualOptim (dual_adam) over seeds.

    python benchmarks/llm_tofu.py --quick                      # about 1.5 minutes on 2 CPU cores
    python benchmarks/llm_tofu.py --size medium                # about 15 minutes (1 torch thread)
    python benchmarks/llm_tofu.py --data_path /path/to/tofu    # full sizes (about 1.5 hours at 1 thread)

Pipeline (every step goes through the LLM entry scripts' ``main``):
1. a TOFU folder is written under ``--out_dir`` holding ``--num_forget`` rows of forget10 task 1 and
   ``--num_retain`` retain90 rows (the complement of that task; the evaluated retain questions first),
   their perturbed evaluation rows, ``--num_eval`` rows of each utility set and the refusal answers.
   A model trained from scratch knows no real authors or world facts, so those utility rows are added
   to the retain (and full) training data as a stand-in for pre-training knowledge;
2. a tokenizer is trained on that text and a ``--num_layers``-layer Llama initialised from scratch;
3. ``main_train.py`` fine-tunes the "original" model on forget + retain and the "retain" model on the
   retain rows only; ``eval.py`` evaluates both (the retain model's forget-set statistics are the
   forget-quality reference);
4. for each forget loss, optimizer and seed, ``main_forget.py`` unlearns the forget rows with the
   alternating schedule (``--retain_freq``) and ``eval.py`` evaluates the result.
Prints a markdown table of forget quality, model utility, forget-set ROUGE-L and unlearning throughput
(attended tokens per second of the unlearning loop), mean ± std over seeds; writes ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from common.errors import UsageError, cli_main
from common.evidence import (TIED, MethodGrid, log_grid, plot_curves, reading, render_tables, report_curve, search,
                             seed_summary, write_results)
from common.io import atomic_write_json, ensure_writable_dir
from LLM import eval as eval_script
from LLM import main_forget, main_train
from LLM.data import TofuSource, filter_task
from LLM.schedule import steps_per_epoch
from LLM.tiny import build_tiny_llama

REPO = Path(__file__).resolve().parents[1]
LOSSES = {"ME+GD": 0.1, "IDK+AP": 1.0, "NPO+GD": 0.1}  # forget loss -> forget_coeff, as in the original's scripts
TABLE_LOSSES = ("ME+GD", "IDK+AP")
EVIDENCE_LOSSES = ("ME+GD", "IDK+AP", "NPO+GD")
GAP_KEYS = ("Forget ROUGE", "TOFU Model Utility")
OPTIMS = ("adam", "dual_adam")
EVAL_FILES = ("real_authors_perturbed", "world_facts_perturbed")


#: ``--size`` presets. ``medium`` keeps the full run's model (4 x 128 Llama, 2,000-token BPE) and its
#: unlearning recipe (5 epochs, retain_freq 5, batch 8) on a 1:9 forget/retain subset; it fine-tunes 20
#: epochs so the smaller data set is still memorised, and unlearns at 3e-4 for its 240 steps (the quick
#: run's 1e-3 x 60 steps, spread over 4x the steps). Its time was sized from measured CPU costs at 1
#: thread: 0.64 s per fine-tuning step (batch 32), 0.14 s / 0.20 s per ME+GD / IDK+AP unlearning step
#: (batch 8), 0.08 s per evaluated row.
SIZES = {
    "quick": {"num_forget": 40, "num_retain": 160, "num_eval": 20, "hidden_size": 64, "num_layers": 2,
              "vocab_size": 800, "max_length": 80, "ft_epochs": 40, "ft_lr": 3e-3, "ft_batch_size": 16,
              "epochs": 2, "batch_size": 4, "lr": 1e-3, "forget_lr": 1e-3, "retain_freq": 2, "max_new_tokens": 32,
              "seeds": [1001, 1002, 1003], "threads": 1},
    "medium": {"num_forget": 60, "num_retain": 540, "num_eval": 40, "hidden_size": 128, "num_layers": 4,
               "vocab_size": 2000, "max_length": 128, "ft_epochs": 20, "ft_lr": 3e-3, "ft_batch_size": 32,
               "epochs": 5, "batch_size": 8, "lr": 3e-4, "forget_lr": 3e-4, "retain_freq": 5,
               "max_new_tokens": 48, "seeds": [1001, 1002, 1003], "threads": 1},
    # the evidence design (--evidence) on the quick model: 40 forget / 360 retain rows (forget10's 1:9);
    # unlearning 10 epochs at batch 4 with retain_freq 5 = 100 forget + 500 retain steps per run
    "evidence": {"num_forget": 40, "num_retain": 360, "num_eval": 20, "hidden_size": 64, "num_layers": 2,
                 "vocab_size": 800, "max_length": 80, "ft_epochs": 40, "ft_lr": 3e-3, "ft_batch_size": 16,
                 "epochs": 10, "batch_size": 4, "retain_freq": 5, "max_new_tokens": 32,
                 "seeds": [1001, 1002, 1003], "threads": 2, "evidence": True},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=str(REPO.parent / "shared" / "data" / "tofu"),
                        help="closer-look TOFU folder (forget10.json with task_id, retain90.json, *_perturbed.json)")
    parser.add_argument("--out_dir", default=str(REPO / "runs" / "llm_tofu"),
                        help="work folder (models, evaluations, results.json)")
    parser.add_argument("--size", choices=("full",) + tuple(SIZES), default="full",
                        help="preset sizes (flags given explicitly still win): quick ~1.5 min, medium ~15 min "
                             "(measured 14.5) and full ~1.5 h at 1 thread; evidence: the --evidence design")
    parser.add_argument("--quick", action="store_true", help="same as --size quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1001, 1002, 1003])
    parser.add_argument("--num_forget", type=int, default=400, help="forget10 task-1 rows used")
    parser.add_argument("--num_retain", type=int, default=3600, help="retain90 rows used")
    parser.add_argument("--num_eval", type=int, default=100, help="rows per utility evaluation set")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=2000)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--ft_epochs", type=int, default=10)
    parser.add_argument("--ft_lr", type=float, default=3e-3)
    parser.add_argument("--ft_batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="unlearning epochs")
    parser.add_argument("--batch_size", type=int, default=8, help="unlearning micro-batch size")
    parser.add_argument("--lr", type=float, default=1e-4, help="retain learning rate")
    parser.add_argument("--forget_lr", type=float, default=1e-4, help="forget learning rate (dual_adam)")
    parser.add_argument("--retain_freq", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--evidence", action="store_true",
                        help="the evidence design: per loss (ME+GD, IDK+AP, NPO+GD) x optimizer a learning-rate "
                             "search on the first seed, then the best setting on every seed (evidence.json)")
    parser.add_argument("--grid_low", type=float, default=1e-5, help="--evidence: lowest lr of the grids")
    parser.add_argument("--grid_high", type=float, default=1e-2, help="--evidence: highest lr of the grids")
    parser.add_argument("--grid_points", type=int, default=5,
                        help="--evidence: forget lrs of dual_adam (x each --retain_lrs); adam gets twice as many")
    parser.add_argument("--retain_lrs", type=float, nargs="+", default=[1e-4, 1e-3],
                        help="--evidence: dual_adam's retain lrs (--lr) searched")
    parser.add_argument("--max_extensions", type=int, default=2,
                        help="--evidence: forget lrs added past a grid edge where the curve has not risen")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 with --quick, robust on a shared machine)")
    return parser


def parse_args(argv: List[str]) -> argparse.Namespace:
    """The flags, with the ``--size`` (or ``--quick``) preset filling every size not given explicitly."""
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        if args.size not in ("full", "quick"):
            raise UsageError(f"--quick: contradicts --size {args.size}")
        args.size = "quick"
    # the preset becomes the defaults, so every flag given (as --flag v or --flag=v) overrides it
    parser.set_defaults(**SIZES.get(args.size, {}))
    return parser.parse_args(argv, argparse.Namespace(size=args.size))


def write_subset(source: TofuSource, folder: Path, args: argparse.Namespace) -> List[str]:
    """The benchmark's TOFU folder (Hugging Face layout: forget10 pairs with retain90); returns its texts."""
    forget = filter_task(source.load("forget10"), 1)[:args.num_forget]
    keep = {row["question"] for row in forget}
    perturbed = [row for row in source.load("forget10_perturbed", ("question", "answer", "paraphrased_answer",
                                                                   "perturbed_answer")) if row["question"] in keep]
    retain_eval = source.load("retain_perturbed")[:args.num_eval]
    evaluated = {row["question"] for row in retain_eval}
    retain_all = source.load("retain90")
    # The evaluated retain questions first, so utility measures knowledge the models were trained on.
    retain = ([r for r in retain_all if r["question"] in evaluated]
              + [r for r in retain_all if r["question"] not in evaluated])[:args.num_retain]
    sets = {"forget10": forget, "retain90": retain,
            "forget10_perturbed": [{k: r[k] for k in ("question", "answer", "paraphrased_answer",
                                                      "perturbed_answer")} for r in perturbed],
            "retain_perturbed": retain_eval}
    for name in EVAL_FILES:
        sets[name] = source.load(name, ("question", "answer", "perturbed_answer"))[:args.num_eval]
        # A model trained from scratch knows no real authors or world facts: they join the retain data
        # (the stand-in for pre-training knowledge), so model utility is not zero by construction.
        sets["retain90"] = sets["retain90"] + sets[name]
    sets["forget10"] = [{"question": r["question"], "answer": r["answer"]} for r in sets["forget10"]]
    sets["retain90"] = [{"question": r["question"], "answer": r["answer"]} for r in sets["retain90"]]
    sets["full"] = sets["forget10"] + sets["retain90"]
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for name, rows in sets.items():
        (folder / f"{name}.json").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        texts += [" ".join(str(v) for v in row.values()) for row in rows]
    idk = Path(source.data_path) / "idontknow.jsonl"
    if not idk.is_file():
        raise UsageError(f"--data_path {source.data_path}: no idontknow.jsonl (needed by IDK+AP)")
    shutil.copyfile(idk, folder / "idontknow.jsonl")
    return texts + idk.read_text(encoding="utf-8").splitlines() + ["Question: Answer:"]


def mean_std(values: List[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3g} ± {std:.2g}"


def saved_evaluation(save_dir: Path) -> Optional[dict]:
    """The summary an ``eval.py`` run saved in ``save_dir`` (its ``run.json`` is written last), if any."""
    record = save_dir / "run.json"
    return json.loads(record.read_text(encoding="utf-8"))["metrics"] if record.is_file() else None


class Prepared:
    """The benchmark's data folder, fine-tuned models and the retain model's evaluation."""

    def __init__(self, args: argparse.Namespace) -> None:
        source = TofuSource(args.data_path)
        if not source.local:
            raise UsageError(f"--data_path {args.data_path}: expected a local TOFU folder")
        self.out = ensure_writable_dir(args.out_dir, "--out_dir")
        data_dir = self.out / "data"
        self.common = ["--device", "cpu", "--max_length", str(args.max_length)]
        texts = write_subset(source, data_dir, args)
        base = build_tiny_llama(self.out / "scratch", texts, hidden_size=args.hidden_size,
                                num_layers=args.num_layers, vocab_size=args.vocab_size, seed=0)
        self.data = ["--data_path", str(data_dir)]
        self.evaluate = ["--split", "forget10", "--task_id", "1", "--ds_size", "0", "--max_new_tokens",
                         str(args.max_new_tokens), "--batch_size", "20", "--device", "cpu"]
        self.models = {}
        for name, split in (("original", "full"), ("retain", "retain90")):
            self.models[name] = self.out / "ft" / name
            if (self.models[name] / "run.json").is_file():  # fine-tuned by an earlier invocation
                continue
            main_train.main(["--model_path", str(base), "--split", split, "--lr", str(args.ft_lr), "--num_epochs",
                             str(args.ft_epochs), "--batch_size", str(args.ft_batch_size),
                             "--gradient_accumulation_steps", "1", "--weight_decay", "0", "--seed", "0",
                             "--save_dir", str(self.models[name])] + self.data + self.common)
        self.retain_eval = self.out / "ft" / "retain_eval"
        self.retain = self.evaluated(self.models["retain"], self.retain_eval, retain_result=False)
        self.original = self.evaluated(self.models["original"], self.out / "ft" / "original_eval")

    def evaluated(self, model: Path, save_dir: Path, retain_result: bool = True) -> dict:
        """``eval.py``'s summary of ``model`` (forget quality against the retain model's statistics), or the
        one an earlier invocation saved in ``save_dir``."""
        saved = saved_evaluation(save_dir)
        if saved is not None:
            return saved
        reference = ["--retain_result", str(self.retain_eval)] if retain_result else []
        return eval_script.main(["--model_path", str(model), "--save_dir", str(save_dir)] + reference
                                + self.data + self.evaluate)

    def unlearn(self, args: argparse.Namespace, loss: str, optim: str, lr: float, forget_lr: float, seed: int,
                save: Path) -> dict:
        """Unlearn with ``loss`` (its forget_coeff from :data:`LOSSES`) and evaluate; a run whose evaluation
        finished (``<save>/eval/run.json``) is read back instead of run again."""
        saved = saved_evaluation(save / "eval")
        if saved is not None:
            return saved
        result = main_forget.main(
            ["--model_path", str(self.models["original"]), "--split", "forget10", "--task_list", "1",
             "--forget_loss", loss, "--alternate", "--optim_cfg", optim, "--retain_freq", str(args.retain_freq),
             "--lr", str(lr), "--forget_lr", str(forget_lr), "--forget_coeff", str(LOSSES[loss]),
             "--num_epochs", str(args.epochs), "--batch_size", str(args.batch_size),
             "--gradient_accumulation_steps", "1", "--seed", str(seed), "--save_dir", str(save), "--overwrite"]
            + self.data + self.common)[-1]
        checkpoint = save / "1" / "unlearn_times_1" / "checkpoint-last"
        summary = self.evaluated(checkpoint, save / "eval")
        shutil.rmtree(checkpoint)  # the evaluation is what the benchmark keeps; the weights are large
        return dict(summary, tokens_per_second=result["tokens_per_second"])


def table_mode(args: argparse.Namespace, prepared: Prepared) -> Dict[str, list]:
    """Each forget loss x optimizer at ``--lr`` / ``--forget_lr`` on every seed: the table of means."""
    rows = {"retain": [prepared.retain], "original": [prepared.original]}
    for loss in TABLE_LOSSES:
        for optim in OPTIMS:
            rows[f"{loss} / {optim}"] = [
                prepared.unlearn(args, loss, optim, args.lr, args.forget_lr, seed,
                                 prepared.out / "unlearn" / loss / optim / f"seed{seed}") for seed in args.seeds]
    atomic_write_json({"args": vars(args), "results": rows}, prepared.out / "results.json")
    print(f"\nTOFU forget10 task 1 ({args.num_forget} forget / {args.num_retain} retain rows), "
          f"Llama {args.num_layers}x{args.hidden_size} from scratch, seeds {args.seeds}\n")
    print("| model | Forget Quality ↑ | TOFU Model Utility ↑ | Forget ROUGE-L ↓ | unlearning tokens/s |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        speed = mean_std([r.get("tokens_per_second") for r in runs]) if "/" in name else "-"
        print(f"| {name} | {mean_std([r.get('Forget Quality') for r in runs])} | "
              f"{mean_std([r['TOFU Model Utility'] for r in runs])} | {mean_std([r['Forget ROUGE'] for r in runs])} | "
              f"{speed} |")
    return rows


def tofu_gap(summary: Mapping[str, float], retain: Mapping[str, float]) -> float:
    """Distance to the retain model, in points: 100 x mean of |forget ROUGE-L - retain model's| and
    |TOFU model utility - retain model's| (the retain model plays Retrain's part)."""
    return 100.0 * float(np.mean([abs(summary[key] - retain[key]) for key in GAP_KEYS]))


def evidence_grids(args: argparse.Namespace) -> List[MethodGrid]:
    """``adam`` (one AdamW state at ``--lr`` for both objectives: a tied grid) and ``dual_adam`` (forget lr x
    retain lr) of the same size per loss, log-spaced over the same decades."""
    low, high = args.grid_low, args.grid_high
    grids = []
    for loss in EVIDENCE_LOSSES:
        grids.append(MethodGrid(loss, "adam", tuple(log_grid(low, high, 2 * args.grid_points)), None))
        grids.append(MethodGrid(loss, "dual_adam", tuple(log_grid(low, high, args.grid_points)),
                                tuple(args.retain_lrs)))
    return grids


def evidence_mode(args: argparse.Namespace, prepared: Prepared) -> dict:
    """The evidence design (:mod:`common.evidence`): per loss x optimizer a learning-rate search on the first
    seed (extended past an edge where the curve has not risen), then the best setting on every seed."""
    retain = prepared.retain
    # the alternating schedule (forget_freq 1): each cycle is one forget step and retain_freq retain steps
    per_epoch = steps_per_epoch(args.num_forget, args.num_retain, args.batch_size, 1, 1, True, 1, args.retain_freq)
    forget_steps = args.epochs * per_epoch // (1 + args.retain_freq)
    results = {"args": vars(args), "retain": retain, "original": prepared.original,
               "original_gap": tofu_gap(prepared.original, retain),
               "step_budget": {"forget_steps": forget_steps, "retain_steps": forget_steps * args.retain_freq,
                               "batch_size": args.batch_size, "epochs": args.epochs},
               "gap": "100 x mean(|Forget ROUGE - retain's|, |TOFU Model Utility - retain's|)", "methods": []}
    reports = []
    for grid in evidence_grids(args):
        def run(forget_lr: float, retain_lr: float, seed: int) -> dict:
            lr = forget_lr if retain_lr == TIED else retain_lr
            name = f"{grid.method}/{grid.optim}/lr{lr:g}_flr{forget_lr:g}/seed{seed}"
            return prepared.unlearn(args, grid.method, grid.optim, lr, forget_lr, seed, prepared.out / "evidence" / name)

        points = search(grid, lambda lrs: [tofu_gap(run(lr, retain_lr, args.seeds[0]), retain)
                                           for lr, retain_lr in lrs], args.max_extensions)
        report = report_curve(grid.method, grid.optim, points)
        per_seed = {seed: run(report.best_forget_lr, report.best_retain_lr, seed) for seed in args.seeds}
        gaps = [tofu_gap(summary, retain) for summary in per_seed.values()]
        metrics = [{key: summary[key] for key in (*GAP_KEYS, "Forget Quality")} for summary in per_seed.values()]
        reports.append(report)
        results["methods"].append({**report.as_dict(), "tied_lrs": grid.retain_lrs is None, "grid_size": len(points),
                                   "avg_gap": float(np.mean(gaps)), "gap_std": float(np.std(gaps)),
                                   "seed_mean": seed_summary(metrics, (*GAP_KEYS, "Forget Quality")),
                                   "per_seed": {str(s): per_seed[s] for s in args.seeds},
                                   "grid": [asdict(p) for p in points]})
        write_results(prepared.out / "evidence.json", results)
        plot_curves(reports, prepared.out / "evidence_gap_vs_lr.png", "gap to the retain model (first seed)",
                    f"TOFU forget10 task 1, Llama {args.num_layers}x{args.hidden_size}: {forget_steps} forget + "
                    f"{forget_steps * args.retain_freq} retain steps per run, seed {args.seeds[0]}")
    print(evidence_table(results))
    return results


def evidence_table(results: Mapping[str, object]) -> str:
    """The evidence tables and their reading (the retain model plays Retrain's part)."""
    return "\n\n".join([render_tables(results["methods"], (*GAP_KEYS, "Forget Quality"), cell=".3g",
                                      spread=("gap_std", "gap std"), label="loss"),
                        reading(results["methods"], results["original_gap"], "the retain model", spread="gap_std")])


@cli_main
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = Prepared(args)
    return evidence_mode(args, prepared) if args.evidence else table_mode(args, prepared)


if __name__ == "__main__":
    main()
