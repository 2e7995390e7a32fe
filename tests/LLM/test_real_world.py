"""Real-world unlearning (forget / neighbor sets): unlearn -> eval end to end, step counts, skips and errors."""
from __future__ import annotations

import json
import math

import torch
from safetensors.torch import load_file

from LLM import real_world_eval, real_world_unlearn
from LLM.metrics import downstream_summary

def common_args(model, data, save):
    return ["--model_path", str(model), "--data_path", str(data), "--save_dir", str(save), "--device", "cpu",
            "--max_length", "48", "--batch_size", "2", "--gradient_accumulation_steps", "1"]


def test_unlearn_then_eval(tmp_path, real_world_dir, tiny_model, capsys):
    save = tmp_path / "dual"
    argv = common_args(tiny_model, real_world_dir, save) + [
        "--forget_loss", "ME+GD", "--alternate", "--optim_cfg", "dual_adam", "--retain_freq", "2",
        "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "1", "--seed", "3"]
    metrics = real_world_unlearn.main(argv)
    # Alternating: retain side limits, (1 + 1/2) * ceil(6 / 2) = 4 steps (forget, retain, retain, forget).
    assert metrics["num_forget"] == 4 and metrics["num_retain"] == 6 and metrics["max_steps"] == 4
    run = json.loads((save / "run.json").read_text())
    assert [h["objective"] for h in run["history"]] == ["forget", "retain", "retain", "forget"]
    assert all(h["tokens"] > 0 for h in run["history"]) and run["metrics"]["tokens_per_second"] > 0
    before, after = load_file(str(tiny_model / "model.safetensors")), load_file(
        str(save / "checkpoint-last" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # A finished run is skipped unless --overwrite_dir.
    capsys.readouterr()
    assert real_world_unlearn.main(argv) is None
    assert "Task already unlearned" in capsys.readouterr().out

    summary = real_world_eval.main(["--model_path", str(tiny_model), "--data_path", str(real_world_dir),
                                    "--save_dir", str(save), "--max_new_tokens", "6", "--batch_size", "4",
                                    "--device", "cpu"])
    eval_dir = save / "eval_results-last"
    for name in ("eval_log.json", "eval_log_forget.json", "eval_log_aggregated.json", "unlearning_results.txt",
                 "aggregate_stat.json", "aggregate_stat.txt", "run.json"):
        assert (eval_dir / name).is_file(), name
    forget_stats = json.loads((eval_dir / "eval_log_forget.json").read_text())
    neighbor_stats = json.loads((eval_dir / "eval_log.json").read_text())
    assert len(forget_stats["avg_gt_loss"]) == 4 and len(neighbor_stats["avg_gt_loss"]) == 3
    assert forget_stats["generated_text"][0][2] == "Ana Lind was born in Oslo."
    # Only the neighbor set counts for utility: harmonic mean of its ROUGE, probability and truth ratio.
    parts = [summary[f"Retain {m}"] for m in ("ROUGE", "Probability", "Truth Ratio")]
    expected = 0.0 if min(parts) == 0 else len(parts) / sum(1 / p for p in parts)
    assert math.isclose(summary["TOFU Model Utility"], expected)
    assert "Real Authors ROUGE" not in summary and "Forget Quality" not in summary
    text = (eval_dir / "unlearning_results.txt").read_text()
    assert "forget_loss: ME+GD" in text and "optim_cfg: dual_adam" in text and "unlearn_step: last" in text
    assert "After Unlearn Step last" in capsys.readouterr().out

    # Step 0 evaluates --model_path, the model before unlearning, into eval_results-0.
    before_summary = real_world_eval.main(["--model_path", str(tiny_model), "--data_path", str(real_world_dir),
                                           "--save_dir", str(save), "--eval_unlearn_step", "0", "--ds_size", "2",
                                           "--max_new_tokens", "6", "--device", "cpu"])
    before_stats = json.loads((save / "eval_results-0" / "eval_log_forget.json").read_text())
    assert len(before_stats["avg_gt_loss"]) == 2
    assert before_stats["avg_gt_loss"] != forget_stats["avg_gt_loss"][:2]
    assert before_summary["Forget ROUGE"] >= 0.0


def test_joint_step_count_and_idk(tmp_path, real_world_dir, tiny_model):
    save = tmp_path / "joint"
    metrics = real_world_unlearn.main(common_args(tiny_model, real_world_dir, save) + [
        "--forget_loss", "IDK+AP", "--optim_cfg", "adam", "--num_epochs", "3", "--lr", "1e-3"])
    # The original's joint count: num_epochs * len(forget) // (batch * accumulation * processes) = 3 * 4 // 2.
    assert metrics["max_steps"] == 6 and metrics["ref_model_path"] is None
    assert (save / "checkpoint-last" / "config.json").is_file()


def test_downstream_summary():
    results = {"arc_challenge": {"acc_norm,none": 0.5, "acc,none": 0.4}, "mmlu": {"acc,none": 0.25},
               "gsm8k": {"exact_match,flexible-extract": 0.125}, "other": {"acc,none": 1.0}}
    assert downstream_summary(results) == {"ARC-C": 0.5, "MMLU": 0.25, "GSM8k": 0.125}


def test_real_world_errors(tmp_path, real_world_dir, tiny_model, run_error, monkeypatch):
    save = tmp_path / "bad"
    base = common_args(tiny_model, real_world_dir, save)
    assert "--forget_loss: unknown value 'XX'" in run_error(real_world_unlearn.main, base + ["--forget_loss", "XX"])
    assert "no nope.json or nope.jsonl" in run_error(real_world_unlearn.main, base + ["--retain", "nope"])
    assert "needs --alternate" in run_error(real_world_unlearn.main, base + ["--optim_cfg", "dual_adam"])
    assert "--idk_path" in run_error(real_world_unlearn.main, base + ["--forget_loss", "IDK+AP", "--idk_path",
                                                                      str(tmp_path / "none.jsonl")])
    assert not save.exists()

    eval_base = ["--model_path", str(tiny_model), "--data_path", str(real_world_dir), "--save_dir", str(save),
                 "--device", "cpu"]
    assert "no checkpoint-last" in run_error(real_world_eval.main, eval_base)
    assert "--eval_unlearn_step 'x'" in run_error(real_world_eval.main, eval_base + ["--eval_unlearn_step", "x"])
    assert "row 0 lacks field(s) nope" in run_error(real_world_eval.main, eval_base + ["--answer_key", "nope"])
    monkeypatch.setattr(real_world_eval.importlib.util, "find_spec", lambda name: None)
    assert "pip install lm-eval" in run_error(real_world_eval.main, eval_base + ["--downstream_tasks", "mmlu"])
    assert not save.exists()
