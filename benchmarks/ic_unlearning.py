"""Image-classification evidence benchmark: random 10% forgetting where the optimizer can matter.

    OMP_NUM_THREADS=2 python benchmarks/ic_unlearning.py --preset cifar10     # about 1 h on 2 idle CPU cores
    OMP_NUM_THREADS=2 python benchmarks/ic_unlearning.py --preset demo --jobs 2 --threads 1   # the README demo

The design (:mod:`ImageClassification.evidence`, :mod:`common.evidence`): a memorising original model,
Retrain on every seed as the reference, per method x optimizer a learning-rate search (forget lr x
retain lr, extended past an edge where the curve has not risen) on one seed, then the best setting on every
seed. Prints the tables and their reading, writes ``<out>/results.json`` and ``<out>/gap_vs_lr.png``; with
``--results NAME`` also copies them to ``benchmarks/results/NAME.json`` / ``NAME_gap_vs_lr.png``.
A rerun skips finished runs and resumes an interrupted one.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from ImageClassification.evidence import PRESETS, EvidenceBenchmark, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cifar10")
    parser.add_argument("--out", help="work folder (default: the preset's)")
    parser.add_argument("--data", help="ImageFolder zip/tree for cifar10 (default: ../shared/data/cifar10-jpeg.zip)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--results", help="also copy results.json and the plot to benchmarks/results/<NAME>*")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                        help="torch threads of this process, or of each worker with --jobs > 1")
    parser.add_argument("--jobs", type=int, default=1, help="independent runs at a time, one process each")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = PRESETS[args.preset]
    overrides = {key: value for key, value in (("out", args.out), ("data", args.data), ("device", args.device))
                 if value is not None}
    config = replace(config, **overrides)
    started = time.time()
    log = lambda text: print(f"[{time.time() - started:7.1f}s] {text}", flush=True)  # noqa: E731
    results = EvidenceBenchmark(config, log, jobs=args.jobs, threads=args.threads).run()
    print()
    print(report(results))
    log(f"done; {config.out}/results.json, {config.out}/gap_vs_lr.png")
    if args.results:
        target = REPO / "benchmarks" / "results"
        shutil.copyfile(Path(config.out) / "results.json", target / f"{args.results}.json")
        shutil.copyfile(Path(config.out) / "gap_vs_lr.png", target / f"{args.results}_gap_vs_lr.png")


if __name__ == "__main__":
    main()
