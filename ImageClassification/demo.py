"""End-to-end DualOptim demo on scikit-learn's digits (no download, CPU, about 6 minutes on 2 cores).

    python ImageClassification/demo.py [--quick] [--out demo_runs/ImageClassification]

The smallest version of the evidence benchmark (:mod:`benchmarks.evidence.ic`,
``benchmarks/ic_unlearning.py``): it trains an original model that memorises its training set,
retrains without the forget set on three seeds (the reference), searches SalUn's forget learning rate
with ``--optim sgd`` and ``--optim dual`` (three log-spaced values per decade over two decades each, at
least 100 forget steps per run), runs each best setting on every seed, evaluates each of its epochs, and
prints the table, the gap-versus-lr curves (``<out>/gap_vs_lr.png``), the metrics along the runs
(``<out>/stability.png``) and a reading of what the numbers show. Every run calls the entry script a
user runs from the shell; its printed log goes to ``<run folder>/log.txt``. A rerun reuses finished runs.
"""
from __future__ import annotations

import os

# Per-run progress bars would interleave with the demo's own log lines.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
from dataclasses import replace  # noqa: E402

from benchmarks.evidence.engine import run, timed_log  # noqa: E402
from benchmarks.evidence.ic import PRESETS, ICEvidence, report  # noqa: E402
from common.errors import ArgumentParser, cli_main, positive_int  # noqa: E402
from common.io import ensure_writable_dir  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_runs/ImageClassification", help="folder for every run's outputs")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (used by the tests)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="runs at a time, each in its own process with one torch thread (1: one after another "
                             "in this process); numbers can differ in the last digits between values, as torch's "
                             "CPU kernels sum in an order that depends on the thread count")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    config = replace(PRESETS["demo_quick" if args.quick else "demo"], out=str(ensure_writable_dir(args.out, "--out")))
    if args.jobs > 1:
        import torch
        # the runs this process makes itself (a batch of one) then sum like the workers' (one thread each), and
        # do not oversubscribe the cores the workers use
        torch.set_num_threads(1)
    results = run(ICEvidence(config), timed_log(), jobs=args.jobs, threads=1)
    print()
    print(report(results))
    print(f"\ncurves: {config.out}/gap_vs_lr.png, along the runs: {config.out}/stability.png, "
          f"numbers: {config.out}/results.json")
    return results


if __name__ == "__main__":
    main()
