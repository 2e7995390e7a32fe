"""What an evidence benchmark prints and draws: tables, their reading, and the plots.

Every function reads the records :func:`benchmarks.evidence.engine.run` writes (one per method x optimizer,
see there), so a results JSON can be re-reported without running anything:

* :func:`render_tables`: the best setting of each method x optimizer with its metrics over seeds, its
  "Avg Gap" (the gap of the seed means), the mean and std of the per-seed gaps and its sensitivity, then
  each forget-lr curve on the search seed;
* :func:`no_search_table`: the learning-rate-free optimizers at their default forget lr, against the searched best;
* :func:`reading`: a plain-language reading, whichever way the numbers fall;
* :func:`stability_table`: the std over seeds at the end of the run and its mean over the run;
* :func:`plot_curves` (gap against forget lr, the doing-nothing gap dashed), :func:`plot_lr_maps` (forget lr
  x retain lr -> gap) and :func:`plot_stability` (metrics along the run, mean +- std over seeds, the
  reference dashed). Every figure is saved with its labels inside (``bbox_inches="tight"``).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from benchmarks.evidence.design import DEFAULT_TOLERANCE, POINTS_PER_DECADE, gap_text
from common.io import ensure_writable_plot

#: what the tables and the reading print for a curve that :func:`benchmarks.evidence.design.insensitive` flags
INSENSITIVE = "insensitive: the forget lr has no effect here"


def _retain(record: Mapping[str, object]) -> str:
    return "tied" if record["tied_lrs"] else f"{record['best_retain_lr']:g}"


def _sensitivity(record: Mapping[str, object]) -> str:
    return "insensitive" if record["insensitive"] else f"{record['robustness_decades']:.2f}"


def _range(record: Mapping[str, object]) -> str:
    value = record.get("response_range")  # absent from results written before it was recorded
    return "" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _lr_free(record: Mapping[str, object]) -> bool:
    return record.get("default_lr") is not None


def render_tables(methods: Sequence[Mapping[str, object]], metrics: Sequence[str], cell: str = ".2f",
                  label: str = "method") -> str:
    """Markdown tables of method records: the best setting of each method x optimizer with its metrics over
    seeds, then each forget-lr curve on the search seed."""
    lines = [f"| {label} | optim | forget lr | retain lr | seeds | {' | '.join(metrics)} | Avg Gap | mean seed gap "
             "| gap std | Avg std | robust decades | response range | grid (points) | both ends searched |",
             "|---|---|---:|---:|---:|" + "---|" * len(metrics) + "---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in methods:
        mean = m["seed_mean"]
        cells = [f"{mean[k]:{cell}}+-{mean[k + '_std']:{cell}}" for k in metrics]
        lines.append(f"| {m['method']} | {m['optim']} | {m['best_forget_lr']:g} | {_retain(m)} | "
                     f"{len(m['per_seed'])} | " + " | ".join(cells) + f" | {gap_text(m['avg_gap'])} | {gap_text(m['mean_seed_gap'])} | "
                     f"{m['gap_std']:.2f} | {m['avg_std']:.2f} | {_sensitivity(m)} | {_range(m)} | {m['grid_size']} | "
                     f"{'yes' if m['searched_both_ends'] else 'no'} |")
    lines += ["", f"| {label} | optim | retain lr | gap at each forget lr (search seed) |", "|---|---|---:|---|"]
    for m in methods:
        curve = ", ".join(f"{lr:g}: {gap_text(gap)}" for lr, gap in m["curve"])
        lines.append(f"| {m['method']} | {m['optim']} | {_retain(m)} | {curve} |")
    return "\n".join(lines)


def reading(methods: Sequence[Mapping[str, object]], original_gap: float, reference: str,
            unmet: Sequence[str] = ()) -> str:
    """A plain-language reading of method records, whichever way the numbers fall.

    A difference of Avg Gaps no larger than the larger std over seeds of the per-seed gap (``gap_std``) of
    the two is called seed noise; a curve that has not risen at an edge of its grid is called not fully
    searched; a curve flat within its seed spread is called insensitive, never robust; a best gap no lower
    than the original model's (``original_gap``) is no better than doing nothing.
    """
    lines = []
    if unmet:
        lines.append(f"The setting misses the design's criteria ({', '.join(unmet)}): the comparison below "
                     f"may not discriminate.")
    lines.append(f"Doing nothing (the original model) has Avg Gap {original_gap:.2f} to {reference}.")
    by_method: Dict[str, List[Mapping[str, object]]] = {}
    for record in methods:
        by_method.setdefault(record["method"], []).append(record)
    for method, all_records in by_method.items():
        records = [r for r in all_records if math.isfinite(r["avg_gap"])]
        parts = [f"{r['optim']} {r['avg_gap']:.2f} (per-seed gap std {r['gap_std']:.2f}, " + (
            f"{INSENSITIVE})" if r["insensitive"] else
            f"within {DEFAULT_TOLERANCE:g} points of its best over {r['robustness_decades']:.2f} decades of forget lr)")
            for r in records]
        text = f"{method}: Avg Gap " + "; ".join(parts) + "." if records else f"{method}:"
        failed = [r["optim"] for r in all_records if not math.isfinite(r["avg_gap"])]
        if failed:
            text += f" Diverged (a NaN or infinite loss) at its best setting on some seed: {', '.join(failed)}."
        if not records:
            lines.append(text)
            continue
        ranked = sorted(records, key=lambda r: r["avg_gap"])
        best = ranked[0]
        for other in ranked[1:]:
            noise = max(best["gap_std"], other["gap_std"])
            difference = other["avg_gap"] - best["avg_gap"]
            if difference <= noise:
                text += f" {best['optim']} vs {other['optim']}: the difference ({difference:.2f}) is within seed " \
                        f"noise ({noise:.2f})."
            else:
                text += f" {best['optim']} is closer to {reference} than {other['optim']} by {difference:.2f}."
        # neither a flat curve nor a curve of models no better than the original is robustness
        useful = [r for r in records if r["avg_gap"] < original_gap and not r["insensitive"]]
        if len(useful) > 1 and len({r["robustness_decades"] for r in useful}) > 1:
            text += f" {max(useful, key=lambda r: r['robustness_decades'])['optim']} is the least lr-sensitive."
        no_better = [r["optim"] for r in records if r["avg_gap"] >= original_gap]
        if no_better:
            text += f" No better than doing nothing: {', '.join(no_better)}."
        for record in records:
            default = record.get("no_search")
            searched = [r for r in records if not _lr_free(r)]
            if default and searched:
                best_searched = min(searched, key=lambda r: r["avg_gap"])
                text += (f" {record['optim']} with no search (default forget lr {default['forget_lr']:g}): Avg Gap "
                         f"{_no_search_gap(default)}, against the searched best ({best_searched['optim']} "
                         f"{gap_text(best_searched['avg_gap'])}) "
                         + _compare(default["avg_gap"], default["gap_std"], best_searched["avg_gap"],
                                    best_searched["gap_std"]) + ".")
        unsearched = [r["optim"] for r in records if not r["searched_both_ends"]]
        if unsearched:
            text += f" Curve not risen at an edge of its grid (not fully searched): {', '.join(unsearched)}."
        lines.append(text)
    return "\n".join(lines)


def no_search_table(methods: Sequence[Mapping[str, object]], label: str = "method") -> str:
    """Markdown table of the learning-rate-free optimizers at their default forget lr (no search) on every seed,
    against each searched optimizer of the same method at its best setting ('' when none was run). Within seed
    noise: the difference of Avg Gaps is no larger than the larger of the two per-seed gap stds."""
    rows = [m for m in methods if m.get("no_search")]
    if not rows:
        return ""
    lines = [f"| {label} | optim | default forget lr | retain lr | seeds | Avg Gap (no search) | gap std "
             "| searched best of the same method: Avg Gap +- gap std, and the verdict |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for m in rows:
        default = m["no_search"]
        against = [r for r in methods if r["method"] == m["method"] and not _lr_free(r) and math.isfinite(r["avg_gap"])]
        verdicts = []
        for other in against:
            verdicts.append(f"{other['optim']} {other['avg_gap']:.2f}+-{other['gap_std']:.2f}: "
                            + _compare(default["avg_gap"], default["gap_std"], other["avg_gap"], other["gap_std"]))
        lines.append(f"| {m['method']} | {m['optim']} | {default['forget_lr']:g} | {default['retain_lr']:g} | "
                     f"{len(default['per_seed'])} | {_no_search_gap(default)} | {default['gap_std']:.2f} | "
                     + "; ".join(verdicts) + " |")
    return "\n".join(lines)


def _no_search_gap(default: Mapping[str, object]) -> str:
    """The Avg Gap of a no-search record, with how many of its seeds diverged when any did."""
    diverged = sum(1 for seed in default["per_seed"].values() if seed.get("diverged"))
    text = gap_text(default["avg_gap"])
    return f"{text} ({diverged} of {len(default['per_seed'])} seeds)" if diverged else text


def _compare(gap: float, std: float, other: float, other_std: float) -> str:
    """How a gap compares with another: within seed noise (the larger std), or better / worse by how much."""
    if not math.isfinite(gap):
        return "no result to compare"
    difference = gap - other
    if abs(difference) <= max(std, other_std):
        return f"within seed noise ({difference:+.2f})"
    return f"{'worse' if difference > 0 else 'better'} by {abs(difference):.2f}"


def stability_table(methods: Sequence[Mapping[str, object]], keys: Sequence[str], label: str = "method",
                    cell: str = ".2f") -> str:
    """Markdown table of the stability records: per method x optimizer with a recorded trajectory, the std
    over seeds of each metric at the end of the run and its mean over the run, in the tables' ``cell`` format
    ('' when none is recorded)."""
    recorded = [m for m in methods if m.get("stability")]
    if not recorded:
        return ""
    lines = [f"| {label} | optim | seeds | points | " + " | ".join(f"{k} end std" for k in keys) + " | "
             + " | ".join(f"{k} mean std" for k in keys) + " |",
             "|---|---|---:|---:|" + "---:|" * (2 * len(keys))]
    for m in recorded:
        s = m["stability"]
        lines.append(f"| {m['method']} | {m['optim']} | {s['seeds']} | {len(s['points'])} | "
                     + " | ".join(f"{s['end_std'][k]:{cell}}" for k in keys) + " | "
                     + " | ".join(f"{s['mean_std'][k]:{cell}}" for k in keys) + " |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path: Path) -> None:
    # "tight" grows the saved area to every label, so no axis label is cut off
    figure.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(figure)


def plot_curves(methods: Sequence[Mapping[str, object]], path: Path, ylabel: str, title: str,
                original_gap: float) -> None:
    """One panel per method, gap against forget lr (log axis) for each optimizer, best points marked, the
    original model's gap (doing nothing) dashed."""
    ensure_writable_plot(str(path))
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter
    from matplotlib.transforms import blended_transform_factory
    # a learning-rate-free optimizer's axis is a multiple of its default lr: its curves get a panel of their own
    names = list(dict.fromkeys((record["method"], _lr_free(record)) for record in methods))
    most = max(sum((r["method"], _lr_free(r)) == name for r in methods) for name in names)
    crowded = most > 5  # the legend goes beside the axes, and more than 10 curves need 20 colours
    figure, axes = plt.subplots(1, len(names), figsize=((6.4 if crowded else 4.2) * len(names), 3.6), squeeze=False)
    for axis, (name, lr_free) in zip(axes[0], names):
        if most > 10:
            axis.set_prop_cycle(color=plt.cm.tab20.colors)
        # a diverged run has no gap: it is marked at the top of the panel, at its lr
        at_top = blended_transform_factory(axis.transData, axis.transAxes)
        for record in (r for r in methods if (r["method"], _lr_free(r)) == (name, lr_free)):
            scale = record["default_lr"] if lr_free else 1.0
            lrs, gaps = zip(*record["curve"])
            line, = axis.plot([lr / scale for lr in lrs], gaps, marker="o",
                              label=f"{record['optim']} (retain lr {_retain(record)})")
            axis.plot([record["best_forget_lr"] / scale], [record["search_gap"]], marker="*", markersize=14,
                      color=line.get_color())
            diverged = [lr / scale for lr, gap in record["curve"] if not math.isfinite(gap)]
            if diverged:
                axis.plot(diverged, [0.97] * len(diverged), marker="x", linestyle="none", color=line.get_color(),
                          transform=at_top, label=f"{record['optim']} diverged")
            default = record.get("no_search")
            if default and math.isfinite(default["avg_gap"]):  # the default's Avg Gap over seeds, no search
                axis.plot([1.0], [default["avg_gap"]], marker="D", linestyle="none",
                          color=line.get_color(), label=f"{record['optim']} default, mean of seeds")
            elif default:
                axis.plot([1.0], [0.97], marker="D", linestyle="none", fillstyle="none", transform=at_top,
                          color=line.get_color(), label=f"{record['optim']} default diverged")
        axis.axhline(original_gap, color="0.4", linestyle="--", linewidth=1, label="doing nothing (original)")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # a panel spanning under a decade labels its minor ticks
        axis.set_title(f"{name}, learning-rate free" if lr_free else name)
        axis.set_xlabel("forget lr / the optimizer's default" if lr_free else "forget learning rate")
        axis.set_ylabel(textwrap.fill(ylabel, 32))  # no longer than the axis is high
        axis.grid(True, which="both", alpha=0.3)
        if crowded:
            axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            axis.legend(fontsize=7)
    figure.suptitle(textwrap.fill(title, 40 * len(names)), fontsize=8)
    figure.tight_layout()
    _save(figure, path)


def plot_lr_maps(methods: Sequence[Mapping[str, object]], path: Path, title: str) -> bool:
    """One heat map per method x optimizer whose retain lr was searched (more than one value): the search
    seed's gap at each forget lr x retain lr (blank where not run, e.g. beside an edge extension). Returns
    whether there was any map to draw (no file otherwise)."""
    maps = [m for m in methods if not m["tied_lrs"] and len({p["retain_lr"] for p in m["grid"]}) > 1]
    if not maps:
        return False
    ensure_writable_plot(str(path))
    plt = _pyplot()
    import numpy as np
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[len(maps):]:
        axis.set_visible(False)
    for axis, record in zip(axes.flat, maps):
        forget = sorted({p["forget_lr"] for p in record["grid"]})
        retain = sorted({p["retain_lr"] for p in record["grid"]})
        gaps = np.full((len(retain), len(forget)), np.nan)
        for p in record["grid"]:
            gaps[retain.index(p["retain_lr"]), forget.index(p["forget_lr"])] = p["gap"]
        shown = np.where(np.isfinite(gaps), gaps, np.nan)
        image = axis.imshow(shown, origin="lower", aspect="auto", cmap="viridis_r")
        for (i, j), value in np.ndenumerate(gaps):
            if not np.isnan(value):
                axis.text(j, i, gap_text(value) if math.isfinite(value) else "div", ha="center", va="center",
                          fontsize=6, color="white")
        axis.set_xticks(range(len(forget)), [f"{lr:.2g}" for lr in forget], rotation=60, fontsize=6)
        axis.set_yticks(range(len(retain)), [f"{lr:g}" for lr in retain], fontsize=7)
        axis.set_xlabel("forget learning rate")
        axis.set_ylabel("retain learning rate")
        axis.set_title(f"{record['method']} / {record['optim']}", fontsize=9)
        figure.colorbar(image, ax=axis, label="gap (search seed)")
    figure.suptitle(textwrap.fill(title, 45 * columns), fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return True


def plot_stability(methods: Sequence[Mapping[str, object]], path: Path, keys: Sequence[str],
                   reference: Mapping[str, float], reference_name: str, progress: str, title: str) -> bool:
    """One row per method, one column per metric: each optimizer's mean over seeds along the run with a band
    of +- one std, the reference's value dashed. Returns whether any method had a trajectory."""
    recorded = [m for m in methods if m.get("stability")]
    if not recorded:
        return False
    ensure_writable_plot(str(path))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    names = list(dict.fromkeys(m["method"] for m in recorded))
    figure, axes = plt.subplots(len(names), len(keys), figsize=(3.2 * len(keys), 2.8 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        for axis, key in zip(row, keys):
            for record in (m for m in recorded if m["method"] == name):
                points = record["stability"]["points"]
                x = [p["progress"] for p in points]
                mean = [p[key] for p in points]
                std = [p[f"{key}_std"] for p in points]
                seeds = record["stability"]["seeds"]
                line, = axis.plot(x, mean, marker=".", label=f"{record['optim']} ({seeds} seeds)")
                axis.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                  color=line.get_color(), alpha=0.2)
            if key in reference:
                axis.axhline(reference[key], color="black", linestyle="--", linewidth=1, label=reference_name)
            axis.set_title(f"{name}: {key}", fontsize=9)
            axis.set_xlabel(textwrap.fill(progress, 30))  # no wider than the panel
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_ylabel(key)
            axis.grid(True, alpha=0.3)
        row[0].legend(fontsize=7)
    figure.suptitle(textwrap.fill(title, 40 * len(keys)), fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    return True


def resolution_note() -> str:
    """The caption line on the grids' resolution."""
    return (f"every forget-lr axis: {POINTS_PER_DECADE} log-spaced points per decade; robust decades: the width "
            f"of forget lr within {DEFAULT_TOLERANCE:g} points of the best gap, on that resolution")

