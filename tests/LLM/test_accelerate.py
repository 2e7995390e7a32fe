"""`accelerate launch` with 2 CPU processes gives the same unlearned weights and metrics as one process.

Two processes with accumulation 1 see the same samples per step as one process with accumulation 2.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from LLM import eval as eval_script
from LLM import main_forget


def test_two_processes_match_one(tmp_path, tofu_dir, tiny_model, launch_two_processes):
    common = ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
              "--task_list", "1", "--forget_loss", "ME+GD", "--optim_cfg", "dual_adam", "--alternate",
              "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "1",
              "--batch_size", "1", "--max_length", "48", "--device", "cpu"]
    launch_two_processes("LLM/main_forget.py",
                         common + ["--gradient_accumulation_steps", "1", "--save_dir", str(tmp_path / "two")])
    main_forget.main(common + ["--gradient_accumulation_steps", "2", "--save_dir", str(tmp_path / "one")])
    runs = {n: tmp_path / n / "1" / "unlearn_times_1" for n in ("one", "two")}
    records = {n: json.loads((d / "run.json").read_text()) for n, d in runs.items()}
    assert records["two"]["metrics"]["num_processes"] == 2 and records["one"]["metrics"]["num_processes"] == 1
    assert [h["objective"] for h in records["two"]["history"]] == ["forget", "retain", "retain"]
    for a, b in zip(records["one"]["history"], records["two"]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    one = load_file(str(runs["one"] / "checkpoint-last" / "model.safetensors"))
    two = load_file(str(runs["two"] / "checkpoint-last" / "model.safetensors"))
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)

    model = str(runs["one"] / "checkpoint-last")
    eval_args = ["--model_path", model, "--data_path", str(tofu_dir), "--split", "forget01", "--task_id", "1",
                 "--max_new_tokens", "6", "--batch_size", "2", "--device", "cpu"]
    launch_two_processes("LLM/eval.py", eval_args + ["--save_dir", str(tmp_path / "eval_two")])
    single = eval_script.main(eval_args + ["--save_dir", str(tmp_path / "eval_one")])
    double = json.loads((tmp_path / "eval_two" / "aggregate_stat.json").read_text())
    assert double.keys() == single.keys()
    for key in single:
        assert double[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    forget_two = json.loads((tmp_path / "eval_two" / "eval_log_forget.json").read_text())
    forget_one = json.loads((tmp_path / "eval_one" / "eval_log_forget.json").read_text())
    assert [g[1] for g in forget_two["generated_text"]] == [g[1] for g in forget_one["generated_text"]]


@pytest.mark.slow  # about a minute: two launches' start-up on a 2-core machine
def test_two_processes_match_one_with_schedule_joint(tmp_path, tofu_dir, tiny_model, launch_two_processes):
    """DDP reduces each term's gradient on its own backward pass; the split steps still match one process."""
    common = ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
              "--task_list", "1", "--forget_loss", "ME+GD", "--optim_cfg", "dual_adam", "--schedule", "joint",
              "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "2", "--batch_size", "1", "--max_length", "48",
              "--device", "cpu"]
    launch_two_processes("LLM/main_forget.py",
                         common + ["--gradient_accumulation_steps", "1", "--save_dir", str(tmp_path / "two")])
    main_forget.main(common + ["--gradient_accumulation_steps", "2", "--save_dir", str(tmp_path / "one")])
    runs = {n: tmp_path / n / "1" / "unlearn_times_1" for n in ("one", "two")}
    records = {n: json.loads((d / "run.json").read_text()) for n, d in runs.items()}
    assert records["two"]["metrics"]["num_processes"] == 2
    assert [h["objective"] for h in records["two"]["history"]] == ["joint"] * records["one"]["metrics"]["max_steps"]
    for a, b in zip(records["one"]["history"], records["two"]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    one = load_file(str(runs["one"] / "checkpoint-last" / "model.safetensors"))
    two = load_file(str(runs["two"] / "checkpoint-last" / "model.safetensors"))
    start = load_file(str(tiny_model / "model.safetensors"))
    assert any(not torch.equal(start[k], one[k]) for k in one)
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
