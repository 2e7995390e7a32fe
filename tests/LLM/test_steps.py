"""--save_steps checkpoints, eval.py --eval_unlearn_step on them, and parse_result over the steps."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from LLM import eval as eval_script
from LLM import main_forget, parse_result


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_checkpoints_each_epoch_evaluated_and_plotted(tmp_path, tofu_dir, tiny_model):
    base = ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01", "--task_list", "1",
            "--forget_loss", "GA+GD", "--lr", "1e-2", "--num_epochs", "3", "--batch_size", "2",
            "--gradient_accumulation_steps", "1", "--max_length", "48", "--device", "cpu"]
    save = tmp_path / "run" / "seed1"
    main_forget.main(base + ["--save_dir", str(save), "--save_steps", "steps_per_epoch"])
    run = save / "1" / "unlearn_times_1"
    record = json.loads((run / "run.json").read_text())
    assert record["metrics"]["steps_per_epoch"] == 1 and record["metrics"]["max_steps"] == 3
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-last"]
    start, first, second, last = (weights(tiny_model), weights(run / "checkpoint-1"), weights(run / "checkpoint-2"),
                                  weights(run / "checkpoint-last"))
    for a, b in ((start, first), (first, second), (second, last)):
        assert any(not torch.equal(a[k], b[k]) for k in a)
    # saving along the way does not change the run
    plain = tmp_path / "plain"
    main_forget.main(base + ["--save_dir", str(plain)])
    assert not list((plain / "1" / "unlearn_times_1").glob("checkpoint-[0-9]*"))
    again = weights(plain / "1" / "unlearn_times_1" / "checkpoint-last")
    assert all(torch.equal(last[k], again[k]) for k in last)

    evaluate = ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                "--unlearn_dir", str(run), "--ds_size", "2", "--max_new_tokens", "4", "--device", "cpu"]
    for step in ("0", "1", "3"):  # 0: the model before unlearning; 3 = max_steps: checkpoint-last
        eval_script.main(evaluate + ["--eval_unlearn_step", step])
        assert (run / f"eval_results-{step}" / "aggregate_stat.json").is_file()
    record = json.loads((run / "eval_results-3" / "run.json").read_text())
    assert record["config"]["eval_unlearn_step"] == "3"

    table = parse_result.main(["--root", str(tmp_path / "run"), "--plot", str(tmp_path / "steps.png"),
                               "--x_metric", "TOFU Model Utility", "--y_metric", "Forget ROUGE"])
    assert [(row["setting"], row["step"], row["runs"]) for row in table] == \
        [("1/unlearn_times_1", "0", 1), ("1/unlearn_times_1", "1", 1), ("1/unlearn_times_1", "3", 1)]
    stats = json.loads((run / "eval_results-1" / "aggregate_stat.json").read_text())
    assert table[1]["Forget ROUGE"] == stats["Forget ROUGE"]
    assert (tmp_path / "steps.png").stat().st_size > 0


def test_seed_changes_the_run(tmp_path, tofu_dir, tiny_model):
    """Unlike the original (whose Trainer re-seeds with 42), --seed decides the data order."""
    base = ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01", "--task_list", "1",
            "--forget_loss", "GA+GD", "--lr", "1e-2", "--num_epochs", "1", "--batch_size", "1",
            "--gradient_accumulation_steps", "1", "--max_length", "48", "--device", "cpu"]
    runs = {}
    for seed in ("1", "2"):
        main_forget.main(base + ["--seed", seed, "--save_dir", str(tmp_path / seed)])
        runs[seed] = weights(tmp_path / seed / "1" / "unlearn_times_1" / "checkpoint-last")
    assert any(not torch.equal(runs["1"][k], runs["2"][k]) for k in runs["1"])
