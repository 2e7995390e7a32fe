"""Fine-tune -> forget (ME+GD with dual_adam, alternating) -> eval on the tiny model, through main(argv)."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from LLM import eval as eval_script
from LLM import main_forget, main_train, parse_result


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_finetune_forget_eval(tmp_path, tofu_dir, tiny_model, capsys):
    ft_dir = tmp_path / "ft"
    main_train.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "full",
                     "--lr", "1e-2", "--num_epochs", "2", "--batch_size", "4", "--gradient_accumulation_steps", "1",
                     "--max_length", "64", "--seed", "0", "--save_dir", str(ft_dir), "--device", "cpu"])
    record = json.loads((ft_dir / "run.json").read_text())
    assert record["metrics"]["num_rows"] == 12 and record["metrics"]["max_steps"] == 6
    assert record["config"]["dtype"] == "float32" and record["config"]["attn_implementation"] is None
    assert record["history"][-1]["loss"] < record["history"][0]["loss"]

    save = tmp_path / "unlearn"
    forget_args = ["--model_path", str(ft_dir), "--data_path", str(tofu_dir), "--split", "forget01",
                   "--task_list", "1", "--forget_loss", "ME+GD", "--optim_cfg", "dual_adam", "--alternate",
                   "--forget_freq", "1", "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "5e-3",
                   "--num_epochs", "2", "--batch_size", "2", "--gradient_accumulation_steps", "1",
                   "--forget_coeff", "0.1", "--max_length", "64", "--save_dir", str(save), "--device", "cpu"]
    main_forget.main(forget_args)
    out = save / "1" / "unlearn_times_1"
    run = json.loads((out / "run.json").read_text())
    # forget01 task 1: 2 forget rows; retain 8 + 2 rows of task 2 -> forget side limits:
    # steps/epoch = (1 + 2/1) * ceil(2 / 2) = 3.
    assert run["metrics"]["steps_per_epoch"] == 3 and run["metrics"]["max_steps"] == 6
    assert run["config"]["dtype"] == "float32"  # --dtype default on CPU, recorded
    assert [h["objective"] for h in run["history"]] == ["forget", "retain", "retain"] * 2
    before, after = weights(ft_dir), weights(out / "checkpoint-last")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # Same seed, same numbers.
    save2 = tmp_path / "unlearn2"
    main_forget.main(forget_args[:-4] + ["--save_dir", str(save2), "--device", "cpu"])
    again = weights(save2 / "1" / "unlearn_times_1" / "checkpoint-last")
    assert all(torch.equal(after[k], again[k]) for k in after)

    retain_eval = tmp_path / "retain_eval"
    missing = ["--embedding_model", str(tmp_path / "no_embedder"), "--nli_model", str(tmp_path / "no_nli")]
    eval_script.main(["--model_path", str(ft_dir), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_id", "1", "--max_new_tokens", "8", "--save_dir", str(retain_eval), "--device", "cpu"]
                     + missing)
    summary = eval_script.main(["--model_path", str(out / "checkpoint-last"), "--data_path", str(tofu_dir),
                                "--split", "forget01", "--task_id", "1", "--max_new_tokens", "8",
                                "--retain_result", str(retain_eval), "--device", "cpu"] + missing)
    eval_dir = out / "eval_results-last"
    for name in ("eval_log.json", "eval_real_author_wo_options.json", "eval_real_world_wo_options.json",
                 "eval_log_forget.json", "aggregate_stat.json", "aggregate_stat.txt", "run.json"):
        assert (eval_dir / name).is_file(), name
    forget_stats = json.loads((eval_dir / "eval_log_forget.json").read_text())
    assert len(forget_stats["avg_gt_loss"]) == 2 and len(forget_stats["average_perturb_loss"][0]) == 2
    assert 0.0 <= summary["Forget Quality"] <= 1.0 and 0.0 <= summary["TOFU Model Utility"] <= 1.0
    assert len(forget_stats["idk_rougeL_recall"]) == 2 and len(forget_stats["avg_idk_loss"]) == 2
    # no judge models on this machine: the other metrics are reported, the skipped ones named on one line
    assert "Model Utility" not in summary and "cosine_similarity" not in forget_stats
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2  # one line per eval.py run
    assert "Cosine Similarity" in skipped[0] and "--embedding_model" in skipped[0]
    assert "--nli_model" in skipped[0] and "Untargeted Forget Efficacy" in skipped[0]
    assert "TOFU Model Utility" in out

    table = parse_result.main(["--root", str(tmp_path), "--save_csv", str(tmp_path / "table.csv"),
                               "--plot", str(tmp_path / "fq_mu.png"), "--x_metric", "TOFU Model Utility",
                               "--y_metric", "Forget Quality"])
    assert (tmp_path / "table.csv").is_file() and (tmp_path / "fq_mu.png").is_file()
    assert len(table) == 2
