"""The evidence engine's one loop (benchmarks.evidence.engine.run) on a modality whose runs are arithmetic.

A fake entry script writes metrics that are a known function of its learning rates and seed, so every number
the engine reports can be computed by hand: the search and its edge extension, Avg Gap (the gap of the seed
means) beside the mean per-seed gap, a diverged setting, the trajectories, resume and the files.
"""
import json
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.evidence.design import MethodGrid, setting_checks
from benchmarks.evidence.engine import Method, report_text, run
from common.evidence_runs import Call
from common.io import atomic_write_json, read_json
from common.nonfinite import NonFiniteLoss

#: the fake modality's method table: "Flat" ignores its forget lr (its retain steps do the forgetting)
METHODS = {"Valley": Method("fake", ("--valley",), "epochs"), "Flat": Method("fake", ("--flat",), "epochs")}


def fake_unlearn(argument):
    """UA = 10 * |log10(forget lr) + 3| + seed offset (+-1), or a constant for Flat; RA = 1; diverges at lr >= 1.
    Writes its trajectory (UA along 2 epochs) beside its metrics."""
    method, forget_lr, retain_lr, seed, out = argument
    if forget_lr >= 1.0:
        raise NonFiniteLoss("the forget loss is nan at step 1 (lr 1)")
    offset = 1.0 if seed == 1 else -1.0
    ua = (5.0 if method == "Flat" else 10 * abs(math.log10(forget_lr) + 3)) + offset
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json([{"progress": 1, "UA": ua / 2, "RA": 1.0}, {"progress": 2, "UA": ua, "RA": 1.0}],
                      Path(out) / "trajectory.json")
    atomic_write_json({"UA": ua, "RA": 1.0}, Path(out) / "metrics.json")


@dataclass(frozen=True)
class FakeConfig:
    out: str
    grids: tuple
    seeds: tuple
    search_seed: int
    max_extensions: int
    stability: bool = True


class FakeModality:
    metrics = gap_metrics = stability_metrics = ("UA", "RA")
    reference_name = "Retrain"
    progress = "epoch"
    gap_label = "gap"
    label = "method"
    cell = ".2f"

    def __init__(self, config):
        self.config = config
        self.reference = {"UA": 0.0, "RA": 1.0}

    def prepare(self, runner, log):
        return {"setting": setting_checks({}), "reference": dict(self.reference), "original_gap": 20.0}

    def unlearn_call(self, method, optim, forget_lr, retain_lr, seed):
        out = Path(self.config.out) / f"{method}_{optim}_{forget_lr:g}_{retain_lr:g}" / f"seed{seed}"
        return Call("fake_benchmark:unlearn", (method, forget_lr, retain_lr, seed, str(out)), out, "metrics.json")

    def read(self, call):
        return read_json(call.save_dir / "metrics.json")

    def gap(self, metrics):  # mean over UA and RA of |x - reference|
        return (abs(metrics["UA"] - self.reference["UA"]) + abs(metrics["RA"] - self.reference["RA"])) / 2

    def trajectory_call(self, method, optim, call):
        return Call("fake_benchmark:unused", None, call.save_dir, "trajectory.json")

    def read_trajectory(self, call):
        return [{"progress": 0, "UA": 0.0, "RA": 1.0}] + read_json(call.save_dir / "trajectory.json")

    def finish(self, results):
        results["finished"] = True

    def title(self, results):
        return "fake benchmark"


@pytest.fixture
def fake_benchmark(monkeypatch):
    calls = []
    module = types.ModuleType("fake_benchmark")
    module.unlearn = lambda argument: calls.append(argument) or fake_unlearn(argument)
    monkeypatch.setitem(sys.modules, "fake_benchmark", module)
    return calls


def test_run_searches_extends_seeds_and_reports_the_gap_of_the_seed_means(tmp_path, fake_benchmark, monkeypatch):
    grids = (MethodGrid("Valley", "sgd", (1e-2, 1e-1), (0.01, 0.1)), MethodGrid("Flat", "dual", (1e-4, 1e-3), None),
             MethodGrid("Valley", "dual", (1e-1, 1.0), None))
    config = FakeConfig(str(tmp_path), grids, seeds=(1, 2), search_seed=1, max_extensions=1)
    results = run(FakeModality(config), log=lambda text: None)
    valley, flat, diverging = results["methods"]
    # search seed 1: UA = 10 |log10 lr + 3| + 1; the curve falls towards its low edge, so 1e-3 is added there
    assert [(p["forget_lr"], p["retain_lr"]) for p in valley["grid"]] == [
        (1e-2, 0.01), (1e-1, 0.01), (1e-2, 0.1), (1e-1, 0.1), (1e-3, 0.01)]
    assert valley["best_forget_lr"] == 1e-3 and valley["search_gap"] == pytest.approx(0.5)
    # seeds 1 and 2 at 1e-3: UA 1 and -1. Avg Gap: |mean UA| / 2 = 0; mean per-seed gap (1 + 1) / 2 / 2 = 0.5
    assert valley["avg_gap"] == pytest.approx(0.0) and valley["mean_seed_gap"] == pytest.approx(0.5)
    assert valley["gap_std"] == pytest.approx(0.0) and not valley["insensitive"]
    # Flat: gap 3 at every forget lr (one extension below the open edge too); its per-seed gaps are 3 and 2
    # (std 0.5), more than its change over the grid (0): insensitive
    assert flat["curve"] == [(1e-5, 3.0), (1e-4, 3.0), (1e-3, 3.0)] and flat["gap_std"] == pytest.approx(0.5)
    assert flat["insensitive"] and flat["best_forget_lr"] == 1e-5
    # lr 1 diverges: never best, its point's gap is infinite; the open low edge is extended to 1e-2 (gap 5.5)
    assert math.isinf(dict(diverging["curve"])[1.0]) and diverging["best_forget_lr"] == 0.01
    # trajectories at the best setting on both seeds: epoch 0, 1, 2
    stability = valley["stability"]
    assert [p["progress"] for p in stability["points"]] == [0, 1, 2] and stability["seeds"] == 2
    assert stability["end_std"]["UA"] == pytest.approx(1.0) and stability["mean_std"]["UA"] == pytest.approx(0.75)
    # the results JSON, the plots (a 2-D map: Valley/sgd searched two retain lrs) and the modality's own fields
    assert json.loads((tmp_path / "results.json").read_text())["methods"][0]["avg_gap"] == pytest.approx(0.0)
    assert results["finished"] and all((tmp_path / name).stat().st_size > 0
                                       for name in ("gap_vs_lr.png", "lr_maps.png", "stability.png"))
    text = report_text(FakeModality(config), results, "caption")
    assert "insensitive: the forget lr has no effect here" in text and "| Flat | dual | 1e-05 | tied | 2 |" in text
    assert "stability at the best settings" in text

    # resumed: every run is read back, none runs again, the same record comes out (the plots, drawn above,
    # are left out: they are most of this test's time)
    for plot in ("plot_curves", "plot_lr_maps", "plot_stability"):
        monkeypatch.setattr(f"benchmarks.evidence.report.{plot}", lambda *args, **kwargs: None)
    ran = len(fake_benchmark)
    again = run(FakeModality(config), log=lambda text: None)
    assert len(fake_benchmark) == ran and again["methods"] == results["methods"]


def test_a_learning_rate_free_grid_also_runs_its_default_on_every_seed(tmp_path, fake_benchmark, monkeypatch):
    for plot in ("plot_curves", "plot_lr_maps", "plot_stability"):
        monkeypatch.setattr(f"benchmarks.evidence.report.{plot}", lambda *args, **kwargs: None)
    grid = MethodGrid("Valley", "dual_prodigy", (1e-4, 1e-3, 1e-2), (0.5,), default_lr=1e-2)
    config = FakeConfig(str(tmp_path), (grid,), seeds=(1, 2), search_seed=1, max_extensions=0, stability=False)
    record = run(FakeModality(config), log=lambda text: None)["methods"][0]
    # best 1e-3 (UA 1 on seed 1); the default 1e-2 on seeds 1 and 2: UA 11 and 9, Avg Gap (10 + 0) / 2 = 5
    assert record["best_forget_lr"] == 1e-3 and record["default_lr"] == 1e-2
    no_search = record["no_search"]
    assert (no_search["forget_lr"], no_search["retain_lr"], sorted(no_search["per_seed"])) == (1e-2, 0.5, ["1", "2"])
    assert no_search["avg_gap"] == pytest.approx(5.0) and no_search["gap_std"] == pytest.approx(0.5)
    # search seed: gaps 5.5, 0.5, 5.5 -> the gap moves by 5 over the grid
    assert record["response_range"] == pytest.approx(5.0)
    # 3 search runs on seed 1, then seed 2 at the best and at the default (seed 1's are read back)
    assert [(argument[1], argument[3]) for argument in fake_benchmark] == [
        (1e-4, 1), (1e-3, 1), (1e-2, 1), (1e-3, 2), (1e-2, 2)]


def test_no_runtime_module_imports_the_evidence_engine():
    """The engine is benchmark code: only the README demo (an entry point that runs a benchmark) uses it."""
    repo = Path(__file__).resolve().parents[2]
    runtime = [path for folder in ("common", "dualoptim", "ImageClassification", "LLM", "ImageGeneration")
               for path in (repo / folder).rglob("*.py") if path != repo / "ImageClassification" / "demo.py"]
    assert len(runtime) > 50
    importing = [str(path.relative_to(repo)) for path in runtime
                 if "benchmarks.evidence" in path.read_text(encoding="utf-8")]
    assert importing == []
