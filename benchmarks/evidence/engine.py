"""The one loop of every evidence benchmark: :func:`run`.

A modality (image classification, DDPM, TOFU) supplies what only it knows, as an object with:

* ``config``: a frozen dataclass with ``out`` (work folder), ``grids`` (:class:`MethodGrid` per method x
  optimizer), ``seeds``, ``search_seed``, ``max_extensions`` and ``stability`` (record trajectories);
* ``metrics`` (reported per seed), ``gap_metrics`` (those the gap reads; ``avg_std`` is their mean std),
  ``stability_metrics``, ``reference_name`` (e.g. ``"Retrain"``), ``progress`` (the stability plot's x label),
  ``gap_label`` (the gap plot's y label), ``label`` (the tables' first column) and ``cell`` (their format);
* ``prepare(runner, log)``: its reference runs (the original, Retrain) through ``runner``; returns the
  start of the results record, with at least ``reference`` (metric -> value), ``original_gap`` (the
  gap of doing nothing) and ``setting`` (:func:`benchmarks.evidence.design.setting_checks`);
* ``unlearn_call(method, optim, forget_lr, retain_lr, seed)``: the :class:`common.evidence_runs.Call` of one
  unlearning setting (``retain_lr`` :data:`~benchmarks.evidence.design.TIED`: one optimizer at ``forget_lr``),
  built from its method table (:class:`Method`), and ``read(call)``: that run's metrics;
* ``gap(metrics)``: the gap of one metrics record (a run's, or a mean over seeds) to the reference;
* ``trajectory_call(method, optim, call)`` (None where the method keeps no intermediate model) and
  ``read_trajectory(call)``: the metrics along a finished run, ``[{"progress": p, metric: value}, ...]``;
* ``finish(results)``: its own fields and files (speeds, sample grids), and ``title(results)``: the plots'
  caption.

:func:`run` owns the rest, the same for every modality: per method x optimizer the learning-rate search
on ``search_seed`` with its edge extension (:func:`benchmarks.evidence.design.search`), the best setting
on every seed, the gaps over seeds (:func:`benchmarks.evidence.design.seed_gaps`: "Avg Gap" is the gap of
the seed means), sensitivity (robust width, :func:`~benchmarks.evidence.design.insensitive`), the
trajectories at the best setting on every seed, diverged runs (their gap is
:data:`~benchmarks.evidence.design.DIVERGED_GAP`), resume (a finished call is read back, never run again),
``--jobs`` (a :class:`common.evidence_runs.Runner` pool), and the results JSON and plots, rewritten after
every method x optimizer: ``results.json``, ``gap_vs_lr.png``, ``lr_maps.png`` and ``stability.png``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.evidence import report as reporting
from benchmarks.evidence.design import (DIVERGED_GAP, MethodGrid, best_line, config_record, diverged, insensitive,
                                        report_curve, response_range, search, seed_gaps, seed_summary,
                                        trajectory_summary)
from common.errors import UsageError
from common.evidence_runs import Call, Runner, RunsFailed
from common.io import atomic_write_json
from common.launch import DryRun, add_launcher_arguments, launcher_from_args, using

#: the files :func:`run` writes into the work folder (a plot only where it has something to draw)
FILES = ("results.json", "gap_vs_lr.png", "lr_maps.png", "stability.png")


@dataclass(frozen=True)
class Method:
    """One row of a modality's method table: what a display name (``"SalUn"``) means there.

    ``script`` is the entry script that runs it, ``flags`` the flags that make the method (``{...}``
    placeholders, such as a mask's folder, are the modality's to fill), ``kind`` the modality's config kind
    (image classification: ``"epochs"`` or ``"steps"``; DDPM: the config file; TOFU: the schedule) and
    ``optim_flags`` the flags that depend on the optimizer (DDPM's ``--dual``, SFR-on's forget alpha).
    """
    script: str
    flags: Tuple[str, ...]
    kind: str
    optim_flags: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)

    def argv(self, optim: str) -> Tuple[str, ...]:
        """The method's flags under ``optim``."""
        return self.flags + tuple(self.optim_flags.get(optim, ()))


class Modality:
    """The defaults of a modality (see the module docstring for what a subclass supplies): Retrain as the
    reference, two-decimal tables, no trajectory and no files of its own."""

    reference_name = "Retrain"
    label = "method"
    cell = ".2f"
    progress = "epoch"

    def trajectory_call(self, method: str, optim: str, call: Call) -> Optional[Call]:
        """The call that records the metrics along a finished run, or None where none is kept."""
        return None

    def read_trajectory(self, call: Call) -> List[Dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} records no trajectory")

    def finish(self, results: Dict[str, Any]) -> None:
        """Add the modality's own fields and files to the results (called before every save)."""


def _records(modality: Any, runner: Runner, grid: MethodGrid,
             settings: Sequence[Tuple[float, float, int]]) -> Tuple[List[Call], List[Dict[str, Any]]]:
    calls = [modality.unlearn_call(grid.method, grid.optim, *setting) for setting in settings]
    return calls, runner.records(calls, modality.read, modality.metrics)


def _gap(modality: Any, record: Mapping[str, Any]) -> float:
    return DIVERGED_GAP if diverged(record) else modality.gap(record)


def evaluate_grid(modality: Any, runner: Runner, grid: MethodGrid, log: Callable[[str], None]) -> Dict[str, Any]:
    """One method x optimizer: the search, the best setting on every seed, its gaps, sensitivity and
    (``config.stability``) trajectories. Returns its record (the ``methods`` entries of the results JSON)."""
    config = modality.config
    points = search(grid, lambda lrs: [_gap(modality, r) for r in _records(
        modality, runner, grid, [(lr, retain, config.search_seed) for lr, retain in lrs])[1]],
        config.max_extensions, log)
    curve = report_curve(grid.method, grid.optim, points)
    calls, per_seed = _records(modality, runner, grid,
                               [(curve.best_forget_lr, curve.best_retain_lr, seed) for seed in config.seeds])
    gaps = seed_gaps(per_seed, modality.metrics, modality.gap)
    summary = seed_summary(per_seed, modality.metrics)
    summary["avg_std"] = sum(summary[f"{k}_std"] for k in modality.gap_metrics) / len(modality.gap_metrics)
    record = {**curve.as_dict(), "tied_lrs": grid.retain_lrs is None, "grid_size": len(points), **gaps,
              "avg_std": summary["avg_std"], "insensitive": insensitive(curve.curve, gaps["gap_std"]),
              "response_range": response_range(curve.curve), "default_lr": grid.default_lr,
              "seed_mean": summary, "per_seed": {str(s): r for s, r in zip(config.seeds, per_seed)},
              "grid": [asdict(p) for p in points], "stability": None, "no_search": None}
    if getattr(config, "stability", False):
        record["stability"] = stability(modality, runner, grid, calls, per_seed)
    log(best_line(curve, gaps["avg_gap"], len(config.seeds)))
    if grid.default_lr is not None:
        record["no_search"] = no_search(modality, runner, grid, curve.best_retain_lr, log)
    return record


def no_search(modality: Any, runner: Runner, grid: MethodGrid, retain_lr: float,
              log: Callable[[str], None]) -> Dict[str, Any]:
    """A learning-rate-free optimizer at its default forget lr on every seed, with no forget-lr search (at
    the retain lr its search chose: the claim tested is about the forget lr): its gaps over seeds."""
    seeds = modality.config.seeds
    _, per_seed = _records(modality, runner, grid, [(grid.default_lr, retain_lr, seed) for seed in seeds])
    gaps = seed_gaps(per_seed, modality.metrics, modality.gap)
    log(f"{grid.method}/{grid.optim}: no search (default forget lr {grid.default_lr:g}), avg gap "
        f"{gaps['avg_gap']:.2f} over {len(seeds)} seeds")
    return {"forget_lr": grid.default_lr, "retain_lr": retain_lr, **gaps,
            "per_seed": {str(s): r for s, r in zip(seeds, per_seed)}}


def stability(modality: Any, runner: Runner, grid: MethodGrid, calls: Sequence[Call],
              per_seed: Sequence[Mapping[str, Any]]) -> Optional[Dict[str, object]]:
    """The metrics along the best setting's runs, mean and std over the seeds that finished
    (:func:`benchmarks.evidence.design.trajectory_summary`); None where the method keeps no intermediate
    model or every seed diverged."""
    finished = [call for call, record in zip(calls, per_seed) if not diverged(record)]
    trajectory_calls = [modality.trajectory_call(grid.method, grid.optim, call) for call in finished]
    if not trajectory_calls or any(call is None for call in trajectory_calls):
        return None
    runner.run(trajectory_calls)
    return trajectory_summary([modality.read_trajectory(call) for call in trajectory_calls],
                              modality.stability_metrics)


def save(modality: Any, results: Dict[str, Any], runner: Runner, seconds: float) -> None:
    """The results JSON and the plots of everything run so far."""
    out = Path(modality.config.out)
    results["seconds"] = dict(runner.seconds)
    results["wall_clock_s_this_invocation"] = round(seconds, 1)
    modality.finish(results)
    atomic_write_json(dict(results), out / "results.json")
    title = modality.title(results)
    reporting.plot_curves(results["methods"], out / "gap_vs_lr.png", modality.gap_label, title,
                          results["original_gap"])
    reporting.plot_lr_maps(results["methods"], out / "lr_maps.png", title)
    reporting.plot_stability(results["methods"], out / "stability.png", modality.stability_metrics,
                             results["reference"], modality.reference_name, modality.progress, title)


def run(modality: Any, log: Callable[[str], None] = print, jobs: int = 1,
        threads: Optional[int] = None) -> Dict[str, Any]:
    """Every run of the benchmark (finished ones are read back); returns the results record."""
    config = modality.config
    started = time.time()
    with Runner(Path(config.out), jobs, threads) as runner:
        results: Dict[str, Any] = {"config": config_record(config), **modality.prepare(runner, log), "methods": []}
        for line in results["setting"]["lines"]:
            log(line)
        for grid in config.grids:
            results["methods"].append(evaluate_grid(modality, runner, grid, log))
            save(modality, results, runner, time.time() - started)
    return results


def report_text(modality: Any, results: Mapping[str, Any], caption: str) -> str:
    """Everything a benchmark prints at its end: the caption (data, model, step budget, grids, seeds), the
    reference, the setting's checks, the tables, the stability table and the reading."""
    reference = ", ".join(f"{k} {v:.2f}" for k, v in results["reference"].items())
    unmet = [name for name, check in results["setting"]["checks"].items() if not check["met"]]
    parts = [caption, reporting.resolution_note(), f"reference ({modality.reference_name}): {reference}",
             *results["setting"]["lines"], "",
             reporting.render_tables(results["methods"], modality.metrics, modality.cell, modality.label)]
    table = reporting.no_search_table(results["methods"], modality.label)
    if table:
        parts += ["", "learning-rate-free optimizers at their default forget lr, no search (every seed):", table]
    table = reporting.stability_table(results["methods"], modality.stability_metrics, modality.label, modality.cell)
    if table:
        parts += ["", f"stability at the best settings (std over seeds along the run, per {modality.progress}):",
                  table]
    parts += ["", reporting.reading(results["methods"], results["original_gap"], modality.reference_name, unmet)]
    return "\n".join(parts)


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


def timed_log() -> Callable[[str], None]:
    """A log that prefixes each line with the seconds since its creation."""
    started = time.time()
    return lambda text: print(f"[{time.time() - started:7.1f}s] {text}", flush=True)


def copy_results(out: Path, files: Sequence[str], results_dir: Path, name: str) -> None:
    """The work folder's ``files`` (those that exist) as ``results_dir/NAME.json`` and ``NAME_<file>``."""
    for file in files:
        if (out / file).exists():
            target = f"{name}.json" if file == "results.json" else f"{name}_{file}"
            shutil.copyfile(out / file, results_dir / target)


def run_launched(args: argparse.Namespace, modality: Any, log: Callable[[str], None]) -> Dict[str, Any]:
    """:func:`run` of ``modality`` with its runs on the ``--launcher`` of ``args`` (and its ``--jobs``,
    ``--threads``). A dry run ends the script with status 0 once the first batch's jobs are printed (later
    batches depend on its results); a bad launcher setting ends it with status 2, failed runs with status 1,
    each after one ``error:`` report (a failed run's log path and last lines)."""
    try:
        with using(launcher_from_args(args, Path(modality.config.out), args.jobs, args.threads, log)):
            return run(modality, log, jobs=args.jobs, threads=args.threads)
    except DryRun:
        raise SystemExit(0) from None
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, RunsFailed) else 2) from None


def run_benchmark(args: argparse.Namespace, presets: Mapping[str, Any], modality: Callable[[Any], Any],
                  report: Callable[[Mapping[str, object]], str], results_dir: Path, extra_files: Sequence[str] = (),
                  overrides: Sequence[str] = ("out", "device")) -> Dict[str, object]:
    """A benchmark script's run: the preset with the flags of ``overrides`` that were given,
    :func:`run_launched` of ``modality(config)`` with a log of elapsed seconds, then the printed
    :func:`report`; with ``--results NAME`` the work folder's files (:data:`FILES` and ``extra_files``) are copied to ``results_dir``.
    Returns the results record."""
    import torch

    torch.set_num_threads(args.threads)
    config = replace(presets[args.preset], **{key: getattr(args, key) for key in overrides
                                               if getattr(args, key) is not None})
    log = timed_log()
    results = run_launched(args, modality(config), log)
    print()
    print(report(results))
    files = (*FILES, *extra_files)
    log("done; " + ", ".join(f"{config.out}/{name}" for name in files if (Path(config.out) / name).exists()))
    if args.results:
        copy_results(Path(config.out), files, results_dir, args.results)
    return results

