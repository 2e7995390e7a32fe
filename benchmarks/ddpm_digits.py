"""Digits DDPM evidence benchmark: forget one digit with SalUn and SFR-on, one Adam state vs ``--dual``.

    OMP_NUM_THREADS=1 python benchmarks/ddpm_digits.py --jobs 2 --threads 1 --results ddpm_evidence_digits
    python benchmarks/ddpm_digits.py --preset quick                    # the pipeline at test size (seconds)

The design (:mod:`ImageGeneration.DDPM.evidence`, :mod:`common.evidence`): a judge classifier, the original
DDPM and Retrain on every seed, per method x optimizer a learning-rate search on one seed (extended past an
edge where the gap curve has not risen), then the best setting on every seed. Prints the tables and their
reading, writes ``<out>/results.json``, ``<out>/gap_vs_lr.png`` and ``<out>/samples.png``; with ``--results NAME``
also copies them to ``benchmarks/results/NAME.json``, ``NAME_gap_vs_lr.png`` and ``NAME_samples.png``. A rerun
skips finished runs and resumes an interrupted one.
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

from ImageGeneration.DDPM.evidence import PRESETS, DDPMEvidence, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--out", help="work folder (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--results", help="also copy the results and plots to benchmarks/results/<NAME>*")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                        help="torch threads of this process, or of each worker with --jobs > 1")
    parser.add_argument("--jobs", type=int, default=1, help="independent runs at a time, one process each")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = PRESETS[args.preset]
    config = replace(config, **{key: value for key, value in (("out", args.out), ("device", args.device))
                                if value is not None})
    started = time.time()
    log = lambda text: print(f"[{time.time() - started:7.1f}s] {text}", flush=True)  # noqa: E731
    results = DDPMEvidence(config, log, jobs=args.jobs, threads=args.threads).run()
    print()
    print(report(results))
    log(f"done; {config.out}/results.json, gap_vs_lr.png, samples.png")
    if args.results:
        target = REPO / "benchmarks" / "results"
        for name, suffix in (("results.json", ".json"), ("gap_vs_lr.png", "_gap_vs_lr.png"),
                             ("samples.png", "_samples.png")):
            shutil.copyfile(Path(config.out) / name, target / f"{args.results}{suffix}")
    return results


if __name__ == "__main__":
    main()
