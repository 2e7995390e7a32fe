"""The sweep scripts in scripts/LLM: valid bash, and one sweep end to end on the tiny model and data."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "LLM"


@pytest.mark.parametrize("script", sorted(path.name for path in SCRIPTS.glob("*.sh")))
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_model_path_is_one_clear_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("MODEL_PATH", "DATA_PATH")}
    result = subprocess.run(["bash", str(SCRIPTS / "dualoptim.sh")], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode != 0 and "MODEL_PATH" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("launcher", ["", pytest.param("local", marks=pytest.mark.slow)])
def test_dualoptim_sweep_on_tiny_model(tmp_path, tofu_dir, tiny_model, launcher):
    """The sweep as it always ran, and (slow) each run as one job of the local launcher (common.sweep)."""
    env = dict(os.environ, LAUNCHER=launcher, MODEL_PATH=str(tiny_model), DATA_PATH=str(tofu_dir), SAVE_DIR=str(tmp_path / "results"),
               MODEL_FAMILY="plain", SEEDS="7", SPLITS="forget01", FORGET_LOSSES="ME+GD", NUM_EPOCHS="1",
               LR="1e-3", FORGET_LR="1e-3", RETAIN_FREQ="1", EXTRA_ARGS="--device cpu",
               TRAIN_ARGS="--batch_size 2 --gradient_accumulation_steps 1 --max_length 48",
               EVAL_ARGS="--max_new_tokens 4", SAVE_STEPS="1", EVAL_STEPS="0 last", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(SCRIPTS / "me_gd_dual.sh")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "results" / "optim_dual_adam" / "forget01" / "ME+GD" / "lr_1e-3_1e-3_freq_1_1" / "seed7"
    record = json.loads((run_dir / "1" / "unlearn_times_1" / "run.json").read_text())
    assert record["config"]["optim_cfg"] == "dual_adam" and record["config"]["forget_coeff"] == 1.0
    assert record["config"]["alternate"] and record["seed"] == 7
    assert record["config"]["gradient_accumulation_steps"] == 1  # TRAIN_ARGS win over the default 8
    assert record["config"]["save_steps"] == "1" and (run_dir / "1" / "unlearn_times_1" / "checkpoint-1").is_dir()
    for step in ("0", "last"):
        assert (run_dir / "1" / "unlearn_times_1" / f"eval_results-{step}" / "aggregate_stat.json").is_file()
    summary = (tmp_path / "results" / "optim_dual_adam" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all("forget01/ME+GD" in line and ",1," in line for line in summary[1:])
    assert [line.split(",")[1] for line in summary[1:]] == ["0", "last"]
