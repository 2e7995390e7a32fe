"""Kill sequential LLM unlearning with SIGKILL in its second task, rerun it with --resume: the same bits.

The straight and resumed runs run in-process (one thread), the killed one as a program
(``OMP_NUM_THREADS=1``); the resumed run skips the finished task 1 and continues task 2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.checkpointing import KILL_AT_STEP_ENV
from LLM import main_forget, main_train

# Two tasks of 8 steps each (2 epochs of forget, retain, forget, retain); snapshots every 3 steps.
TIMING = {"train_seconds", "tokens_per_second", "resumed_at_step", "model_path"}


def forget_args(tofu_dir, tiny_model, save_every=3):
    return ["--model_family", "plain", "--model_path", str(tiny_model), "--data_path", str(tofu_dir),
            "--split", "forget01", "--task_list", "1,2", "--forget_loss", "ME+GD", "--alternate", "--retain_freq", "1",
            "--optim_cfg", "dual_adam", "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "2",
            "--batch_size", "1", "--gradient_accumulation_steps", "1", "--max_length", "48", "--device", "cpu",
            "--save_every", str(save_every)]


def task_dir(save_dir, k):
    return Path(save_dir) / "1-2" / f"unlearn_times_{k}"


def test_sigkill_in_second_task_then_resume_equals_straight_run(tofu_dir, tiny_model, tmp_path, killed_run,
                                                                 one_thread, capsys):
    argv = forget_args(tofu_dir, tiny_model)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main_forget.main(argv + ["--save_dir", str(straight)])
    killed_run("LLM.main_forget", argv + ["--save_dir", interrupted], kill_at=13)  # task 2, step 5
    assert (task_dir(interrupted, 1) / "run.json").is_file() and not (task_dir(interrupted, 2) / "run.json").exists()
    snapshot = torch.load(task_dir(interrupted, 2) / "resume_state.pt")
    assert snapshot["loop"]["step"] == 3
    optimizer_state = snapshot["objects"]["optimizer"]["state"][0]
    assert {"exp_avg_forget", "exp_avg_retain", "exp_avg_sq_forget", "exp_avg_sq_retain"} <= set(optimizer_state)
    capsys.readouterr()

    main_forget.main(argv + ["--save_dir", str(interrupted), "--resume"])
    out = capsys.readouterr().out
    assert "task 1 already unlearned" in out and "resuming from" in out
    for k in (1, 2):
        a = load_file(str(task_dir(straight, k) / "checkpoint-last" / "model.safetensors"))
        b = load_file(str(task_dir(interrupted, k) / "checkpoint-last" / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
        records = [json.loads((task_dir(d, k) / "run.json").read_text()) for d in (straight, interrupted)]
        assert records[0]["history"] == records[1]["history"] and len(records[0]["history"]) == 8
        assert ({key: v for key, v in records[0]["metrics"].items() if key not in TIMING}
                == {key: v for key, v in records[1]["metrics"].items() if key not in TIMING})
        assert not (task_dir(interrupted, k) / "resume_state.pt").exists()
    assert records[1]["metrics"]["resumed_at_step"] == 3


def test_finished_results_are_refused_and_a_truncated_snapshot_is_one_line(tofu_dir, tiny_model, tmp_path,
                                                                            run_error, capsys):
    done = task_dir(tmp_path / "run", 1)
    (done / "checkpoint-last").mkdir(parents=True)
    (done / "run.json").write_text("{}")
    argv = forget_args(tofu_dir, tiny_model) + ["--save_dir", str(tmp_path / "run")]
    err = run_error(main_forget.main, argv)
    assert f"--save_dir {done}: already holds finished results (checkpoint-last, run.json)" in err
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["1-2", "checkpoint-last", "run.json",
                                                                     "unlearn_times_1"]

    model_dir = tmp_path / "ft"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    train_argv = ["--model_family", "plain", "--model_path", str(tiny_model), "--data_path", str(tofu_dir),
                  "--split", "retain90", "--save_dir", str(model_dir)]
    err = run_error(main_train.main, train_argv)
    assert "already holds finished results (config.json)" in err and "--overwrite" in err
    (model_dir / "run.json").write_text('{"metrics": {"final_loss": 0.5}}')
    assert main_train.main(train_argv + ["--resume"]) == {"final_loss": 0.5}  # finished: skipped, as in sweeps
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "run.json"]

    snapshot = task_dir(tmp_path / "killed", 1) / "resume_state.pt"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"\x80\x02 truncated pickle")
    with pytest.raises(SystemExit) as exit_info:
        main_forget.main(forget_args(tofu_dir, tiny_model) + ["--save_dir", str(tmp_path / "killed"), "--resume"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the model-loading progress bars
    assert exit_info.value.code == 2
    assert last.startswith(f"error: --resume {snapshot}: cannot be read as a torch checkpoint") and "truncated" in last


@pytest.mark.slow
def test_two_processes_resume_on_every_rank(tofu_dir, tiny_model, tmp_path, launch_two_processes):
    """``accelerate launch`` with 2 CPU processes: rank 0 writes the snapshot, both ranks load it.

    Two processes take 4 steps per task; both kill themselves at task 2's step 3, after the
    snapshot of its step 2.
    """
    argv = forget_args(tofu_dir, tiny_model, save_every=2)
    launch_two_processes("LLM/main_forget.py", argv + ["--save_dir", str(tmp_path / "straight")])
    os.environ[KILL_AT_STEP_ENV] = "7"
    try:
        with pytest.raises(AssertionError):  # the launcher reports the killed processes
            launch_two_processes("LLM/main_forget.py", argv + ["--save_dir", str(tmp_path / "interrupted")])
    finally:
        del os.environ[KILL_AT_STEP_ENV]
    snapshot = torch.load(task_dir(tmp_path / "interrupted", 2) / "resume_state.pt")
    assert len(snapshot["rng"]) == 2 and snapshot["loop"]["step"] == 2
    launch_two_processes("LLM/main_forget.py", argv + ["--save_dir", str(tmp_path / "interrupted"), "--resume"])
    for k in (1, 2):
        a = load_file(str(task_dir(tmp_path / "straight", k) / "checkpoint-last" / "model.safetensors"))
        b = load_file(str(task_dir(tmp_path / "interrupted", k) / "checkpoint-last" / "model.safetensors"))
        assert all(torch.equal(a[key], b[key]) for key in a)
        histories = [json.loads((task_dir(tmp_path / d, k) / "run.json").read_text())["history"]
                     for d in ("straight", "interrupted")]
        assert histories[0] == histories[1]
