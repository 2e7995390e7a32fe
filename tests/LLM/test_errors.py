"""Bad input: one clear line, exit status 2, nothing written."""
from __future__ import annotations

import pytest
from transformers import DistilBertConfig

from LLM import eval as eval_script
from LLM import main_forget, main_train


@pytest.fixture
def base(tmp_path, tofu_dir, tiny_model):
    save = tmp_path / "out"
    return save, ["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                  "--save_dir", str(save), "--device", "cpu", "--max_length", "32"]


@pytest.mark.parametrize("extra, message", [
    (["--forget_loss", "XX"], "--forget_loss: unknown value 'XX'"),
    (["--optim_cfg", "lion"], "--optim_cfg: unknown value 'lion'"),
    (["--split", "forget07"], "--split: unknown value 'forget07'"),
    (["--task_list", "1,3"], "--task_id 3: split forget01 has task ids 1, 2"),
    (["--task_list", "1", "--task_id", "2"], "--task_id 2: not in --task_list 1"),
    (["--task_list", "1,2", "--task_id", "2"], "previous task's model"),
    (["--optim_cfg", "dual_adam"], "needs --alternate"),
    (["--forget_loss", "ME", "--alternate"], "has no retain term"),
    (["--forget_loss", "LLMU", "--alternate"], "(mismatch+KL) reads forget rows; train it jointly"),
    (["--forget_loss", "IDK+AP", "--idk_path", "/nonexistent/idk.jsonl"], "--idk_path /nonexistent/idk.jsonl: file not found"),
])
def test_forget_bad_flags(base, run_error, extra, message):
    save, argv = base
    assert message in run_error(main_forget.main, argv + extra)
    assert not save.exists()


def test_missing_data_and_non_causal_model(tmp_path, base, tofu_dir, run_error):
    save, argv = base
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no forget01.json or forget01.jsonl" in run_error(
        main_forget.main, argv + ["--data_path", str(empty)])
    bert = tmp_path / "bert"
    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=1,
                     hidden_dim=8).save_pretrained(bert)
    assert "is not a causal language model" in run_error(main_forget.main, argv + ["--model_path", str(bert)])
    assert "folder not found" in run_error(main_train.main, argv[:2] + ["--model_path", str(tmp_path / "none")]
                                           + argv[2:4] + ["--split", "full", "--save_dir", str(save)])
    assert not save.exists()


def test_missing_field_and_eval_errors(tmp_path, tofu_dir, tiny_model, run_error):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tofu_dir.iterdir():
        (broken / f.name).write_text(f.read_text())
    (broken / "retain_perturbed.json").write_text('{"question": "q", "answer": "a"}\n')
    save = tmp_path / "ev"
    err = run_error(eval_script.main, ["--model_path", str(tiny_model), "--data_path", str(broken),
                                       "--split", "forget01", "--save_dir", str(save), "--device", "cpu"])
    assert "row 0 lacks field(s) perturbed_answer, paraphrased_answer" in err
    err = run_error(eval_script.main, ["--model_path", str(tiny_model), "--data_path", str(tofu_dir),
                                       "--split", "forget01", "--task_id", "7", "--save_dir", str(save)])
    assert "--task_id 7" in err
    err = run_error(eval_script.main, ["--model_path", str(tiny_model), "--data_path", str(tofu_dir),
                                       "--retain_result", str(tmp_path), "--split", "forget01", "--save_dir", str(save)])
    assert "--retain_result" in err and "file not found" in err
    assert not save.exists()


def test_deepspeed_launch_on_cpu_is_one_line_error(base, run_error, monkeypatch):
    # what `accelerate launch --config_file LLM/config/accelerate/zero2.yaml` sets for the script
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    save, argv = base
    err = run_error(main_forget.main, argv + ["--forget_loss", "GA+GD"])
    assert "--device cpu: the accelerate config asks for DeepSpeed, which accelerate runs on GPUs only" in err
    assert not save.exists()
