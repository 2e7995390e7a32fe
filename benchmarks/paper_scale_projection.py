"""Images per second of a short paper-scale run and the projected wall time of the whole paper table.

    python benchmarks/paper_scale_projection.py runs/ic_paper_gpu_short/results.json      # against paper_gpu

Reads the ``results.json`` of a short run (``paper_scale_gpu.sh short``: the same data and batch size as the
full protocol, fewer epochs) and projects every run of the full preset (``--preset``, default ``paper_gpu``)
from the measured speeds: the original model and Retrain at the short original's and Retrain's training
images/s, a SalUn mask per seed at the short run's mask seconds, and per method x optimizer the grid points
(every forget lr x retain lr; up to ``2 x max_extensions`` more where a curve has not risen at an edge) plus
the best setting on the other seeds, each at that method x optimizer's images/s of the whole entry call.
The short runs pay their fixed costs (data, Fisher or mask passes, evaluation) over fewer epochs, so the
projection is an upper bound for the same machine and flags.
"""
from __future__ import annotations

import argparse
from typing import Dict, Mapping

from common.io import read_json
from benchmarks.evidence.ic import PRESETS, EvidenceConfig, step_budget


def _hours(seconds: float) -> float:
    return seconds / 3600.0


def project(short: Mapping, full: EvidenceConfig) -> Dict[str, object]:
    """The projection of ``full`` from a short run's results record (see the module docstring)."""
    budget, config, seconds = short["step_budget"], short["config"], short["seconds"]
    forget, retain = budget["forget_set"], budget["retain_set"]
    retrain_key = next(key for key in seconds if key.startswith("retrain_"))
    train_rate = config["train_epochs"] * (forget + retain) / seconds["original"]
    retrain_rate = config["train_epochs"] * retain / seconds[retrain_key]
    mask_seconds = max((value for key, value in seconds.items() if key.startswith("mask/")), default=0.0)
    runs_budget = step_budget(full, forget, retain)
    per_run = {"epochs": full.unlearn_epochs * (forget + retain),
               "SFRon": (runs_budget["sfron_forget_steps"] + runs_budget["sfron_retain_steps"]) * full.batch_size}
    fixed = {"original": full.train_epochs * (forget + retain) / train_rate,
             "retrain": len(full.seeds) * full.train_epochs * retain / retrain_rate,
             "masks": len(full.seeds) * mask_seconds if any(g.method == "SalUn" for g in full.grids) else 0.0}
    rows, low, high = [], sum(fixed.values()), sum(fixed.values())
    for grid in full.grids:
        rate = short["images_per_second"][f"{grid.method}/{grid.optim}"]
        points = len(grid.forget_lrs) * (len(grid.retain_lrs) if grid.retain_lrs else 1)
        runs = points + len(full.seeds) - 1  # the best setting on the other seeds (the search seed's is a point)
        one = per_run["SFRon" if grid.method == "SFRon" else "epochs"] / rate
        rows.append({"method": grid.method, "optim": grid.optim, "images_per_s": rate, "runs": runs,
                     "extra_runs_at_most": 2 * full.max_extensions, "seconds_per_run": one,
                     "seconds": runs * one})
        low += runs * one
        high += (runs + 2 * full.max_extensions) * one
    return {"train_images_per_s": train_rate, "retrain_images_per_s": retrain_rate, "fixed_seconds": fixed,
            "rows": rows, "table_hours": [_hours(low), _hours(high)]}


def render(projection: Mapping) -> str:
    lines = ["| method | optim | images / s | runs | h / run | h |", "|---|---|---:|---:|---:|---:|"]
    for row in projection["rows"]:
        lines.append(f"| {row['method']} | {row['optim']} | {row['images_per_s']:.0f} | {row['runs']} "
                     f"(+<= {row['extra_runs_at_most']}) | {_hours(row['seconds_per_run']):.2f} | "
                     f"{_hours(row['seconds']):.1f} |")
    fixed = projection["fixed_seconds"]
    low, high = projection["table_hours"]
    lines += ["", f"original: {projection['train_images_per_s']:.0f} training images/s, "
                  f"{_hours(fixed['original']):.1f} h; Retrain on every seed: {_hours(fixed['retrain']):.1f} h; "
                  f"masks: {_hours(fixed['masks']):.2f} h",
              f"projected wall time of the whole table, one run at a time: {low:.1f} h "
              f"({high:.1f} h if every curve extends its grid to the limit)"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json of the short run")
    parser.add_argument("--preset", default="paper_gpu", choices=sorted(PRESETS), help="the full protocol")
    args = parser.parse_args(argv)
    projection = project(read_json(args.results), PRESETS[args.preset])
    print(render(projection))
    return projection


if __name__ == "__main__":
    main()
