"""The bash sweeps in scripts/ImageClassification: syntax, bad input, and one lr search end to end on digits."""
import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "ImageClassification"
ALL = sorted(p.name for p in SCRIPTS.glob("*.sh"))


def test_every_sweep_is_present():
    assert {"common.sh", "salun.sh", "sfron.sh", "scrub.sh", "baselines.sh", "lr_search.sh"} <= set(ALL)


@pytest.mark.parametrize("script", ALL)
def test_script_syntax_and_strict_mode(script):
    assert subprocess.run(["bash", "-n", str(SCRIPTS / script)]).returncode == 0
    text = (SCRIPTS / script).read_text()
    assert "set -euo pipefail" in text or 'source "$(dirname "$0")/common.sh"' in text


def _run(script, tmp_path, **env):
    # one thread per process: the suite runs two workers on two cores, and oversubscribed OpenMP threads
    # spin against each other (several times slower)
    env = dict(os.environ, SAVE_DIR=str(tmp_path), DEVICE="cpu", OMP_NUM_THREADS="1", TQDM_DISABLE="1", **env)
    # from another directory: the scripts must find the repository from their own location
    return subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


@pytest.mark.parametrize("env, message", [({"OPTIM": "lion"}, "OPTIM must be"),
                                          ({"METHODS": "FT bogus"}, "unknown baseline bogus"),
                                          ({"MODEL_PATH": "/nonexistent.pth.tar", "METHODS": "FT"}, "MODEL_PATH")])
def test_bad_settings_fail_with_one_line(tmp_path, env, message):
    result = _run("baselines.sh", tmp_path, **env)
    assert result.returncode != 0 and message in result.stderr
    assert not any(tmp_path.glob("*/seed*")), "nothing may run"


def test_lr_search_on_digits_trains_runs_and_tabulates(tmp_path):
    result = _run("lr_search.sh", tmp_path, SEEDS="1 2", LRS="1e-4 2e-4", EPOCHS="1", TRAIN_EPOCHS="1",
                  EXTRA="--batch_size 128")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # the original model, trained once; one saliency mask per seed (the forget set depends on the seed)
    assert (tmp_path / "original" / "0model_SA_best.pth.tar").is_file()
    for seed in (1, 2):
        assert (tmp_path / "mask" / f"seed{seed}" / "with_0.5.pt").is_file()
    for name, method, lr, retain_lr in [("retrain_sgd_lr0.1", "retrain", 0.1, 0.1),
                                        ("salun_dual_lr1e-4", "SalUn", 1e-4, 0.01),
                                        ("salun_dual_lr2e-4", "SalUn", 2e-4, 0.01)]:
        for seed in (1, 2):
            folder = tmp_path / name / f"seed{seed}"
            record = json.loads((folder / "eval_result.json").read_text())
            assert (record["method"], record["seed"], record["unlearn_lr"], record["retain_lr"]) == \
                (method, seed, lr, retain_lr)
            assert record["optim"] == ("sgd" if method == "retrain" else "dual")
            log = (folder / "log.txt").read_text()
            assert f"forget acc: {record['UA']}" in log and "MIA:" in log
    # the masks of the two seeds differ, and each run used its own seed's mask
    run = json.loads((tmp_path / "salun_dual_lr2e-4" / "seed2" / "run.json").read_text())
    assert "mask/seed2/with_0.5.pt" in json.dumps(run)
    # parse_result's table: one row per lr over 2 seeds, the reference row, and the plot
    table = result.stdout[result.stdout.index("reference (Retrain)"):]
    assert "| SalUn | dual | 0.0001 | 2 |" in table and "| SalUn | dual | 0.0002 | 2 |" in table
    assert "| retrain | sgd | 0.1 | 2 |" in table
    assert (tmp_path / "salun_dual_avg_gap.png").stat().st_size > 0


@pytest.mark.parametrize("env, expected", [
    ({"DATA": "/data"}, "--periodic_cosine_lr"),                               # the paper's original models
    ({}, "--decreasing_lr 6,9"),                                               # digits: 12 epochs, MultiStepLR
    ({"DATA": "/data", "TRAIN_LR": "multistep"}, "--decreasing_lr 91,136"),
])
def test_original_model_schedule(tmp_path, env, expected):
    env = dict({k: v for k, v in os.environ.items() if k not in ("DATA", "TRAIN_LR")}, SAVE_DIR=str(tmp_path), **env)
    result = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/common.sh"; echo "${{ORIGINAL_SCHEDULE[@]}}"'],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr


def test_original_model_schedule_rejects_unknown(tmp_path):
    env = dict(os.environ, SAVE_DIR=str(tmp_path), TRAIN_LR="cosine")
    result = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/common.sh"'], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2 and "TRAIN_LR must be periodic|multistep" in result.stderr
