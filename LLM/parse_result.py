"""Aggregate evaluation results over seeds and settings into a table (and a forget-quality vs utility plot).

    python LLM/parse_result.py --root results --save_csv results/summary.csv --plot results/fq_mu.png

Every ``aggregate_stat.json`` under ``--root`` is one run; runs whose paths
differ only in a ``seed<N>`` component form one setting, reported as
mean and standard deviation.
"""
from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from common.errors import ArgumentParser, UsageError, cli_main
from common.io import atomic_path, atomic_write_text, ensure_writable_file, ensure_writable_plot, read_json

#: The original's parse_output.py columns (its "Forget Efficacy" is eval.py's Untargeted Forget Efficacy),
#: TOFU's forget quality and model utility, and the targeted forget efficacy.
METRICS = ("Forget Quality", "TOFU Model Utility", "Model Utility", "Untargeted Forget Efficacy",
           "Targeted Forget Efficacy", "Forget ROUGE", "Forget Probability", "Retain ROUGE", "Retain Probability",
           "Avg Metric")
SEED_PART = re.compile(r"^seed[_-]?\d+$")


def setting_of(stat_file: Path, root: Path) -> str:
    """The run's folder relative to ``root``, without its ``eval_results-*`` and ``seed<N>`` parts."""
    parts = [p for p in stat_file.parent.relative_to(root).parts
             if not SEED_PART.match(p) and not p.startswith("eval_results")]
    return "/".join(parts) or "."


def collect(root: Path) -> Dict[str, List[dict]]:
    runs: Dict[str, List[dict]] = {}
    for stat_file in sorted(root.rglob("aggregate_stat.json")):
        runs.setdefault(setting_of(stat_file, root), []).append(read_json(stat_file))
    return runs


def summarise(runs: Dict[str, List[dict]]) -> List[dict]:
    """One row per setting: number of runs and ``mean``/``std`` of each metric present."""
    table = []
    for setting, stats in runs.items():
        row = {"setting": setting, "runs": len(stats)}
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
        lines.append(f"{row['setting']} (n={row['runs']}): " + " | ".join(cells))
    return "\n".join(lines)


def plot(table: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = [row for row in table if "Forget Quality" in row and "TOFU Model Utility" in row]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in points:
        ax.errorbar(row["TOFU Model Utility"], row["Forget Quality"], xerr=row["TOFU Model Utility std"],
                    yerr=row["Forget Quality std"], fmt="o", label=row["setting"])
    ax.set_xlabel("TOFU Model Utility")
    ax.set_ylabel("Forget Quality (KS p-value)")
    ax.set_yscale("log")
    if points:
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
    parser.add_argument("--plot", type=str, default=None, help="write forget quality vs model utility (png/pdf)")
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
    if args.save_csv:
        columns = list(dict.fromkeys(key for row in table for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
        atomic_write_text(buffer.getvalue(), args.save_csv)
    if args.plot:
        plot(table, Path(args.plot))
    print(format_table(table))
    return table


if __name__ == "__main__":
    main()
