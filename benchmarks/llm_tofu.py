"""TOFU forget10 task 1 on CPU: a small Llama fine-tuned from scratch, then unlearned with ME+GD and IDK+AP
under AdamW vs DualOptim (dual_adam) over seeds.

    python benchmarks/llm_tofu.py --quick                      # about 1.5 minutes on 2 CPU cores
    python benchmarks/llm_tofu.py --size medium                # about 15 minutes (1 torch thread)
    python benchmarks/llm_tofu.py --data_path /path/to/tofu    # full sizes (about 1.5 hours at 1 thread)
    python benchmarks/llm_tofu.py --size evidence --jobs 2 --threads 1 --results llm_tofu_evidence
                                                               # the evidence design, about 25 minutes

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
With ``--evidence`` step 4 is the evidence engine's search instead (:mod:`benchmarks.evidence.tofu`): its
runs, ``results.json`` and plots go to ``<out_dir>/evidence`` (``stability.png``: each best setting's runs made
again with a checkpoint every fifth of their forget steps, the gap's metrics at each); a rerun reads finished runs
back. Its runs go
to the ``--launcher`` (``slurm``: SLURM jobs; steps 1-3 still run in this process first, and a ``--dry_run``
skips them and prints the search's first jobs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from benchmarks.evidence.engine import FILES, copy_results, run_launched, timed_log
from benchmarks.evidence.tofu import METHODS, OPTIMS, Prepared, TofuEvidence, report
from common.errors import UsageError, cli_main
from common.io import atomic_write_json
from common.launch import add_launcher_arguments

REPO = Path(__file__).resolve().parents[1]
TABLE_LOSSES = ("ME+GD", "IDK+AP")


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
                             "search on the first seed, then the best setting on every seed "
                             "(<out_dir>/evidence/results.json)")
    parser.add_argument("--grid_low", type=float, default=1e-5, help="--evidence: lowest lr of the grids")
    parser.add_argument("--grid_high", type=float, default=1e-2, help="--evidence: highest lr of the grids")
    parser.add_argument("--points_per_decade", type=int, default=3,
                        help="--evidence: forget lrs per decade of both optimizers' grids (dual_adam's x each "
                             "--retain_lrs)")
    parser.add_argument("--retain_lrs", type=float, nargs="+", default=[1e-4, 1e-3],
                        help="--evidence: dual_adam's retain lrs (--lr) searched")
    parser.add_argument("--optims", nargs="+", choices=OPTIMS, default=["adam", "dual_adam"],
                        help="--evidence: optimizer families searched (dual_adam_joint: DualOptim on joint steps, "
                             "--schedule joint; dual_prodigy_adam / dual_sf_adam: learning-rate-free forget "
                             "optimizers, on --lrfree_losses)")
    parser.add_argument("--lrfree_losses", nargs="+", choices=tuple(METHODS), default=["ME+GD", "NPO+GD"],
                        help="--evidence: the losses the learning-rate-free --optims (dual_prodigy_adam, dual_sf_adam) "
                             "are measured on")
    parser.add_argument("--max_extensions", type=int, default=2,
                        help="--evidence: forget lrs added past a grid edge where the curve has not risen")
    parser.add_argument("--stability", action=argparse.BooleanOptionalAction, default=True,
                        help="--evidence: record each best setting's trajectory (its runs made again with a "
                             "checkpoint every fifth of their forget steps, each evaluated)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 with --quick, robust on a shared machine), "
                             "of each worker with --jobs > 1")
    parser.add_argument("--jobs", type=int, default=1,
                        help="--evidence: independent runs at a time, one process each")
    parser.add_argument("--results", help="--evidence: also copy the results and plots to benchmarks/results/NAME*")
    add_launcher_arguments(parser)  # --evidence: where the search's runs execute
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


def mean_std(values: List[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3g} ± {std:.2g}"


def table_mode(args: argparse.Namespace, prepared: Prepared) -> Dict[str, list]:
    """Each forget loss x optimizer at ``--lr`` / ``--forget_lr`` on every seed: the table of means."""
    rows = {"retain": [prepared.retain], "original": [prepared.original]}
    for loss in TABLE_LOSSES:
        for optim in args.optims:
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


@cli_main
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.evidence:
        if args.launcher != "local" or args.dry_run:
            raise UsageError("--launcher slurm / --dry_run: only with --evidence (the table runs in this process)")
        return table_mode(args, Prepared(args))
    modality = TofuEvidence(args)
    results = run_launched(args, modality, timed_log())
    print(report(results))
    if args.results:
        copy_results(Path(modality.config.out), FILES, REPO / "benchmarks" / "results", args.results)
    return results


if __name__ == "__main__":
    main()
