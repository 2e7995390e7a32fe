"""benchmarks/llm_tofu.py size presets: --size fills what the command line leaves out; --quick still works."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.evidence import tofu
from common.errors import UsageError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_tofu.py"


def llm_tofu_module():
    spec = importlib.util.spec_from_file_location("llm_tofu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llm_tofu():
    return llm_tofu_module()


def test_presets_fill_unset_sizes_and_explicit_flags_win(llm_tofu):
    medium = llm_tofu.parse_args(["--size", "medium"])
    assert (medium.num_forget, medium.num_retain, medium.num_layers, medium.epochs, medium.lr) == (60, 540, 4, 5, 3e-4)
    assert llm_tofu.parse_args(["--size", "medium", "--num_forget", "10", "--lr", "1e-3"]).num_forget == 10
    assert llm_tofu.parse_args(["--size", "medium", "--epochs=3"]).epochs == 3  # the --flag=value form too
    quick = llm_tofu.parse_args(["--quick"])
    assert quick.size == "quick" and (quick.num_forget, quick.hidden_size) == (40, 64)
    full = llm_tofu.parse_args([])
    assert (full.size, full.num_forget, full.num_retain, full.threads) == ("full", 400, 3600, None)
    with pytest.raises(UsageError, match="--quick: contradicts --size medium"):
        llm_tofu.parse_args(["--quick", "--size", "medium"])


def test_evidence_preset_meets_the_step_budget_and_grids_match_in_size(llm_tofu):
    args = llm_tofu.parse_args(["--size", "evidence"])
    assert args.evidence and args.epochs * -(-args.num_forget // args.batch_size) >= 100  # forget steps
    assert args.num_retain == 9 * args.num_forget  # forget10's 1:9
    grids = tofu.evidence_grids(args)
    assert [(g.method, g.optim) for g in grids] == [(loss, optim) for loss in ("ME+GD", "IDK+AP", "NPO+GD")
                                                    for optim in ("adam", "dual_adam")]
    for adam, dual in zip(grids[::2], grids[1::2]):  # the same forget axis, 3 points per decade, for both
        assert adam.retain_lrs is None and dual.retain_lrs == (1e-4, 1e-3)
        assert adam.forget_lrs == dual.forget_lrs and len(adam.forget_lrs) == 10
        assert (adam.forget_lrs[0], adam.forget_lrs[-1]) == (1e-5, 1e-2)
    # the engine's part of the run: its folder, seeds and grids
    config = tofu.TofuEvidence(args).config
    assert config.out.endswith("evidence") and config.search_seed == 1001 and config.grids == tuple(grids)
    assert config.stability  # trajectories by default; --no-stability leaves them out
    assert not tofu.TofuEvidence(llm_tofu.parse_args(["--size", "evidence", "--no-stability"])).config.stability


def test_lr_free_optims_are_searched_around_their_default_on_the_lrfree_losses(llm_tofu):
    args = llm_tofu.parse_args(["--size", "evidence", "--optims", "dual_adam", "dual_prodigy_adam", "dual_sf_adam"])
    grids = tofu.evidence_grids(args)
    assert [(g.method, g.optim) for g in grids][3:] == [
        ("ME+GD", "dual_prodigy_adam"), ("NPO+GD", "dual_prodigy_adam"), ("ME+GD", "dual_sf_adam"),
        ("NPO+GD", "dual_sf_adam")]
    prodigy, schedule_free = grids[3], grids[5]
    assert prodigy.forget_lrs == (0.1, 0.215, 0.464, 1.0, 2.15, 4.64, 10.0) and prodigy.default_lr == 1.0
    assert schedule_free.default_lr == 0.0025 and schedule_free.retain_lrs == grids[0].retain_lrs == (1e-4, 1e-3)
    assert tofu.OPTIM_FLAGS["dual_prodigy_adam"] == ("--optim_cfg", "dual_prodigy_adam", "--alternate")


def test_tofu_gap_is_the_mean_distance_to_the_retain_model_in_points():
    retain = {"Forget ROUGE": 0.2, "TOFU Model Utility": 0.6, "Forget Quality": 1.0}
    assert tofu.tofu_gap({"Forget ROUGE": 0.5, "TOFU Model Utility": 0.5}, retain) == pytest.approx(20.0)
    assert tofu.tofu_gap(retain, retain) == 0.0


def test_evidence_report_lists_each_loss_and_optimizer():
    seed_mean = {"Forget ROUGE": 0.25, "Forget ROUGE_std": 0.01, "TOFU Model Utility": 0.5,
                 "TOFU Model Utility_std": 0.02, "Forget Quality": 0.1, "Forget Quality_std": 0.0}
    record = {"method": "ME+GD", "optim": "adam", "best_forget_lr": 1e-3, "best_retain_lr": 0.0, "tied_lrs": True,
              "per_seed": {"1": {}, "2": {}}, "seed_mean": seed_mean, "avg_gap": 3.0, "mean_seed_gap": 3.2,
              "gap_std": 0.5, "avg_std": 0.015, "robustness_decades": 0.5, "insensitive": False, "grid_size": 10,
              "searched_both_ends": True, "stability": None, "curve": [(1e-4, 9.0), (1e-3, 3.0)]}
    results = {"args": {"num_forget": 40, "num_retain": 360, "num_layers": 2, "hidden_size": 64, "seeds": [1, 2]},
               "step_budget": {"forget_steps": 100, "retain_steps": 500, "batch_size": 4}, "gap": "100 x ...",
               "reference": {"Forget ROUGE": 0.06}, "setting": {"checks": {}, "lines": []}, "original_gap": 30.0,
               "methods": [record]}
    table = tofu.report(results)
    assert "Doing nothing (the original model) has Avg Gap 30.00 to the retain model." in table
    assert ("| ME+GD | adam | 0.001 | tied | 2 | 0.25+-0.01 | 0.5+-0.02 | 0.1+-0 | 3.00 | 3.20 | 0.50 | 0.01 | 0.50 |  | "
            "10 | yes |") in table  # no response range recorded: an empty cell
    assert "| ME+GD | adam | tied | 0.0001: 9.00, 0.001: 3.00 |" in table


def test_evidence_takes_the_launcher_and_a_dry_run_fine_tunes_nothing(tofu_dir, tmp_path):
    """--evidence --launcher slurm --dry_run: the search's first jobs are printed, the reference models are
    said to be fine-tuned in this process (they are not, here), nothing is written and the status is 0. (In a
    subprocess, as users run it: importing submitit reconfigures logging, which closes pytest's capture.)"""
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(SCRIPT), "--size", "evidence", "--data_path", str(tofu_dir),
                             "--out_dir", str(out), "--seeds", "1", "2", "--optims", "dual_adam",
                             "--launcher", "slurm", "--dry_run", "--slurm_partition", "gpu"],
                            capture_output=True, text=True, timeout=120, cwd=SCRIPT.parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "original and retain models would be fine-tuned and evaluated in this process" in text
    assert "#SBATCH --partition=gpu" in text
    jobs = text.split("# jobs\n")[1].splitlines()
    # the first grid's search: dual_adam's forget lrs x retain lrs on the search seed, one job each
    first = tofu.evidence_grids(llm_tofu_module().parse_args(["--size", "evidence", "--optims", "dual_adam"]))[0]
    assert len(jobs) == len(first.forget_lrs) * len(first.retain_lrs) > 1
    assert all(f"{out}/evidence/ME+GD/dual_adam/" in job and job.endswith("/seed1')")
               and "benchmarks.evidence.tofu:unlearn_and_evaluate" in job for job in jobs)
    assert not out.exists(), "a dry run fine-tunes and writes nothing"


def test_launcher_flags_are_listed_and_refused_without_evidence(llm_tofu, capsys):
    text = llm_tofu.build_parser().format_help()
    assert all(flag in text for flag in ("--launcher {local,slurm}", "--dry_run", "--cluster", "--slurm_partition",
                                         "--runs_per_gpu"))
    with pytest.raises(SystemExit) as exit_:
        llm_tofu.main(["--quick", "--launcher", "slurm"])
    assert exit_.value.code == 2
    assert "--launcher slurm / --dry_run: only with --evidence" in capsys.readouterr().err
