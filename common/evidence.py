"""The evidence-benchmark design every unlearning benchmark shares.

A benchmark can only support or refute DualOptim's claims (a lower gap to the reference model, less
sensitivity to the learning rate and the seed) when its setting can discriminate; this module holds the
parts of the design that do not depend on the modality:

* **grids**: log-spaced learning rates (:func:`log_grid`); a curve that has not risen (by more than the
  tolerance over its best) at an edge of its grid has not been searched there, and :func:`edge_extension`
  names the next value beyond that edge;
* **the search**: a 2-D grid of (forget lr, retain lr) points on one seed, the best setting is the
  lowest gap (:func:`best_setting`), the curve reported is the forget-lr axis at that setting's retain
  lr (:func:`curve_at`);
* **robustness**: the width in decades of lr of the contiguous range around a curve's best point whose
  gap stays within ``tolerance`` of that best (:func:`robustness_width`);
* **seeds**: mean and std of every metric over seeds, and the mean of the stds (:func:`seed_summary`);
* **reporting**: the tables and their plain-language reading (:func:`render_tables`, :func:`reading`), the
  gap-versus-lr plot with every optimizer of a method on one axis (:func:`plot_curves`) and the results
  JSON (:func:`write_results`).

The gap itself is the modality's (image classification: parse_result's average gap to Retrain). A run that
stopped on a NaN or infinite loss (:mod:`common.evidence_runs`) has the gap :data:`DIVERGED_GAP`: the search
never picks it, a robust range ends before it, a curve counts as risen at it, and a setting that diverges on
any seed has that average gap; tables print it as ``diverged``.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from common.errors import UsageError
from common.evidence_runs import RunsFailed
from common.io import atomic_write_json, ensure_writable_plot
from common.launch import DryRun, add_launcher_arguments, launcher_from_args, using

#: A curve point is within this many gap points of the curve's best (the issue's robustness figure).
DEFAULT_TOLERANCE = 2.0

#: The gap of a run that diverged (stopped on a non-finite loss): worse than any finished run.
DIVERGED_GAP = math.inf


def diverged(record: Mapping[str, object]) -> bool:
    """Whether a run's record (:meth:`common.evidence_runs.Runner.records`) is that of a diverged run."""
    return bool(record.get("diverged"))


def seeds_gap(per_seed: Sequence[Mapping[str, object]],
              gap: Callable[[Sequence[Mapping[str, object]]], float]) -> float:
    """``gap(per_seed)``, the average gap of a setting over its seeds, or :data:`DIVERGED_GAP` when a seed
    diverged."""
    return DIVERGED_GAP if any(diverged(run) for run in per_seed) else gap(per_seed)


def gap_text(gap: float) -> str:
    """A gap as tables and logs print it: two decimals, or ``diverged``."""
    return f"{gap:.2f}" if math.isfinite(gap) else "diverged"


def log_grid(low: float, high: float, points: int) -> List[float]:
    """``points`` log-spaced values from ``low`` to ``high`` (both included), rounded to 3 significant digits."""
    if points < 2 or not 0 < low < high:
        raise ValueError(f"log_grid needs 0 < low < high and points >= 2, got {low}, {high}, {points}")
    step = math.log10(high / low) / (points - 1)
    return [float(f"{low * 10 ** (step * i):.3g}") for i in range(points)]


#: the recorded retain lr of a grid whose single optimizer runs at the forget lr for both objectives
TIED = 0.0


@dataclass(frozen=True)
class MethodGrid:
    """The searched learning rates of one method x optimizer.

    ``retain_lrs=None`` ties the retain lr to the forget lr: a single optimizer that serves both objectives
    (SFR-on under ``sgd``, an LLM loss under ``adam``) has one lr, which is the whole search; its points
    record the retain lr as :data:`TIED`.
    """
    method: str
    optim: str
    forget_lrs: Tuple[float, ...]
    retain_lrs: Optional[Tuple[float, ...]]

    @property
    def size(self) -> int:
        return len(self.forget_lrs) * (len(self.retain_lrs) if self.retain_lrs else 1)


@dataclass(frozen=True)
class GridPoint:
    """One unlearning run of the search: its learning rates and its gap (lower is better)."""
    forget_lr: float
    retain_lr: float
    gap: float


def curve_at(points: Iterable[GridPoint], retain_lr: float) -> List[GridPoint]:
    """The forget-lr curve at one retain lr, sorted by forget lr."""
    return sorted((p for p in points if p.retain_lr == retain_lr), key=lambda p: p.forget_lr)


def best_setting(points: Sequence[GridPoint]) -> GridPoint:
    """The lowest-gap point (the first of equal gaps in grid order, so the choice is deterministic)."""
    if not points:
        raise ValueError("best_setting: no grid points")
    return min(sorted(points, key=lambda p: (p.retain_lr, p.forget_lr)), key=lambda p: p.gap)


def robustness_width(curve: Sequence[GridPoint], tolerance: float = DEFAULT_TOLERANCE) -> Tuple[float, float, float]:
    """``(decades, low_lr, high_lr)``: the range of forget lr around the curve's best over which the gap stays
    within ``tolerance`` of it, and its width ``log10(high_lr / low_lr)``.

    Each end is where the curve, linear in log10(lr) between grid points, crosses ``best + tolerance``, so
    grids of different spacing measure the same curve alike; a range that reaches the grid's end stops
    there (the search extends a curve that has not risen at an edge, :func:`edge_extension`).
    """
    best = best_setting(curve)
    if not math.isfinite(best.gap):  # every run of the curve diverged: no range is robust
        return 0.0, best.forget_lr, best.forget_lr
    threshold = best.gap + tolerance
    logs = [math.log10(p.forget_lr) for p in curve]
    index = [p.forget_lr for p in curve].index(best.forget_lr)

    def end(step: int) -> float:
        i = index
        while 0 <= i + step < len(curve) and curve[i + step].gap <= threshold:
            i += step
        if not 0 <= i + step < len(curve):
            return logs[i]
        inside, outside = curve[i], curve[i + step]
        return logs[i] + (logs[i + step] - logs[i]) * (threshold - inside.gap) / (outside.gap - inside.gap)

    low, high = end(-1), end(+1)
    return high - low, 10 ** low, 10 ** high


def open_edges(curve: Sequence[GridPoint], tolerance: float = DEFAULT_TOLERANCE) -> List[GridPoint]:
    """The end points of the curve whose gap is within ``tolerance`` of its best: the curve has not risen
    there, so the grid may cut off the best point or the robust range (lowest gap first)."""
    best = best_setting(curve)
    if not math.isfinite(best.gap):  # every run diverged: lower lrs are not searched
        return [curve[0]]
    ends = [curve[0]] if len(curve) == 1 else [curve[0], curve[-1]]
    return sorted((p for p in ends if p.gap <= best.gap + tolerance), key=lambda p: p.gap)


def rises_at_both_ends(curve: Sequence[GridPoint], tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether the gap at both ends of the grid exceeds the curve's best by more than ``tolerance``."""
    return not open_edges(curve, tolerance)


def edge_extension(curve: Sequence[GridPoint], step_decades: float, tolerance: float = DEFAULT_TOLERANCE,
                   anchor: Optional[float] = None) -> Optional[float]:
    """The next forget lr to run while the curve has not risen at an edge of its grid, else None.

    It lies ``step_decades`` beyond that edge (the lower-gap one when both are open) on the log grid
    through ``anchor`` (default: the edge itself), rounded as :func:`log_grid` rounds, so an extension of
    ``log_grid(1e-5, 1e-3, 5)`` is 1e-2, not a rounding error away from it.
    """
    edges = open_edges(curve, tolerance)
    if len(curve) < 2 or not edges:
        return None
    edge = edges[0]
    direction = -1 if edge.forget_lr == curve[0].forget_lr else 1
    anchor = edge.forget_lr if anchor is None else anchor
    steps = round(math.log10(edge.forget_lr / anchor) / step_decades) + direction
    return float(f"{anchor * 10 ** (steps * step_decades):.3g}")


def search(grid: MethodGrid, gaps_at: Callable[[Sequence[Tuple[float, float]]], List[float]], max_extensions: int,
           log: Callable[[str], None] = print) -> List[GridPoint]:
    """Run ``grid`` (``gaps_at([(forget_lr, retain_lr), ...])`` runs a batch of independent settings and
    returns their gaps), then, while the forget-lr curve at the best retain lr has not risen by more than
    the tolerance at an edge, one more forget lr a grid step beyond that edge (at most ``max_extensions``)."""
    settings = [(lr, retain_lr) for retain_lr in (grid.retain_lrs or (TIED,)) for lr in grid.forget_lrs]
    points = [GridPoint(lr, retain_lr, gap) for (lr, retain_lr), gap in zip(settings, gaps_at(settings))]
    lrs = grid.forget_lrs
    spacing = math.log10(lrs[-1] / lrs[0]) / (len(lrs) - 1) if len(lrs) > 1 else 1.0
    for _ in range(max_extensions):
        best = best_setting(points)
        lr = edge_extension(curve_at(points, best.retain_lr), spacing, anchor=lrs[0])
        if lr is None:
            break
        log(f"{grid.method}/{grid.optim}: the curve has not risen at an edge of its grid, adding forget lr {lr:g}")
        points.append(GridPoint(lr, best.retain_lr, gaps_at([(lr, best.retain_lr)])[0]))
    return points


@dataclass
class CurveReport:
    """What a benchmark reports for one method x optimizer."""
    method: str
    optim: str
    best_forget_lr: float
    best_retain_lr: float
    search_gap: float
    robustness_decades: float
    robust_range: Tuple[float, float]
    searched_both_ends: bool
    curve: List[Tuple[float, float]] = field(default_factory=list)  # (forget lr, gap) at the best retain lr

    def as_dict(self) -> dict:
        return asdict(self)


def report_curve(method: str, optim: str, points: Sequence[GridPoint],
                 tolerance: float = DEFAULT_TOLERANCE) -> CurveReport:
    """Best setting, robustness figure and forget-lr curve (at the best retain lr) of a searched grid."""
    best = best_setting(points)
    curve = curve_at(points, best.retain_lr)
    decades, low, high = robustness_width(curve, tolerance)
    return CurveReport(method, optim, best.forget_lr, best.retain_lr, best.gap, decades, (low, high),
                       rises_at_both_ends(curve, tolerance), [(p.forget_lr, p.gap) for p in curve])


def seed_summary(per_seed: Sequence[Mapping[str, float]], keys: Sequence[str]) -> Dict[str, float]:
    """Mean and population std (the research code's) of each metric over seeds, and ``avg_std``."""
    summary: Dict[str, float] = {}
    for key in keys:
        values = [run[key] for run in per_seed]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.pstdev(values)
    summary["avg_std"] = statistics.fmean(summary[f"{key}_std"] for key in keys)
    return summary


def plot_curves(reports: Sequence[CurveReport], path: Path, ylabel: str, title: str) -> None:
    """One panel per method, gap against forget lr (log axis) for each optimizer, best points marked."""
    ensure_writable_plot(str(path))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(report.method for report in reports))
    most = max(sum(r.method == method for r in reports) for method in methods)
    crowded = most > 5  # the legend goes beside the axes, and more than 10 curves need 20 colours
    figure, axes = plt.subplots(1, len(methods), figsize=((6.4 if crowded else 4.2) * len(methods), 3.4),
                                squeeze=False)
    for axis, method in zip(axes[0], methods):
        if most > 10:
            axis.set_prop_cycle(color=plt.cm.tab20.colors)
        for report in (r for r in reports if r.method == method):
            lrs, gaps = zip(*report.curve)
            retain = "tied" if report.best_retain_lr == TIED else f"{report.best_retain_lr:g}"
            line, = axis.plot(lrs, gaps, marker="o", label=f"{report.optim} (retain lr {retain})")
            axis.plot([report.best_forget_lr], [report.search_gap], marker="*", markersize=14,
                      color=line.get_color())
        axis.set_xscale("log")
        axis.set_title(method)
        axis.set_xlabel("forget learning rate")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        if crowded:
            axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            axis.legend(fontsize=8)
    figure.suptitle(textwrap.fill(title, 40 * len(methods)), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def render_tables(methods: Sequence[Mapping[str, object]], metrics: Sequence[str], cell: str = ".2f",
                  spread: Tuple[str, str] = ("avg_std", "Avg std"), label: str = "method") -> str:
    """Markdown tables of method records (:func:`report_curve` fields plus ``avg_gap``, ``seed_mean``,
    ``per_seed``, ``tied_lrs``, ``grid_size`` and the ``spread`` key): the best setting of each method x
    optimizer with its metrics over seeds, then each forget-lr curve on the search seed."""
    key, heading = spread
    lines = [f"| {label} | optim | forget lr | retain lr | seeds | {' | '.join(metrics)} | Avg Gap | {heading} | "
             "robust decades | grid (points) | both ends searched |",
             "|---|---|---:|---:|---:|" + "---|" * len(metrics) + "---:|---:|---:|---:|---|"]
    for m in methods:
        mean = m["seed_mean"]
        cells = [f"{mean[k]:{cell}}+-{mean[k + '_std']:{cell}}" for k in metrics]
        lines.append(f"| {m['method']} | {m['optim']} | {m['best_forget_lr']:g} | {_retain(m)} | {len(m['per_seed'])} | "
                     + " | ".join(cells) + f" | {gap_text(m['avg_gap'])} | {m[key]:.2f} | "
                     f"{m['robustness_decades']:.2f} | {m['grid_size']} | {'yes' if m['searched_both_ends'] else 'no'} |")
    lines += ["", f"| {label} | optim | retain lr | gap at each forget lr (search seed) |", "|---|---|---:|---|"]
    for m in methods:
        curve = ", ".join(f"{lr:g}: {gap_text(gap)}" for lr, gap in m["curve"])
        lines.append(f"| {m['method']} | {m['optim']} | {_retain(m)} | {curve} |")
    return "\n".join(lines)


def _retain(record: Mapping[str, object]) -> str:
    return "tied" if record["tied_lrs"] else f"{record['best_retain_lr']:g}"


def reading(methods: Sequence[Mapping[str, object]], original_gap: float, reference: str,
            spread: str = "avg_std", unmet: Sequence[str] = ()) -> str:
    """A plain-language reading of method records, whichever way the numbers fall.

    A difference of best gaps no larger than the larger spread over seeds (``spread``) of the two is called
    seed noise; a curve that has not risen at an edge of its grid is called not fully searched; a best
    gap no lower than the original model's (``original_gap``) is no better than doing nothing.
    """
    lines = []
    if unmet:
        lines.append(f"The setting misses the design's criteria ({', '.join(unmet)}): the comparison below "
                     f"may not discriminate.")
    lines.append(f"Doing nothing (the original model) has average gap {original_gap:.2f} to {reference}.")
    by_method: Dict[str, List[Mapping[str, object]]] = {}
    for record in methods:
        by_method.setdefault(record["method"], []).append(record)
    for method, all_records in by_method.items():
        records = [r for r in all_records if math.isfinite(r["avg_gap"])]
        parts = [f"{r['optim']} {r['avg_gap']:.2f} (spread over seeds {r[spread]:.2f}, within {DEFAULT_TOLERANCE:g} "
                 f"points of its best over {r['robustness_decades']:.2f} decades of forget lr)" for r in records]
        text = f"{method}: best average gap " + "; ".join(parts) + "." if records else f"{method}:"
        failed = [r["optim"] for r in all_records if not math.isfinite(r["avg_gap"])]
        if failed:
            text += f" Diverged (a NaN or infinite loss) at its best setting on some seed: {', '.join(failed)}."
        if not records:
            lines.append(text)
            continue
        ranked = sorted(records, key=lambda r: r["avg_gap"])
        best = ranked[0]
        for other in ranked[1:]:
            noise = max(best[spread], other[spread])
            difference = other["avg_gap"] - best["avg_gap"]
            if difference <= noise:
                text += f" {best['optim']} vs {other['optim']}: the difference ({difference:.2f}) is within seed " \
                        f"noise ({noise:.2f})."
            else:
                text += f" {best['optim']} is closer to {reference} than {other['optim']} by {difference:.2f}."
        # a flat curve of models no better than the original is not robustness
        useful = [r for r in records if r["avg_gap"] < original_gap]
        if len(useful) > 1 and len({r["robustness_decades"] for r in useful}) > 1:
            text += f" {max(useful, key=lambda r: r['robustness_decades'])['optim']} is the least lr-sensitive."
        no_better = [r["optim"] for r in records if r["avg_gap"] >= original_gap]
        if no_better:
            text += f" No better than doing nothing: {', '.join(no_better)}."
        unsearched = [r["optim"] for r in records if not r["searched_both_ends"]]
        if unsearched:
            text += f" Curve not risen at an edge of its grid (not fully searched): {', '.join(unsearched)}."
        lines.append(text)
    return "\n".join(lines)


def search_then_seeds(grid: MethodGrid, unlearn: Callable[[Sequence[Tuple[float, float, int]]], List[Mapping]],
                      gap: Callable[[Mapping], float], seeds: Sequence[int], search_seed: int, max_extensions: int,
                      log: Callable[[str], None] = print) -> Tuple[CurveReport, List[GridPoint], Dict[int, Mapping]]:
    """One method x optimizer of a benchmark: :func:`search` on ``search_seed`` (``unlearn(settings)`` runs a batch
    of ``(forget_lr, retain_lr, seed)`` and returns each run's metrics, ``gap(metrics)`` is one finished run's
    gap; a diverged run's is :data:`DIVERGED_GAP`), then the best setting on every seed. Returns the curve
    report, every grid point and the metrics per seed."""
    points = search(grid, lambda lrs: [DIVERGED_GAP if diverged(m) else gap(m)
                                       for m in unlearn([(lr, retain, search_seed) for lr, retain in lrs])],
                    max_extensions, log)
    report = report_curve(grid.method, grid.optim, points)
    per_seed = dict(zip(seeds, unlearn([(report.best_forget_lr, report.best_retain_lr, seed) for seed in seeds])))
    return report, points, per_seed


def best_line(report: CurveReport, avg_gap: float, seeds: int) -> str:
    """The log line of a searched method x optimizer."""
    retain = "tied" if report.best_retain_lr == TIED else lr_text(report.best_retain_lr)
    return (f"{report.method}/{report.optim}: best forget lr {lr_text(report.best_forget_lr)}, retain lr {retain}, "
            f"avg gap {gap_text(avg_gap)} over {seeds} seeds, robust over {report.robustness_decades:.2f} decades")


def lr_text(value: float) -> str:
    """A learning rate as run folders and logs name it (``1e-05``, ``0.000316``)."""
    return f"{value:g}"


def run_name(grid: "MethodGrid", forget_lr: float, retain_lr: float) -> str:
    """The folder of one grid point's runs: ``<method>_<optim>_lr<forget lr>[_rlr<retain lr>]`` (no retain lr
    when :data:`TIED`)."""
    tied = "" if retain_lr == TIED else f"_rlr{lr_text(retain_lr)}"
    return f"{grid.method.lower()}_{grid.optim}_lr{lr_text(forget_lr)}{tied}"


def setting_checks(checks: Mapping[str, Tuple[float, bool, str]]) -> Dict[str, object]:
    """The record of a benchmark's setting checks (name -> ``(value, met, description)``): the values and
    whether each is met, and one printed line per check."""
    return {"checks": {name: {"value": value, "met": met} for name, (value, met, _) in checks.items()},
            "lines": [f"{'met' if met else 'NOT MET'}: {text}" for _, met, text in checks.values()]}


def config_record(config: object) -> Dict[str, object]:
    """A benchmark's frozen config dataclass as JSON-ready fields (its thresholds mapping as a dict)."""
    record = asdict(config)
    record["thresholds"] = dict(config.thresholds)
    return record


def write_results(path: Path, payload: Mapping[str, object]) -> None:
    """The benchmark's results JSON, written atomically."""
    atomic_write_json(dict(payload), path)


# -- the command line of a benchmark script ------------------------------------------------------------


def benchmark_parser(description: str, presets: Mapping[str, object], default: str) -> argparse.ArgumentParser:
    """The flags every evidence-benchmark script takes: ``--preset``, ``--out``, ``--device``, ``--results``,
    ``--threads``, ``--jobs`` and the launcher's (:func:`common.launch.add_launcher_arguments`; a script adds
    its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=sorted(presets), default=default)
    parser.add_argument("--out", help="work folder (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--results", help="also copy the results and plots to benchmarks/results/<NAME>*")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                        help="torch threads of this process, or of each worker with --jobs > 1")
    parser.add_argument("--jobs", type=int, default=1, help="independent runs at a time, one process each")
    add_launcher_arguments(parser)
    return parser


def run_benchmark(args: argparse.Namespace, presets: Mapping[str, Any], benchmark: Callable[..., Any],
                  report: Callable[[Mapping[str, object]], str], files: Sequence[str], results_dir: Path,
                  overrides: Sequence[str] = ("out", "device")) -> Dict[str, object]:
    """A benchmark script's run: the preset with the flags of ``overrides`` that were given, ``benchmark(config,
    log, jobs=, threads=).run()`` with a log of elapsed seconds (its runs on the ``--launcher``; failed runs
    end it with their logs, status 1), then the printed :func:`report`; with
    ``--results NAME`` the work folder's ``files`` are copied to ``results_dir`` (``results.json`` as
    ``NAME.json``, any other file as ``NAME_<file>``). Returns the results record."""
    import torch

    torch.set_num_threads(args.threads)
    config = replace(presets[args.preset], **{key: getattr(args, key) for key in overrides
                                               if getattr(args, key) is not None})
    started = time.time()

    def log(text: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {text}", flush=True)

    try:
        with using(launcher_from_args(args, Path(config.out), args.jobs, args.threads, log)):
            results = benchmark(config, log, jobs=args.jobs, threads=args.threads).run()
    except DryRun:  # the first batch's jobs were printed; later batches depend on its results
        raise SystemExit(0) from None
    except UsageError as error:  # a bad launcher setting, or runs that failed (each one's log and last lines)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, RunsFailed) else 2) from None
    print()
    print(report(results))
    log("done; " + ", ".join(f"{config.out}/{name}" for name in files))
    if args.results:
        for name in files:
            target = f"{args.results}.json" if name == "results.json" else f"{args.results}_{name}"
            shutil.copyfile(Path(config.out) / name, results_dir / target)
    return results
