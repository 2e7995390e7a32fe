"""Same seed, same machine, same command: bitwise the same metrics and weights; ``--deterministic`` takes effect.

One script per modality runs twice in-process with ``--deterministic`` (IC
``main_random.py`` on digits, LLM ``main_forget.py`` on the tiny Llama, DDPM
``main_train.py`` on digits); their result JSON and every weight must be
identical, and the process must be left in torch's deterministic mode.  Every
training, unlearning, sampling and evaluation script must hand
``--deterministic`` to :func:`common.seed.seed_everything`.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

CPU = ["--device", "cpu"]


def deterministic_state():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
            torch.backends.cuda.cudnn_sdp_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


@pytest.fixture
def restore_determinism():
    """Start from torch's defaults and put back whatever ``--deterministic`` switched on."""
    before = deterministic_state()
    assert not before[0], "an earlier test left torch in deterministic mode"
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
    torch.backends.cuda.enable_flash_sdp(before[4])
    torch.backends.cuda.enable_mem_efficient_sdp(before[5])
    torch.backends.cuda.enable_cudnn_sdp(before[6])
    if before[7] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def assert_deterministic_mode():
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not (torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()
                or torch.backends.cuda.cudnn_sdp_enabled())
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def assert_same_tensors(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_image_classification_salun_twice(digits_resnet20s, tmp_path, restore_determinism):
    from ImageClassification import main_random

    runs = []
    for name in ("first", "second"):
        save_dir = tmp_path / name
        main_random.main(["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "128",
                          "--num_indexes_to_replace", "60", "--unlearn", "RL", "--unlearn_epochs", "1",
                          "--unlearn_lr", "0.02", "--optim", "dual", "--model_path", str(digits_resnet20s),
                          "--save_dir", str(save_dir), "--deterministic", *CPU])
        runs.append(save_dir)
    assert_deterministic_mode()
    first, second = runs
    assert read_json(first / "eval_result.json") == read_json(second / "eval_result.json")
    assert read_json(first / "run.json")["metrics"] == read_json(second / "run.json")["metrics"]
    weights = [torch.load(run / "RLcheckpoint.pth.tar")["state_dict"] for run in runs]
    assert_same_tensors(*weights)
    start = torch.load(digits_resnet20s)["state_dict"]
    assert not torch.equal(weights[0]["backbone.fc.weight"], start["backbone.fc.weight"])  # it did unlearn


def test_llm_dual_optim_unlearning_twice(tiny_model, tofu_dir, tmp_path, restore_determinism):
    from safetensors.torch import load_file

    from LLM import main_forget

    results = []
    for name in ("first", "second"):
        results.append(main_forget.main([
            "--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
            "--task_list", "1", "--forget_loss", "NPO+GD", "--alternate", "--optim_cfg", "dual_adam",
            "--lr", "1e-3", "--forget_lr", "2e-3", "--num_epochs", "2", "--batch_size", "2",
            "--gradient_accumulation_steps", "1", "--max_length", "32", "--save_dir", str(tmp_path / name),
            "--deterministic", *CPU])[0])
    assert_deterministic_mode()
    timing = ("train_seconds", "tokens_per_second")
    first, second = ({k: v for k, v in r.items() if k not in timing} for r in results)
    assert first == second and first["max_steps"] > 1
    records = [read_json(tmp_path / name / "1" / "unlearn_times_1" / "run.json") for name in ("first", "second")]
    assert records[0]["history"] == records[1]["history"]
    weights = [load_file(tmp_path / name / "1" / "unlearn_times_1" / "checkpoint-last" / "model.safetensors")
               for name in ("first", "second")]
    assert_same_tensors(*weights)
    assert not torch.equal(weights[0]["lm_head.weight"], load_file(tiny_model / "model.safetensors")["lm_head.weight"])


def test_ddpm_training_twice(tiny_ddpm_config, tmp_path, restore_determinism):
    from ImageGeneration.DDPM import main_train

    run_dirs = [Path(main_train.main(["--config", str(tiny_ddpm_config), "--exp_root", str(tmp_path / name),
                                      "--deterministic", *CPU])) for name in ("first", "second")]
    assert_deterministic_mode()
    metrics = [read_json(run / "run.json")["metrics"] for run in run_dirs]
    for record in metrics:
        record.pop("run_dir")
    assert metrics[0] == metrics[1] and len(metrics[0]["losses"]) == 2
    states = [torch.load(run / "ckpts" / "ckpt.pth") for run in run_dirs]
    assert_same_tensors(states[0]["model"], states[1]["model"])
    assert_same_tensors(states[0]["ema"], states[1]["ema"])


class SeedReached(Exception):
    """Raised by the spy in place of seeding, to stop a script right there."""


#: (script, module whose ``seed_everything`` the script calls, argv builder on the fixtures)
SEEDED_SCRIPTS = [
    ("ImageClassification.main_train", "ImageClassification.main_train",
     lambda f: ["--dataset", "digits", "--epochs", "1", "--save_dir", str(f["tmp"])]),
    ("ImageClassification.main_random", "ImageClassification.pipeline",
     lambda f: ["--dataset", "digits", "--unlearn", "RL", "--num_indexes_to_replace", "60", "--model_path",
                f["ic"], "--save_dir", str(f["tmp"])]),
    ("ImageClassification.main_forget", "ImageClassification.pipeline",
     lambda f: ["--dataset", "digits", "--unlearn", "retrain", "--num_indexes_to_replace", "60",
                "--save_dir", str(f["tmp"])]),
    ("ImageClassification.main_random_sfron", "ImageClassification.pipeline",
     lambda f: ["--dataset", "digits", "--unlearn", "SFRon", "--num_indexes_to_replace", "60", "--model_path",
                f["ic"], "--save_dir", str(f["tmp"])]),
    ("ImageClassification.generate_mask", "ImageClassification.generate_mask",
     lambda f: ["--dataset", "digits", "--num_indexes_to_replace", "60", "--model_path", f["ic"],
                "--save_dir", str(f["tmp"])]),
    ("LLM.main_train", "LLM.main_train",
     lambda f: ["--model_path", f["llm"], "--data_path", f["tofu"], "--save_dir", str(f["tmp"])]),
    ("LLM.main_forget", "LLM.unlearn",
     lambda f: ["--model_path", f["llm"], "--data_path", f["tofu"], "--split", "forget01", "--save_dir",
                str(f["tmp"])]),
    ("LLM.real_world_unlearn", "LLM.unlearn",
     lambda f: ["--model_path", f["llm"], "--data_path", f["real_world"], "--save_dir", str(f["tmp"])]),
    ("LLM.eval", "LLM.entry",
     lambda f: ["--model_path", f["llm"], "--data_path", f["tofu"], "--split", "forget01", "--save_dir",
                str(f["tmp"])]),
    ("LLM.real_world_eval", "LLM.entry",
     lambda f: ["--model_path", f["llm"], "--data_path", f["real_world"], "--eval_unlearn_step", "0",
                "--save_dir", str(f["tmp"])]),
    *[(f"ImageGeneration.DDPM.{script}", "ImageGeneration.core.runs", argv) for script, argv in (
        ("main_train", lambda f: ["--config", f["ddpm_config"], "--exp_root", str(f["tmp"])]),
        ("main_forget", lambda f: ["--ckpt_folder", f["ddpm_run"], "--exp_root", str(f["tmp"])]),
        ("generate_mask", lambda f: ["--ckpt_folder", f["ddpm_run"]]),
        ("sample", lambda f: ["--ckpt_folder", f["ddpm_run"]]),
        ("train_classifier", lambda f: ["--save_dir", str(f["tmp"])]),
        ("evaluator", lambda f: [str(f["tmp"]), "--ref_dataset", "digits"]),
        ("classifier_evaluation", lambda f: ["--sample_path", str(f["tmp"])]))],
    *[(f"ImageGeneration.DiT.{script}", "ImageGeneration.core.runs", argv) for script, argv in (
        ("main_forget", lambda f: ["--ckpt", f["dit"], "--data-path", f["dit_data"], "--forget-class", "1"]),
        ("generate_mask", lambda f: ["--ckpt", f["dit"], "--forget-class", "1", "--mask-path", str(f["tmp"])]),
        ("sample", lambda f: ["--ckpt", f["dit"], "--class-labels", "1", "--sample-dir", str(f["tmp"])]))],
]


@pytest.mark.parametrize("script,seeding_module,argv", SEEDED_SCRIPTS, ids=[s[0] for s in SEEDED_SCRIPTS])
@pytest.mark.parametrize("flag", [True, False], ids=["--deterministic", "default"])
def test_every_script_hands_deterministic_to_seeding(script, seeding_module, argv, flag, monkeypatch, tmp_path,
                                                     digits_resnet20s, tiny_model, tofu_dir, real_world_dir,
                                                     tiny_ddpm_config, tiny_ddpm_run, tiny_dit):
    seen = []

    def spy(seed, deterministic=False):
        seen.append(deterministic)
        raise SeedReached

    monkeypatch.setattr(importlib.import_module(seeding_module), "seed_everything", spy)
    fixtures = {"tmp": tmp_path / "out", "ic": str(digits_resnet20s), "llm": str(tiny_model), "tofu": str(tofu_dir),
                "real_world": str(real_world_dir), "ddpm_config": str(tiny_ddpm_config),
                "ddpm_run": str(tiny_ddpm_run), "dit": str(tiny_dit / "ckpt"), "dit_data": str(tiny_dit / "data")}
    with pytest.raises(SeedReached):
        importlib.import_module(script).main(argv(fixtures) + CPU + (["--deterministic"] if flag else []))
    assert seen == [flag]
