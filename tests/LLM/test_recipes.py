"""The shipped recipes are the original's: configs key for key, the sweeps' coefficients, the effective batch."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from LLM.main_forget import build_parser
from LLM.options import parse_with_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "LLM"

#: The original's config/phi1-5_tofu.yaml and config/llama_tofu.yaml (flags only; both files agree on all but
#: model_family / model_path).  gradient_accumulation_steps is the original's 4 per process on 2 processes.
ORIGINAL_TOFU = {
    "use_LoRA": False, "data_path": "data/tofu", "split": "forget05", "task_id": 1, "alternate": False,
    "forget_lr": 1e-5, "optim_cfg": "adam", "forget_freq": 1, "retain_freq": 5, "forget_loss": "ME+GD",
    "lr": 1e-5, "num_epochs": 5, "batch_size": 5, "forget_coeff": 0.1, "regularization_coeff": 1.0,
    "beta": 0.1, "weight_decay": 0.01, "fix_ref_model": False, "mask": True, "seed": 1001,
    "save_root": "results", "save_steps": "last",
}


@pytest.mark.parametrize("name, family, model", [("phi1-5_tofu.yaml", "phi1.5", "locuslab/tofu_ft_phi-1.5"),
                                                 ("llama2-7b_tofu.yaml", "llama2-7b", "locuslab/tofu_ft_llama2-7b")])
def test_tofu_configs_are_the_originals(name, family, model):
    config = yaml.safe_load((ROOT / "LLM" / "config" / name).read_text())
    expected = dict(ORIGINAL_TOFU, model_family=family, model_path=model, gradient_accumulation_steps=8)
    assert sorted(config) == sorted(expected)
    for key, value in expected.items():
        assert config[key] == value, key
    args = parse_with_config(build_parser(), ["--config", str(ROOT / "LLM" / "config" / name)])
    assert args.batch_size * args.gradient_accumulation_steps == 40  # 2 processes x 5 x 4 in the original
    assert (args.optim_cfg, args.retain_freq, args.lr, args.forget_lr) == ("adam", 5, 1e-5, 1e-5)


def test_default_effective_batch_is_the_originals():
    args = build_parser().parse_args([])
    assert args.batch_size * args.gradient_accumulation_steps == 40


def test_defaults_without_config_are_the_originals_configs():
    """The original always loads a config; without ``--config`` the flags default to its TOFU configs' values
    (forget_coeff 0.1, retain_freq 5, ...).  Not defaults: the data (``data_path``: the hub here, a folder
    there) and ``task_id`` (None: every task of ``--task_list``)."""
    args = build_parser().parse_args([])
    for key, value in ORIGINAL_TOFU.items():
        if key not in ("data_path", "task_id"):
            assert getattr(args, key) == value, key
    from LLM.real_world_unlearn import build_parser as real_world_parser
    real_world = real_world_parser().parse_args([])
    # config/real_world.yaml: forget_coeff 0.5; its joint Trainer takes no frequencies (the Trainer's 1 and 1)
    assert (real_world.forget_coeff, real_world.forget_freq, real_world.retain_freq) == (0.5, 1, 1)


def test_real_world_config_keys():
    config = yaml.safe_load((ROOT / "LLM" / "config" / "real_world.yaml").read_text())
    original = {"model_family": "llama3-8b", "model_path": "meta-llama/Meta-Llama-3-8B-Instruct", "use_LoRA": False,
                "data_path": "data/real_world", "split": "forget", "retain": "neighbor", "alternate": False,
                "forget_lr": 1e-5, "forget_loss": "ME+GD", "lr": 5e-6, "num_epochs": 5, "batch_size": 4,
                "gradient_accumulation_steps": 4, "forget_coeff": 0.5, "regularization_coeff": 1.0, "beta": 0.1,
                "weight_decay": 0.01, "mask": True, "seed": 1001, "save_root": "results/real_world", "save_steps": "last",
                "overwrite_dir": False}
    for key, value in original.items():
        assert config[key] == value, key
    # the original's optim_cfg "dual_adam" without alternate trains with the Trainer's AdamW: "adam" here
    assert config["optim_cfg"] == "adam"


def _script_value(script: str, variable: str) -> str:
    for line in (SCRIPTS / script).read_text().splitlines():
        if line.startswith(f"{variable}="):
            return line.split(":-", 1)[1].rstrip('}"')
    raise AssertionError(f"{variable} not set in {script}")


def test_sweep_coefficients_are_the_original_scripts():
    assert _script_value("dualoptim.sh", "FORGET_COEFF") == "1.0"  # ME+GD and IDK+AP, scripts/tofu/dualoptim.sh
    assert _script_value("baselines.sh", "FORGET_COEFF") == "0.1"  # DPO+GD, scripts/tofu/baselines.sh
    assert _script_value("dualoptim.sh", "RETAIN_FREQ") == "5"
    assert _script_value("dualoptim.sh", "LR") == _script_value("dualoptim.sh", "FORGET_LR") == "1e-5"


@pytest.mark.parametrize("processes, accumulation", [("1", "8"), ("2", "4"), ("4", "2"), ("3", None)])
def test_sweeps_keep_the_effective_batch_over_processes(processes, accumulation):
    env = dict(os.environ, MODEL_PATH="m", DATA_PATH="d", NUM_PROCESSES=processes)
    result = subprocess.run(["bash", "-c", f'source "{SCRIPTS / "common.sh"}"; echo "$ACCUMULATION"'],
                            capture_output=True, text=True, env=env)
    if accumulation is None:
        assert result.returncode == 2 and result.stderr.startswith("error: NUM_PROCESSES=3")
    else:
        assert result.returncode == 0 and result.stdout.strip() == accumulation
