"""The image-classification modality of the evidence engine: checks, step budget, grids, calls, trajectories."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.evidence.design import TIED, MethodGrid
from benchmarks.evidence.ic import (ABLATION_PAIRS, METHODS, PRESETS, CheckpointEvaluation, EvidenceConfig,
                                    ICEvidence, check_setting, evaluate_checkpoints, evaluate_model, evidence_grids,
                                    lr_free_grids, report, step_budget)
from common.evidence_runs import Runner


def retrain_runs(*records):
    return {seed: dict(zip(("UA", "TA", "MIA"), record)) for seed, record in enumerate(records, 1)}


def test_check_setting_measures_each_criterion():
    thresholds = dict(original_train_acc=99.0, retrain_forget_vs_test=5.0, retrain_mia_std=5.0)
    # forget acc = 100 - UA: 60 vs test 57 (3 points) and 52 vs 58 (6 points); MIA 70 and 80: std 5
    setting = check_setting(99.5, retrain_runs((40.0, 57.0, 70.0), (48.0, 58.0, 80.0)), thresholds)
    checks = setting["checks"]
    assert checks["original_train_acc"] == {"value": 99.5, "met": True}
    assert checks["retrain_forget_vs_test"]["value"] == pytest.approx(6.0) and not checks["retrain_forget_vs_test"]["met"]
    assert checks["retrain_mia_std"] == {"value": pytest.approx(5.0), "met": True}
    assert setting["lines"][1].startswith("NOT MET: Retrain's |forget acc - test acc| 6.00")


def test_step_budget_counts_batches_per_epoch_and_sfron_forget_steps():
    config = PRESETS["cifar10"]
    budget = step_budget(config, forget=450, retain=4050)
    # 450 / 16 -> 29 batches, 4050 / 16 -> 254 batches, 4 epochs; SFR-on: a forget step every 5th of 1,000
    assert (budget["forget_steps"], budget["retain_steps"]) == (116, 1016)
    assert (budget["sfron_forget_steps"], budget["sfron_retain_steps"]) == (200, 1000)
    assert budget["forget_steps"] >= 100 and budget["sfron_forget_steps"] >= 100


def test_evidence_grids_give_every_optimizer_the_same_resolution_and_retain_grid():
    grids = evidence_grids(("SalUn", "SFRon", "SCRUB"))
    assert [(g.method, g.optim) for g in grids] == [(m, o) for m in ("SalUn", "SFRon", "SCRUB") for o in ("sgd", "dual")]
    for grid in grids:  # every forget axis: 3 points per decade
        lrs = grid.forget_lrs
        assert (len(lrs) - 1) / (torch.log10(torch.tensor(lrs[-1] / lrs[0])).item()) == pytest.approx(3.0)
    for sgd, dual in zip(grids[::2], grids[1::2]):
        assert dual.retain_lrs == (3e-3, 1e-2) and sgd.retain_lrs in (None, dual.retain_lrs)
    sfron_sgd = grids[2]
    assert sfron_sgd.retain_lrs is None and len(sfron_sgd.forget_lrs) == 10  # one optimizer, one lr, 3 decades
    assert MethodGrid("SalUn", "sgd", (1.0, 2.0), (3.0,)).size == 2


def test_lr_free_grids_are_multiples_of_the_default_on_the_shared_retain_grid():
    prodigy, schedule_free = lr_free_grids(("SalUn",))
    assert prodigy.forget_lrs == (0.1, 0.215, 0.464, 1.0, 2.15, 4.64, 10.0) and prodigy.default_lr == 1.0
    assert schedule_free.forget_lrs == (0.00025, 0.000539, 0.00116, 0.0025, 0.00539, 0.0116, 0.025)
    assert prodigy.retain_lrs == schedule_free.retain_lrs == evidence_grids(("SalUn",))[1].retain_lrs
    optims = [g.optim for g in PRESETS["cifar10"].grids]  # sgd and dual first, then the lr-free recipes
    assert optims == ["sgd", "dual"] * 3 + ["dual_prodigy"] * 3 + ["dual_sf"] * 3


def results_record(sgd_gap, dual_gap, sgd_std=0.5, dual_std=0.5, met=True):
    def method(optim, gap, std, decades, both_ends):
        seed_mean = {k: 1.0 for k in ("UA", "RA", "TA", "MIA")}
        seed_mean.update({f"{k}_std": std for k in ("UA", "RA", "TA", "MIA")})
        return {"method": "SalUn", "optim": optim, "best_forget_lr": 0.01, "best_retain_lr": 0.01, "tied_lrs": False,
                "avg_gap": gap, "mean_seed_gap": gap + 1, "gap_std": std, "avg_std": std, "seed_mean": seed_mean,
                "per_seed": {"1": {}, "2": {}, "3": {}}, "robustness_decades": decades, "insensitive": False,
                "grid_size": 10, "searched_both_ends": both_ends, "stability": None,
                "curve": [(0.001, gap + 3), (0.01, gap), (0.1, gap + 5)]}
    return {"config": {"dataset": "digits", "arch": "resnet20s", "search_seed": 1, "seeds": [1, 2, 3], "mia": "sfron"},
            "step_budget": {"forget_set": 130, "retain_set": 1169, "forget_steps": 102, "retain_steps": 882,
                            "batch_size": 8, "sfron_forget_steps": 100, "sfron_retain_steps": 500},
            "reference": {"UA": 1.0}, "setting": {"checks": {"retrain_mia_std": {"value": 1.0, "met": met}}, "lines": []},
            "original_gap": 9.0,
            "methods": [method("sgd", sgd_gap, sgd_std, 0.5, False), method("dual", dual_gap, dual_std, 1.5, True)]}


def test_report_says_which_way_the_numbers_fall():
    text = report(results_record(sgd_gap=6.0, dual_gap=3.0))
    assert "dual is closer to Retrain than sgd by 3.00" in text and "dual is the least lr-sensitive" in text
    assert "not fully searched): sgd" in text and "misses" not in text and "doing nothing:" not in text
    noisy = report(results_record(sgd_gap=3.2, dual_gap=3.0, sgd_std=1.0, met=False))
    assert "dual vs sgd: the difference (0.20) is within seed noise (1.00)" in noisy
    assert "misses the design's criteria (retrain_mia_std)" in noisy
    assert "No better than doing nothing: sgd." in report(results_record(sgd_gap=9.5, dual_gap=3.0))


def test_report_compares_the_lr_free_default_with_the_searched_best():
    results = results_record(sgd_gap=6.0, dual_gap=3.0)
    lr_free = dict(results["methods"][1], optim="dual_prodigy", default_lr=1.0, avg_gap=2.0, gap_std=0.4,
                   curve=[(0.1, 4.0), (1.0, 2.0), (10.0, 9.5)], response_range=7.5,
                   no_search={"forget_lr": 1.0, "retain_lr": 0.01, "avg_gap": 3.6, "mean_seed_gap": 4.0,
                              "gap_std": 0.7, "per_seed": {"1": {}, "2": {}, "3": {}}})
    results["methods"].append(lr_free)
    text = report(results)
    # 3.6 - 3.0 = 0.6 <= max(0.7, 0.5): within seed noise of dual; 3.6 - 6.0: better than sgd by 2.40
    assert ("| SalUn | dual_prodigy | 1 | 0.01 | 3 | 3.60 | 0.70 | sgd 6.00+-0.50: better by 2.40; "
            "dual 3.00+-0.50: within seed noise (+0.60) |") in text
    assert "dual_prodigy with no search (default forget lr 1): Avg Gap 3.60, against the searched best (dual 3.00) " \
           "within seed noise (+0.60)." in text
    assert "| 7.50 | 10 |" in text  # the response range column
    diverged = {"UA": float("nan"), "diverged": "the forget loss is nan at step 576 (lr 1)"}
    lr_free["no_search"] = dict(lr_free["no_search"], avg_gap=float("inf"), gap_std=float("nan"),
                                per_seed={"1": diverged, "2": diverged, "3": {"UA": 1.0}})
    text = report(results)
    assert "| SalUn | dual_prodigy | 1 | 0.01 | 3 | diverged (2 of 3 seeds) | nan | sgd 6.00+-0.50: no result to " \
           "compare; dual 3.00+-0.50: no result to compare |" in text
    assert "Avg Gap diverged (2 of 3 seeds), against the searched best (dual 3.00) no result to compare." in text


def test_report_tables_list_best_settings_and_curves():
    text = report(results_record(sgd_gap=6.0, dual_gap=3.0))
    assert "| SalUn | dual | 0.01 | 0.01 | 3 | 1.00+-0.50 | 1.00+-0.50 | 1.00+-0.50 | 1.00+-0.50 | 3.00 | 4.00 | 0.50 |" \
        in text
    assert "| SalUn | sgd | 0.01 | 0.001: 9.00, 0.01: 6.00, 0.1: 11.00 |" in text


def test_the_method_table_says_what_each_method_runs():
    assert METHODS["SalUn"].argv("sgd") == ("--unlearn", "RL", "--mask_path", "{mask}")
    assert METHODS["SalUn"].script == METHODS["RL"].script == "main_random" and METHODS["SFRon"].kind == "steps"


def test_unlearn_calls_name_their_folders_by_lrs_and_tie_the_single_optimizer(tmp_path):
    config = EvidenceConfig(out=str(tmp_path), dataset="digits", arch="resnet20s", num_forget=130, train_epochs=1,
                            decreasing_lr="1", unlearn_epochs=1, sfron_iters=7, grids=(), seeds=(1,), search_seed=1)
    bench = ICEvidence(config)
    call = bench.unlearn_call("SFRon", "sgd", 0.02, TIED, 1)
    argv = list(call.argument)
    assert call.target == "ImageClassification.main_random_sfron:main" and call.save_dir == tmp_path / "sfron_sgd_lr0.02/seed1"
    assert argv[argv.index("--save_dir") + 1] == str(call.save_dir) and "--resume" in argv
    assert argv[argv.index("--retain_lr") + 1] == "0.02" and argv[argv.index("--sfron_iters") + 1] == "7"
    assert argv[argv.index("--sfron_checkpoint_every") + 1] == "1"  # 7 steps // 5 points
    call = bench.unlearn_call("SalUn", "dual", 1e-4, 0.01, 2)
    argv = list(call.argument)
    assert call.save_dir == tmp_path / "salun_dual_lr0.0001_rlr0.01/seed2" and "--mask_path" in argv
    assert argv[argv.index("--retain_lr") + 1] == "0.01" and argv[argv.index("--unlearn_epochs") + 1] == "1"
    assert argv[argv.index("--seed") + 1] == "2" and not call.done
    assert argv[argv.index("--mask_path") + 1] == str(tmp_path / "mask" / "seed2" / "with_0.5.pt")
    sfron = bench.trajectory_call("SFRon", "sgd", bench.unlearn_call("SFRon", "sgd", 0.02, TIED, 1))
    # every retain step (7 // 5 = 1), on the epoch methods' scale: step s of 7 is epoch s / 7
    assert sfron.argument.checkpoints == tuple((round(s / 7, 3), f"checkpoint_step{s}.pt") for s in range(1, 8))
    trajectory = bench.trajectory_call("SalUn", "dual", call)
    assert trajectory.save_dir == call.save_dir / "trajectory"
    assert trajectory.argument.checkpoints == ((1, "checkpoint_1.pt"),)
    assert trajectory.target == "benchmarks.evidence.ic:evaluate_checkpoints"


def test_checkpoints_evaluated_on_one_loaded_split_equal_each_model_evaluated_alone(tmp_path):
    """The trajectory loads the split once for all checkpoints; every point equals :func:`evaluate_model`."""
    from ImageClassification.models import save_untrained_digits_model
    for seed in (1, 2):  # two different models: different initialisations
        save_untrained_digits_model(tmp_path / f"checkpoint_{seed}.pt", seed=seed)
    argv = ("--dataset", "digits", "--arch", "resnet20s", "--num_indexes_to_replace", "130", "--seed", "1",
            "--data", str(tmp_path / "data"), "--device", "cpu")
    evaluate_checkpoints(CheckpointEvaluation(argv, str(tmp_path), ((1, "checkpoint_1.pt"), (2, "checkpoint_2.pt"))))
    points = json.loads((tmp_path / "trajectory" / "trajectory.json").read_text())
    alone = evaluate_model(argv + ("--model_path", str(tmp_path / "checkpoint_2.pt")))  # the second, after another
    assert [p["progress"] for p in points] == [1, 2]
    assert {k: points[1][k] for k in ("UA", "RA", "TA", "MIA")} == {k: alone[k] for k in ("UA", "RA", "TA", "MIA")}
    assert points[0]["RA"] != points[1]["RA"] or points[0]["MIA"] != points[1]["MIA"]  # two models, not one twice


def test_runner_runs_a_batch_in_worker_processes_and_skips_finished_runs(tmp_path):
    """Two retrains in two spawned workers give the same numbers as in this process."""
    config = EvidenceConfig(out=str(tmp_path / "parallel"), dataset="digits", arch="resnet20s", num_forget=130,
                            train_epochs=1, decreasing_lr="1", unlearn_epochs=1, sfron_iters=1, grids=(), seeds=(1, 2),
                            search_seed=1, train_batch_size=256)
    with Runner(tmp_path / "parallel", 2, 1) as runner:
        parallel = ICEvidence(config).retrain(runner, (1, 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: the same kernels, the same sums
    try:
        with Runner(tmp_path / "sequential") as runner:
            sequential = ICEvidence(replace(config, out=str(tmp_path / "sequential"))).retrain(runner, (1, 2))
    finally:
        torch.set_num_threads(threads)
    for seed in (1, 2):
        assert {k: parallel[seed][k] for k in ("UA", "RA", "TA", "MIA")} == \
            {k: sequential[seed][k] for k in ("UA", "RA", "TA", "MIA")}
    before = (tmp_path / "parallel" / "retrain_sgd_lr0.1" / "seed1" / "run.json").stat().st_mtime_ns
    with Runner(tmp_path / "parallel", 2, 1) as runner:
        assert ICEvidence(config).retrain(runner, (1,))[1] == parallel[1]
    assert (tmp_path / "parallel" / "retrain_sgd_lr0.1" / "seed1" / "run.json").stat().st_mtime_ns == before


def test_ablation_preset_shares_the_cifar10_setting_and_searches_every_pair_alike():
    ablation, cifar10 = PRESETS["cifar10_ablation"], PRESETS["cifar10"]
    assert replace(ablation, grids=cifar10.grids) == cifar10  # same folder: original, Retrain, sgd/dual runs reused
    assert {g.optim for g in ablation.grids} >= {"sgd", "dual", "dual_sa", "dual_ss", "dual_ls", "dual_ll", "dual_sl",
                                                 "dual_aa_m", "dual_aa_v", "dual_share"}
    assert {g.size for g in ablation.grids} == {10, 14} and all(g.method == "SFRon" for g in ablation.grids)
    assert {len(g.forget_lrs) for g in ablation.grids if g.optim in ABLATION_PAIRS} == {7}  # 3 per decade
    lion_sgd = next(g for g in ablation.grids if g.optim == "dual_ls")
    assert lion_sgd.forget_lrs[::3] == (1e-6, 1e-5, 1e-4) and lion_sgd.retain_lrs == (3e-3, 1e-2)


def test_benchmark_script_imports_the_engine_and_lists_its_presets():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ic_unlearning.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "{cifar10,cifar10_ablation,demo,demo_quick,paper_gpu,paper_gpu_short}" in result.stdout
    assert "--jobs" in result.stdout and "--data" in result.stdout
