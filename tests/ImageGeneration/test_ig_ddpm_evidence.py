"""The DDPM modality of the evidence engine: its gap, checks, runs, resumption and the benchmark script."""
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.evidence import ddpm as evidence
from benchmarks.evidence.ddpm import (PRESETS, DDPMEvidence, DDPMEvidenceConfig, check_setting, evidence_grids, gap)
from benchmarks.evidence.design import TIED, MethodGrid
from benchmarks.evidence.engine import run
from ImageGeneration.DDPM.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_gap_is_the_mean_distance_of_ua_and_ra_to_the_reference_without_fid():
    assert gap({"UA": 90.0, "RA": 80.0, "FID": 7.0}, {"UA": 100.0, "RA": 95.0}) == pytest.approx(12.5)
    assert gap({"UA": 100.0, "RA": 97.0, "FID": 0.0}, {"UA": 100.0, "RA": 95.0}) == pytest.approx(1.0)


def test_check_setting_measures_each_criterion():
    thresholds = PRESETS["digits"].thresholds
    setting = check_setting(97.0, {"UA": 4.0}, {1: {"RA": 90.0}, 2: {"RA": 100.0}}, thresholds)
    checks = setting["checks"]
    assert checks["judge_test_acc"] == {"value": 97.0, "met": True}
    assert checks["original_forget_acc"] == {"value": 96.0, "met": True}
    assert checks["retrain_remain_std"] == {"value": 5.0, "met": True}  # population std of 90 and 100
    setting = check_setting(94.0, {"UA": 20.0}, {1: {"RA": 80.0}, 2: {"RA": 100.0}}, thresholds)
    assert [c["met"] for c in setting["checks"].values()] == [False, False, False]
    assert setting["lines"][1] == "NOT MET: original's samples of the forgotten digit recognised 80.00 (>= 90.0)"


def test_digits_preset_meets_the_design_budget_and_searches_both_optimizers_alike():
    config = PRESETS["digits"]
    assert config.forget_iters >= 100 and len(config.seeds) >= 3
    for method in ("SalUn", "SFRon"):
        adam, dual = [g for g in config.grids if g.method == method]
        assert (adam.optim, dual.optim) == ("adam", "dual") and adam.retain_lrs is None
        assert adam.size == 10 and dual.forget_lrs[::3] == (1e-5, 1e-4, 1e-3)  # both 3 points per decade
    assert evidence_grids(("SalUn",)) == config.grids[:2]


def test_unlearn_calls_set_the_one_lr_or_the_two_and_the_published_flags(tmp_path):
    config = DDPMEvidenceConfig(out=str(tmp_path), pretrain_iters=10, forget_iters=3, grids=(), seeds=(1,),
                                search_seed=1)
    bench = DDPMEvidence(config)
    bench.samples["original"] = "/runs/original"
    call = bench.unlearn_call("SFRon", "adam", 3e-4, TIED, 2)
    run = call.argument
    argv = list(run.argv)
    assert call.save_dir == tmp_path / "sfron_adam_lr0.0003/seed2" and call.done_file == "metrics.json"
    assert run.seed == 2 and run.script == "main_forget" and "--dual" not in argv and "--forget_lr" not in argv
    assert argv[argv.index("--forget_alpha") + 1] == "10.0"
    assert argv[argv.index("--mask_path") + 1] == "/runs/original/mask_0/fisher_1.0.pt"
    yaml = load_config(argv[argv.index("--config") + 1], "digits", "sfron")
    assert yaml.optim.lr == 3e-4 and yaml.training.n_iters == 3
    call = bench.unlearn_call("SFRon", "dual", 1e-5, 1e-3, 1)
    argv = list(call.argument.argv)
    assert call.save_dir == tmp_path / "sfron_dual_lr1e-05_rlr0.001/seed1"
    assert "--dual" in argv and argv[argv.index("--forget_lr") + 1] == "1e-05"
    assert argv[argv.index("--forget_alpha") + 1] == "1.0"  # the research code's README: alpha 1 with --dual
    assert load_config(argv[argv.index("--config") + 1], "digits", "sfron").optim.lr == 1e-3
    retrain = bench.model_call("main_train", ["--mode", "retrain"], "retrain", 1).argument
    assert not retrain.knows_forgotten_class and bench.model_call("main_train", ["--mode", "pretrain"], "original",
                                                                  1).argument.knows_forgotten_class


TINY = DDPMEvidenceConfig(out="", pretrain_iters=8, forget_iters=2, classifier_epochs=1, n_forget_samples=2,
                          n_samples_per_class=1, timesteps=2, seeds=(1,), search_seed=1, max_extensions=0,
                          grids=(MethodGrid("SalUn", "dual", (1e-4, 1e-3), (1e-4,)),))


def run_script(tmp_path, monkeypatch, config, argv):
    """benchmarks/ddpm_digits.py's main with ``config`` as preset ``tiny``, copying results under ``tmp_path``."""
    spec = importlib.util.spec_from_file_location("ddpm_digits_benchmark", REPO / "benchmarks" / "ddpm_digits.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(evidence.PRESETS, "tiny", config)
    monkeypatch.setattr(script, "REPO", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    return script.main(["--preset", "tiny", *argv])


def test_benchmark_runs_every_model_records_its_results_and_resumes_without_rerunning(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    run_script(tmp_path, monkeypatch, TINY, ["--out", str(work), "--threads", "1", "--results", "tiny"])
    printed = capsys.readouterr().out
    assert "| SalUn | dual | " in printed and "reference (Retrain): UA 100.00" in printed and "Doing nothing" in printed
    assert "stability at the best settings (std over seeds along the run, per step)" in printed
    record = json.loads((work / "results.json").read_text())
    assert json.loads((tmp_path / "benchmarks" / "results" / "tiny.json").read_text()) == record
    assert (tmp_path / "benchmarks" / "results" / "tiny_samples.png").is_file()
    assert record["config"]["forget_iters"] == 2 and record["step_budget"] == {
        "forget_steps": 2, "remain_steps": 2, "batch_size": 64, "pretrain_steps": 8}
    assert record["reference"]["UA"] == 100.0 and record["reference"]["RA"] == record["retrain"]["1"]["RA"]
    assert "UA" not in record["retrain"]["1"] and 0.0 <= record["original"]["UA"] <= 100.0
    method = record["methods"][0]
    assert [p["forget_lr"] for p in method["grid"]] == [1e-4, 1e-3]
    for point in method["grid"]:  # every grid point's gap is the gap of that run's metrics
        metrics = json.loads((work / f"salun_dual_lr{point['forget_lr']:g}_rlr0.0001/seed1/metrics.json").read_text())
        assert point["gap"] == pytest.approx(gap(metrics, record["reference"]))
        flags = json.loads(Path(metrics["run_dir"], "run.json").read_text())["config"]
        assert flags["dual"] is True and flags["forget_lr"] == point["forget_lr"] and flags["seed"] == 1
    assert method["avg_gap"] == pytest.approx(min(p["gap"] for p in method["grid"]))  # one seed: the search's
    assert set(method["per_seed"]["1"]) >= {"UA", "RA", "FID", "run_dir", "images_per_s"}
    for name in ("gap_vs_lr.png", "samples.png", "stability.png"):
        assert (work / name).stat().st_size > 0
    # the trajectory: the best run made again keeping a snapshot every step (2 steps: 5 points would be 0.4 apart),
    # judged like every model; it starts at the original (the search seed: its judged metrics) and ends at the run
    best = f"salun_dual_lr{method['best_forget_lr']:g}_rlr0.0001/seed1"
    trajectory = json.loads((work / best / "trajectory" / evidence.TRAJECTORY).read_text())
    assert trajectory["interval_steps"] == 1 and trajectory["n_iters"] == 2
    assert trajectory["matches_finished_run"] and trajectory["max_abs_difference"] == 0.0
    start, middle, last = trajectory["points"]
    assert [start["progress"], middle["progress"], last["progress"]] == [0, 1, 2]
    assert start == {"progress": 0, **{k: record["original"][k] for k in ("UA", "RA", "FID")}}
    assert last == {"progress": 2, **{k: method["per_seed"]["1"][k] for k in ("UA", "RA", "FID")}}
    assert not list((work / best / "trajectory").glob("**/*.pth"))  # every checkpoint deleted once judged
    stability = method["stability"]
    assert stability["seeds"] == 1 and [p["progress"] for p in stability["points"]] == [0, 1, 2]
    assert stability["points"][-1]["RA"] == last["RA"] and stability["end_std"] == {"UA": 0.0, "RA": 0.0}
    assert not (work / "lr_maps.png").exists()  # one retain lr: no map

    def refuse(run):
        raise AssertionError(f"finished run ran again: {run.save_dir}")

    monkeypatch.setattr(evidence, "train_and_judge", refuse)
    monkeypatch.setattr(evidence, "record_trajectory", refuse)
    again = run(DDPMEvidence(replace(TINY, out=str(work))), log=lambda text: None)
    assert again["methods"][0]["grid"] == record["methods"][0]["grid"]
