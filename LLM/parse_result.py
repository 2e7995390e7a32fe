"""Aggregate evaluation results over seeds and settings into a table, and plot them over unlearning steps.

    python LLM/parse_result.py --root results --save_csv results/summary.csv --plot results/steps.png

Every ``aggregate_stat.json`` under ``--root`` is one run; runs whose paths
differ only in a ``seed<N>`` component form one setting, reported as
mean and standard deviation, separately for each evaluated unlearning step
(``eval_results-<step>`` folders, written by ``eval.py --eval_unlearn_step``).
``--plot`` draws, as the original's ``parse_output_plot.py``, each setting's
path through (``--x_metric``, ``--y_metric``) -- by default Model Utility
against Untargeted Forget Efficacy -- over its steps, markers growing with the step.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from common.errors import ArgumentParser, UsageError, cli_main
from common.io import atomic_path, atomic_write_text, ensure_writable_file, ensure_writable_plot, read_json

#: The original's parse_output.py columns (its "Forget Efficacy" is eval.py's Untargeted Forget Efficacy),
#: TOFU's forget quality and model utility, and the targeted forget efficacy.
METRICS = ("Forget Quality", "TOFU Model Utility", "Model Utility", "Untargeted Forget Efficacy",
           "Targeted Forget Efficacy", "Forget ROUGE", "Forget Probability", "Retain ROUGE", "Retain Probability",
           "Avg Metric")
SEED_PART = re.compile(r"^seed[_-]?\d+$")


def setting_of(stat_file: Path, root: Path) -> Tuple[str, str]:
    """The run's folder relative to ``root`` without its ``eval_results-*`` and ``seed<N>`` parts, and the
    evaluated step (``eval_results-<step>``; ``last`` without one)."""
    parts = stat_file.parent.relative_to(root).parts
    steps = [p[len("eval_results-"):] for p in parts if p.startswith("eval_results-")]
    kept = [p for p in parts if not SEED_PART.match(p) and not p.startswith("eval_results")]
    return "/".join(kept) or ".", steps[-1] if steps else "last"


def collect(root: Path) -> Dict[Tuple[str, str], List[dict]]:
    runs: Dict[Tuple[str, str], List[dict]] = {}
    for stat_file in sorted(root.rglob("aggregate_stat.json")):
        runs.setdefault(setting_of(stat_file, root), []).append(read_json(stat_file))
    return runs


def step_order(step: str) -> float:
    """Numeric steps in order, ``last`` after them all."""
    return float(step) if step.isdigit() else math.inf


def summarise(runs: Dict[Tuple[str, str], List[dict]]) -> List[dict]:
    """One row per setting and step: number of runs and ``mean``/``std`` of each metric present."""
    table = []
    for (setting, step), stats in sorted(runs.items(), key=lambda item: (item[0][0], step_order(item[0][1]))):
        row = {"setting": setting, "step": step, "runs": len(stats)}
        for metric in METRICS:
            values = [s[metric] for s in stats if metric in s]
            if values:
                row[metric] = float(np.mean(values))
                row[metric + " std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        table.append(row)
    return table


def format_table(table: List[dict]) -> str:
    lines = []
    for row in table:
        cells = [f"{m} {row[m]:.4f}±{row[m + ' std']:.4f}" for m in METRICS if m in row]
        step = "" if row["step"] == "last" else f" step {row['step']}"
        lines.append(f"{row['setting']}{step} (n={row['runs']}): " + " | ".join(cells))
    return "\n".join(lines)


def plot(table: List[dict], path: Path, x_metric: str, y_metric: str) -> None:
    """Each setting's (x, y) over its evaluated steps, as the original's ``parse_output_plot.py``: a line
    through the steps, markers growing with ``log1p(step / last step)``; error bars over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for setting in dict.fromkeys(row["setting"] for row in table):
        rows = [row for row in table if row["setting"] == setting and x_metric in row and y_metric in row]
        if not rows:
            continue
        steps = np.array([step_order(row["step"]) for row in rows])
        finite = steps[np.isfinite(steps)]
        last = max(finite.max() if finite.size else 1.0, 1.0)
        sizes = 40 + 300 * np.log1p(np.where(np.isfinite(steps), steps, last) / last)
        x, y = [row[x_metric] for row in rows], [row[y_metric] for row in rows]
        line, = ax.plot(x, y, "-", alpha=0.6, linewidth=2)
        ax.errorbar(x, y, xerr=[row[x_metric + " std"] for row in rows],
                    yerr=[row[y_metric + " std"] for row in rows], fmt="none", color=line.get_color(), alpha=0.4)
        ax.scatter(x, y, s=sizes, color=line.get_color(), alpha=0.6, label=setting)
    ax.set_xlabel(x_metric)
    ax.set_ylabel(y_metric)
    if y_metric == "Forget Quality":
        ax.set_yscale("log")
    ax.grid(True, linestyle="--", alpha=0.7)
    ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, required=True, help="folder searched for aggregate_stat.json")
    parser.add_argument("--save_csv", type=str, default=None, help="write the table as CSV")
    parser.add_argument("--plot", type=str, default=None,
                        help="write --y_metric against --x_metric over the unlearning steps (png/pdf)")
    parser.add_argument("--x_metric", type=str, default="Model Utility", help=f"one of: {', '.join(METRICS)}")
    parser.add_argument("--y_metric", type=str, default="Untargeted Forget Efficacy")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"--root {root}: folder not found")
    table = summarise(collect(root))
    if not table:
        raise UsageError(f"--root {root}: no aggregate_stat.json found (run LLM/eval.py first)")
    if args.save_csv:
        ensure_writable_file(args.save_csv, "--save_csv")
    if args.plot:
        ensure_writable_plot(args.plot)
        for flag, metric in (("--x_metric", args.x_metric), ("--y_metric", args.y_metric)):
            if not any(metric in row for row in table):
                raise UsageError(f"{flag} {metric!r}: no run under --root has it (the summaries built on cosine "
                                 f"similarity and entailment need the judge models; e.g. --x_metric "
                                 f"'TOFU Model Utility' --y_metric 'Forget Quality')")
    if args.save_csv:
        columns = list(dict.fromkeys(key for row in table for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
        atomic_write_text(buffer.getvalue(), args.save_csv)
    if args.plot:
        plot(table, Path(args.plot), args.x_metric, args.y_metric)
    print(format_table(table))
    return table


if __name__ == "__main__":
    main()
