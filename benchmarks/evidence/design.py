"""The evidence design every unlearning benchmark shares: grids, search, gaps over seeds, sensitivity.

A benchmark can only support or refute DualOptim's claims (a lower gap to the reference model, less
sensitivity to the learning rate and the seed) when its setting can discriminate; this module holds the
parts of the design that do not depend on the modality (pure functions: :mod:`benchmarks.evidence.engine`
runs them, :mod:`benchmarks.evidence.report` prints and draws them):

* **grids**: every optimizer family's forget-lr axis has the same resolution, :data:`POINTS_PER_DECADE`
  log-spaced points per decade over its family's range (:func:`decade_grid`), so robust widths compare
  alike; a curve that has not risen (by more than the tolerance over its best) at an edge of its grid has
  not been searched there, and :func:`edge_extension` names the next value beyond that edge;
* **the search**: a 2-D grid of (forget lr, retain lr) points on one seed, the best setting is the
  lowest gap (:func:`best_setting`), the curve reported is the forget-lr axis at that setting's retain
  lr (:func:`curve_at`);
* **gaps over seeds** (:func:`seed_gaps`): ``avg_gap`` ("Avg Gap") is the gap of the seed means, as the
  research code's ``parse_result.py`` computes it; the mean of the per-seed gaps (a larger number: the
  mean of absolute values is at least the absolute value of the mean) and their population std are
  kept as ``mean_seed_gap`` and ``gap_std``;
* **sensitivity**: the width in decades of forget lr of the contiguous range around a curve's best point
  whose gap stays within ``tolerance`` of that best (:func:`robustness_width`); a curve whose gap changes
  by no more than its seed spread over its whole grid is *insensitive* (:func:`insensitive`): there the forget
  lr has no effect, and a wide range says nothing about robustness;
* **seeds**: mean and std of every metric over seeds, and the mean of the stds (:func:`seed_summary`).

A run that stopped on a NaN or infinite loss (:mod:`common.evidence_runs`) has the gap :data:`DIVERGED_GAP`:
the search never picks it, a robust range ends before it, a curve counts as risen at it, and a setting that
diverges on any seed has that average gap; tables print it as ``diverged``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: A curve point is within this many gap points of the curve's best (the issue's robustness figure).
DEFAULT_TOLERANCE = 2.0

#: The gap of a run that diverged (stopped on a non-finite loss): worse than any finished run.
DIVERGED_GAP = math.inf


def diverged(record: Mapping[str, object]) -> bool:
    """Whether a run's record (:meth:`common.evidence_runs.Runner.records`) is that of a diverged run."""
    return bool(record.get("diverged"))


def seed_gaps(per_seed: Sequence[Mapping[str, object]], keys: Sequence[str],
              gap: Callable[[Mapping[str, float]], float]) -> Dict[str, float]:
    """The gaps of one setting over its seeds (``gap(metrics)`` is the gap of one metrics record):

    * ``avg_gap`` = ``gap(mean over seeds of each metric of keys)``, the gap of the seed means (the
      research code's ``parse_result.py``: ``mean_m |mean_s x_sm - ref_m|``);
    * ``mean_seed_gap`` = ``mean_s gap(run_s)`` (``>= avg_gap`` when ``gap`` is a mean of absolute
      differences), and ``gap_std``, the population std of the per-seed gaps.

    Each is :data:`DIVERGED_GAP` when a seed diverged (``gap_std`` then NaN).
    """
    if any(diverged(run) for run in per_seed):
        return {"avg_gap": DIVERGED_GAP, "mean_seed_gap": DIVERGED_GAP, "gap_std": math.nan}
    gaps = [gap(run) for run in per_seed]
    mean = {key: statistics.fmean(run[key] for run in per_seed) for key in keys}
    return {"avg_gap": gap(mean), "mean_seed_gap": statistics.fmean(gaps), "gap_std": statistics.pstdev(gaps)}


def gap_text(gap: float) -> str:
    """A gap as tables and logs print it: two decimals, or ``diverged``."""
    return f"{gap:.2f}" if math.isfinite(gap) else "diverged"


def log_grid(low: float, high: float, points: int) -> List[float]:
    """``points`` log-spaced values from ``low`` to ``high`` (both included), rounded to 3 significant digits."""
    if points < 2 or not 0 < low < high:
        raise ValueError(f"log_grid needs 0 < low < high and points >= 2, got {low}, {high}, {points}")
    step = math.log10(high / low) / (points - 1)
    return [float(f"{low * 10 ** (step * i):.3g}") for i in range(points)]


#: the resolution of every forget-lr axis: log-spaced points per decade (one point every 0.33 decade)
POINTS_PER_DECADE = 3


def decade_grid(low: float, high: float, per_decade: int = POINTS_PER_DECADE) -> Tuple[float, ...]:
    """:func:`log_grid` from ``low`` to ``high`` at ``per_decade`` points per decade (the count rounded to
    the nearest whole point), e.g. ``decade_grid(1e-3, 1e-1)`` = 1e-3, 2.15e-3, 4.64e-3, ..., 1e-1 (7 points)."""
    points = round(math.log10(high / low) * per_decade) + 1
    return tuple(log_grid(low, high, points))


def spacing_decades(lrs: Sequence[float]) -> float:
    """The step of a log-spaced grid in decades (1 for a single point)."""
    return math.log10(lrs[-1] / lrs[0]) / (len(lrs) - 1) if len(lrs) > 1 else 1.0


#: the recorded retain lr of a grid whose single optimizer runs at the forget lr for both objectives
TIED = 0.0


@dataclass(frozen=True)
class MethodGrid:
    """The searched learning rates of one method x optimizer.

    ``retain_lrs=None`` ties the retain lr to the forget lr: a single optimizer that serves both objectives
    (SFR-on under ``sgd``, an LLM loss under ``adam``) has one lr, which is the whole search; its points
    record the retain lr as :data:`TIED`.

    ``default_lr`` marks a learning-rate-free forget optimizer (``dual_prodigy``, ``dual_sf``, ...): its
    package's default lr, of which ``forget_lrs`` are multiples; the engine also runs
    that default on every seed with no forget-lr search (the "no search" record).
    """
    method: str
    optim: str
    forget_lrs: Tuple[float, ...]
    retain_lrs: Optional[Tuple[float, ...]]
    default_lr: Optional[float] = None

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
    spacing = spacing_decades(lrs)
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


def insensitive(curve: Sequence[Tuple[float, float]], spread: float) -> bool:
    """Whether the forget lr has no effect on a curve ``[(forget lr, gap), ...]``: over its whole grid its
    gap changes (max - min) by no more than ``spread``, the std over seeds of the gap at its best setting
    (a curve that does not change at all is insensitive whatever the spread). A diverged point is an effect;
    a curve of one point, or with no spread measured (NaN), is not called insensitive."""
    gaps = [gap for _, gap in curve]
    if len(gaps) < 2 or not math.isfinite(spread) or not all(math.isfinite(g) for g in gaps):
        return False
    return max(gaps) - min(gaps) <= spread


def response_range(curve: Sequence[Tuple[float, float]]) -> float:
    """How much the forget lr moves the gap: max - min of a curve's gaps ``[(forget lr, gap), ...]`` over its
    finished points (a diverged point is left out: it is an effect, which :func:`insensitive` counts)."""
    gaps = [gap for _, gap in curve if math.isfinite(gap)]
    return max(gaps) - min(gaps) if gaps else math.nan


def seed_summary(per_seed: Sequence[Mapping[str, float]], keys: Sequence[str]) -> Dict[str, float]:
    """Mean and population std (the research code's) of each metric over seeds, and ``avg_std``."""
    summary: Dict[str, float] = {}
    for key in keys:
        values = [run[key] for run in per_seed]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.pstdev(values)
    summary["avg_std"] = statistics.fmean(summary[f"{key}_std"] for key in keys)
    return summary


#: points of a trajectory recorded every N optimizer steps, after its start (the original): N is this fraction of
#: the run's steps, so the last point is the finished model
TRAJECTORY_POINTS = 5


def rerun_check(last: Mapping[str, float], finished: Mapping[str, float], keys: Sequence[str],
                tolerance: float = 1e-6) -> Dict[str, object]:
    """Whether a trajectory recorded by making a finished run again ends where that run ended: the largest
    ``|last[k] - finished[k]|`` over the ``keys`` both hold (``max_abs_difference``) is at most ``tolerance``
    (``matches_finished_run``; the same flags and seed on CPU give the same numbers, another thread count may
    move a floating-point sum in its last bits)."""
    difference = max(abs(last[key] - finished[key]) for key in keys if key in last and key in finished)
    return {"matches_finished_run": difference <= tolerance, "max_abs_difference": difference}


def trajectory_summary(per_seed: Sequence[Sequence[Mapping[str, float]]], keys: Sequence[str]) -> Dict[str, object]:
    """Mean and population std over seeds of each metric along a run (the paper's Figure 1).

    ``per_seed[s]`` is seed ``s``'s trajectory, ``[{"progress": p, key: value, ...}, ...]`` at the same
    progress points on every seed (an epoch, or an optimizer step). Returns ``points`` (progress, then
    ``key`` and ``key_std`` at each), and per key ``end_std`` (the std at the last point) and ``mean_std``
    (the std's mean over the points after the start: at progress 0 every seed is the same original model
    on its own split, so its spread is that of the splits, not of the unlearning).
    """
    lengths = {len(trajectory) for trajectory in per_seed}
    if len(lengths) != 1:
        raise ValueError(f"trajectory_summary: the seeds' trajectories differ in length ({sorted(lengths)})")
    points = []
    for step in zip(*per_seed):
        progress = {run["progress"] for run in step}
        if len(progress) != 1:
            raise ValueError(f"trajectory_summary: the seeds' progress points differ ({sorted(progress)})")
        point: Dict[str, float] = {"progress": progress.pop()}
        for key in keys:
            values = [run[key] for run in step]
            point[key], point[f"{key}_std"] = statistics.fmean(values), statistics.pstdev(values)
        points.append(point)
    moving = points[1:] or points
    return {"seeds": len(per_seed), "points": points,
            "end_std": {key: points[-1][f"{key}_std"] for key in keys},
            "mean_std": {key: statistics.fmean(p[f"{key}_std"] for p in moving) for key in keys}}


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
    """A benchmark's frozen config dataclass as JSON-ready fields (a thresholds mapping as a dict)."""
    record = asdict(config)
    if "thresholds" in record:
        record["thresholds"] = dict(config.thresholds)
    return record


