"""Digits DDPM evidence benchmark: forget one digit with SalUn and SFR-on, one Adam state vs ``--dual``.

    OMP_NUM_THREADS=1 python benchmarks/ddpm_digits.py --jobs 2 --threads 1 --results ddpm_evidence_digits
    python benchmarks/ddpm_digits.py --preset quick                    # the pipeline at test size (seconds)

The design (:mod:`benchmarks.evidence.ddpm` on the engine :mod:`benchmarks.evidence.engine`): a judge
classifier, the original DDPM and Retrain on every seed, per method x optimizer a learning-rate search on one
seed (extended past an edge where the gap curve has not risen), then the best setting on every seed. Prints
the tables and their reading, writes ``<out>/results.json``, ``gap_vs_lr.png``, ``lr_maps.png``,
``stability.png`` (UA and RA every fifth of the steps along the best settings' runs, mean +- std over seeds) and
``samples.png``; with ``--results NAME`` also copies them to ``benchmarks/results/NAME.json`` and
``NAME_<plot>.png``. A rerun skips finished runs and resumes an interrupted one.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402

from benchmarks.evidence.ddpm import PRESETS, SAMPLES, DDPMEvidence, report  # noqa: E402
from benchmarks.evidence.engine import benchmark_parser, run_benchmark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0], PRESETS, "digits").parse_args(argv)
    return run_benchmark(args, PRESETS, DDPMEvidence, report, REPO / "benchmarks" / "results", extra_files=(SAMPLES,))


if __name__ == "__main__":
    main()
