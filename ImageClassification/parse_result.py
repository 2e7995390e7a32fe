"""Aggregate unlearning runs over seeds: mean +- std, average gap to Retrain, ToW, average std.

    python parse_result.py --log_paths "runs/*/eval_result.json" --format markdown --plot gap.png
    python parse_result.py --log_paths logs/dual.log --ref 5.39 100 94.25 76.26

Inputs (globs expanded, folders searched for ``eval_result.json``):

* ``eval_result.json`` files written by the unlearning scripts, grouped by
  ``(method, optim, unlearn_lr)`` (method: the ``--unlearn`` name, SalUn for RL with a mask);
* text logs in the research code's format: a line ``model <name>`` names the
  group, ``alpha <value>`` its learning rate, and each run contributes the
  lines ``retain acc: x``, ``forget acc: x`` (UA), ``test acc: x``, ``MIA: x``
  (a fraction).

The reference is Retrain: the mean of the runs whose method is ``retrain``
(or whose log group name contains it), or ``--ref UA RA TA MIA``.
Average gap = mean of |metric - reference| over UA, RA, TA, MIA; ToW is the
research code's three-metric gap (mean over UA, RA, TA); average std is the
mean of the four standard deviations (population std, as the research code).
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from common.errors import ArgumentParser, UsageError, cli_main
from common.io import ensure_writable_plot, read_json

METRICS = ("UA", "RA", "TA", "MIA")
Group = Tuple[str, str, float]  # (method, optimizer, unlearn_lr)


def _expand(patterns: Sequence[str]) -> List[Path]:
    paths: List[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise UsageError(f"--log_paths {pattern}: no file matches")
        for match in map(Path, matches):
            paths.extend(sorted(match.rglob("eval_result.json")) if match.is_dir() else [match])
    return paths


def _number(line: str) -> float:
    return float(line.strip().split()[-1])


def parse_log(path: Path) -> Dict[Group, List[Dict[str, float]]]:
    """Runs of a research-code log, grouped by its ``model``/``alpha`` lines."""
    runs: Dict[Group, List[Dict[str, float]]] = OrderedDict()
    model, alpha, current = "unnamed", float("nan"), {}
    keys = {"retain acc": "RA", "forget acc": "UA", "test acc": "TA"}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if re.match(r"^model\b", stripped):
            model = " ".join(stripped.split()[1:]) or "unnamed"
        elif re.match(r"^alpha\b", stripped):
            alpha = _number(stripped)
        elif stripped.startswith("MIA:"):
            current["MIA"] = 100.0 * _number(stripped)
        else:
            for text, key in keys.items():
                if stripped.startswith(text):
                    current[key] = _number(stripped)
        if len(current) == 4:
            runs.setdefault((model, "", alpha), []).append(current)
            current = {}
    return runs


def parse_result_file(path: Path) -> Dict[Group, List[Dict[str, float]]]:
    record = read_json(path, "--log_paths")
    missing = [key for key in (*METRICS, "unlearn", "optim", "unlearn_lr") if key not in record]
    if missing:
        raise UsageError(f"--log_paths {path}: not an eval_result.json (missing {', '.join(missing)})")
    method = record.get("method", record["unlearn"])
    return {(method, record["optim"], float(record["unlearn_lr"])): [{k: record[k] for k in METRICS}]}


def collect(paths: Sequence[Path]) -> Dict[Group, List[Dict[str, float]]]:
    groups: Dict[Group, List[Dict[str, float]]] = OrderedDict()
    for path in paths:
        parsed = parse_result_file(path) if path.suffix == ".json" else parse_log(path)
        for key, runs in parsed.items():
            groups.setdefault(key, []).extend(runs)
    if not groups:
        raise UsageError("--log_paths: no complete runs found (need retain/forget/test acc and MIA per run)")
    return groups


def is_retrain(group: Group) -> bool:
    return "retrain" in group[0].lower()


def reference(groups: Dict[Group, List[Dict[str, float]]], ref: Optional[Sequence[float]]) -> np.ndarray:
    if ref is not None:
        return np.asarray(ref, dtype=float)
    retrain = [group for group in groups if is_retrain(group)]
    if not retrain:
        raise UsageError("--ref: no retrain runs in --log_paths; give the reference as --ref UA RA TA MIA")
    if len(retrain) > 1:
        raise UsageError(f"--ref: {len(retrain)} different retrain groups in --log_paths; pass --ref UA RA TA MIA")
    runs = groups[retrain[0]]
    return np.array([np.mean([run[m] for run in runs]) for m in METRICS])


def summarize(groups: Dict[Group, List[Dict[str, float]]], ref: np.ndarray) -> List[Dict[str, object]]:
    rows = []
    for (method, optim, lr), runs in groups.items():
        values = np.array([[run[m] for m in METRICS] for run in runs])
        mean, std = values.mean(axis=0), values.std(axis=0)
        row: Dict[str, object] = {"method": method, "optim": optim, "unlearn_lr": lr, "seeds": len(runs)}
        for i, metric in enumerate(METRICS):
            row[metric], row[f"{metric}_std"] = float(mean[i]), float(std[i])
        row["avg_gap"] = float(np.mean(np.abs(mean - ref)))
        row["ToW"] = float(np.mean(np.abs(mean[:3] - ref[:3])))
        row["avg_std"] = float(std.mean())
        rows.append(row)
    rows.sort(key=lambda r: (str(r["method"]), str(r["optim"]), float(r["unlearn_lr"])))
    return rows


def _cells(row: Dict[str, object]) -> List[str]:
    lr = row["unlearn_lr"]
    return ([str(row["method"]), str(row["optim"]) or "-", "-" if lr != lr else f"{lr:g}", str(row["seeds"])]
            + [f"{row[m]:.2f}+-{row[m + '_std']:.2f}" for m in METRICS]
            + [f"{row['avg_gap']:.2f}", f"{row['ToW']:.2f}", f"{row['avg_std']:.2f}"])


HEADER = ["method", "optim", "unlearn_lr", "seeds", *METRICS, "Avg Gap", "ToW", "Avg std"]


def render(rows: List[Dict[str, object]], ref: np.ndarray, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"reference": dict(zip(METRICS, ref.tolist())), "rows": rows}, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    body = [_cells(row) for row in rows]
    reference_line = "reference (Retrain): " + ", ".join(f"{m} {v:.2f}" for m, v in zip(METRICS, ref))
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return reference_line + "\n\n" + "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(HEADER)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return reference_line + "\n" + "\n".join(lines)


def plot(rows: List[Dict[str, object]], path: str) -> None:
    """Average gap against ``--unlearn_lr``, one line per (method, optimizer)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_path
    figure, axis = plt.subplots(figsize=(6, 4))
    series: Dict[str, List[Tuple[float, float]]] = OrderedDict()
    for row in rows:
        if not is_retrain((str(row["method"]), "", 0.0)):
            label = f"{row['method']} ({row['optim']})" if row["optim"] else str(row["method"])
            series.setdefault(label, []).append((float(row["unlearn_lr"]), float(row["avg_gap"])))
    for label, points in series.items():
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xlabel("--unlearn_lr")
    axis.set_ylabel("average gap to Retrain")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Aggregate image-classification unlearning results over seeds")
    parser.add_argument("--log_paths", nargs="+", required=True, help="logs, eval_result.json files or folders")
    parser.add_argument("--ref", nargs=4, type=float, metavar=("UA", "RA", "TA", "MIA"), default=None,
                        help="Retrain reference (default: the retrain runs among --log_paths)")
    parser.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    parser.add_argument("--plot", default=None, help="draw average gap vs --unlearn_lr into this image file")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    groups = collect(_expand(args.log_paths))
    ref = reference(groups, args.ref)
    rows = summarize(groups, ref)
    if args.plot:
        ensure_writable_plot(args.plot)
    print(render(rows, ref, args.format))
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
