"""End-to-end DualOptim demo on scikit-learn's digits (no download, CPU, a few minutes).

    python ImageClassification/demo.py [--quick] [--out demo_runs/ImageClassification]

Trains the original model, retrains without the forget set (the reference),
generates SalUn masks, runs SalUn, SFR-on and SCRUB with ``--optim sgd`` and
``--optim dual`` over several seeds, and prints the ``parse_result`` table.
Every step calls the same entry point a user runs from the shell; each run's
printed log goes to ``<run folder>/log.txt``.
"""
from __future__ import annotations

import os

# Per-run progress bars would interleave with the demo's own; the demo shows one bar over
# all runs instead (set before tqdm is imported, which reads TQDM_* defaults at import).
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import List, Tuple  # noqa: E402

from tqdm import tqdm  # noqa: E402

from common.errors import ArgumentParser, cli_main  # noqa: E402
from common.io import ensure_writable_dir  # noqa: E402
from ImageClassification import (generate_mask, main_forget, main_random, main_random_sfron,  # noqa: E402
                                 main_train, parse_result)

# Learning rates for digits: SGD steps at ~1e-2, AdamW (the forget side of dual) at ~1e-4.
FORGET_LR = {"sgd": {"SalUn": 0.02, "SFRon": 0.02, "SCRUB": 0.01},
             "dual": {"SalUn": 2e-4, "SFRon": 2e-4, "SCRUB": 1e-4}}
RETAIN_LR = 0.01


def plan(out: Path, quick: bool) -> List[Tuple[str, object, List[str]]]:
    """``(description, entry point, argv)`` of every run, in order."""
    seeds = [1, 2] if quick else [1, 2, 3]
    epochs, unlearn_epochs, sfron_iters = (3, 2, 12) if quick else (12, 5, 60)
    common = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "64", "--device", "cpu",
              "--num_indexes_to_replace", "130", "--overwrite"]
    model_path = str(out / "original" / "0model_SA_best.pth.tar")
    runs = [("train the original model", main_train,
             common + ["--epochs", str(epochs), "--lr", "0.1", "--decreasing_lr", str(epochs * 2 // 3),
                       "--save_dir", str(out / "original")]),
            ("SalUn saliency masks", generate_mask,
             common + ["--model_path", model_path, "--save_dir", str(out / "mask")])]
    for seed in seeds:
        seeded = common + ["--seed", str(seed)]
        runs.append((f"retrain (seed {seed})", main_forget,
                     seeded + ["--unlearn", "retrain", "--unlearn_epochs", str(epochs), "--unlearn_lr", "0.1",
                               "--decreasing_lr", str(epochs * 2 // 3), "--save_dir", str(out / f"retrain/seed{seed}")]))
        for optim in ("sgd", "dual"):
            lrs = FORGET_LR[optim]
            base = seeded + ["--model_path", model_path, "--optim", optim, "--retain_lr", str(RETAIN_LR)]
            runs += [
                (f"SalUn {optim} (seed {seed})", main_random,
                 base + ["--unlearn", "RL", "--unlearn_epochs", str(unlearn_epochs), "--unlearn_lr", str(lrs["SalUn"]),
                         "--mask_path", str(out / "mask" / "with_0.5.pt"),
                         "--save_dir", str(out / f"salun_{optim}/seed{seed}")]),
                (f"SFR-on {optim} (seed {seed})", main_random_sfron,
                 base + ["--unlearn", "SFRon", "--sfron_iters", str(sfron_iters), "--unlearn_lr", str(lrs["SFRon"]),
                         "--save_dir", str(out / f"sfron_{optim}/seed{seed}")]),
                (f"SCRUB {optim} (seed {seed})", main_forget,
                 base + ["--unlearn", "SCRUB", "--unlearn_epochs", str(unlearn_epochs), "--unlearn_lr", str(lrs["SCRUB"]),
                         "--save_dir", str(out / f"scrub_{optim}/seed{seed}")]),
            ]
    return runs


def run_all(out: Path, quick: bool) -> list:
    runs = plan(out, quick)
    progress = tqdm(runs, desc="DualOptim demo", unit="run", disable=False)
    for description, entry, argv in progress:
        progress.set_postfix_str(description)
        save_dir = Path(argv[argv.index("--save_dir") + 1])
        save_dir.mkdir(parents=True, exist_ok=True)
        with open(save_dir / "log.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            entry.main(argv)
    print()
    return parse_result.main(["--log_paths", str(out), "--format", "markdown",
                              "--plot", str(out / "avg_gap.png")])


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_runs/ImageClassification", help="folder for every run's outputs")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (used by the tests)")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_all(ensure_writable_dir(args.out, "--out"), args.quick)


if __name__ == "__main__":
    main()
