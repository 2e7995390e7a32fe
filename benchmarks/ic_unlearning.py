"""Image-classification evidence benchmark: random 10% forgetting where the optimizer can matter.

    OMP_NUM_THREADS=1 python benchmarks/ic_unlearning.py --preset cifar10 --jobs 2 --threads 1  # ~1.5 h, 2 cores
    OMP_NUM_THREADS=2 python benchmarks/ic_unlearning.py --preset demo --jobs 2 --threads 1   # the README demo

The design (:mod:`benchmarks.evidence.ic` on the engine :mod:`benchmarks.evidence.engine`): a memorising
original model, Retrain on every seed as the reference, per method x optimizer a learning-rate search
(forget lr x retain lr, extended past an edge where the curve has not risen) on one seed, then the best
setting on every seed with its metrics after every epoch. Prints the tables and their reading, writes
``<out>/results.json``, ``gap_vs_lr.png``, ``lr_maps.png`` and ``stability.png``; with ``--results NAME``
also copies them to ``benchmarks/results/NAME.json`` / ``NAME_<plot>.png``. A rerun skips finished runs
and resumes an interrupted one.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402

from benchmarks.evidence.engine import benchmark_parser, run_benchmark  # noqa: E402
from benchmarks.evidence.ic import PRESETS, ICEvidence, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    parser = benchmark_parser(__doc__.splitlines()[0], PRESETS, "cifar10")
    parser.add_argument("--data", help="ImageFolder zip/tree for cifar10 (default: ../shared/data/cifar10-jpeg.zip)")
    return run_benchmark(parser.parse_args(argv), PRESETS, ICEvidence, report, REPO / "benchmarks" / "results",
                         overrides=("out", "data", "device"))


if __name__ == "__main__":
    main()
