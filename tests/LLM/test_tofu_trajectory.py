"""The TOFU evidence trajectory: a best-setting run made again with --save_steps, each checkpoint evaluated."""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from benchmarks.evidence import tofu
from benchmarks.evidence.design import trajectory_summary
from common.evidence_runs import Call


def test_forget_steps_count_the_forget_batches_of_each_schedule():
    # alternating, 1 forget + 5 retain steps per cycle: the forget step comes first
    assert [tofu.forget_steps_done(s, True, 1, 5) for s in (0, 1, 2, 6, 7, 120, 600)] == [0, 1, 1, 1, 2, 20, 100]
    assert [tofu.forget_steps_done(s, True, 2, 1) for s in (1, 2, 3, 4)] == [1, 2, 2, 3]
    assert tofu.forget_steps_done(37, False, 1, 5) == 37  # joint: one forget batch per step


def test_trajectory_interval_is_whole_cycles_near_a_fifth_of_the_run():
    # the evidence preset: 600 alternating steps (cycles of 6) and 100 joint steps, both 20 forget steps apart
    assert tofu.trajectory_interval(600, True, 1, 5, 5) == 120
    assert tofu.trajectory_interval(100, False, 1, 5, 5) == 20
    assert tofu.trajectory_interval(4, True, 1, 2, 5) == 3  # at least one cycle


def test_trajectory_reruns_the_run_with_checkpoints_and_ends_at_its_metrics(tmp_path, tofu_dir, tiny_model):
    """A finished run (unlearn_and_evaluate), then its trajectory: checkpoints every 2 forget steps (6 optimizer
    steps of 1 forget + 2 retain), each evaluated and deleted; the last point is the finished run's metrics, and
    read_trajectory starts at the original model's."""
    save = tmp_path / "ME+GD" / "dual_adam" / "seed1"
    forget = ("--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01", "--task_list", "1",
              "--forget_loss", "ME+GD", "--forget_coeff", "0.1", "--optim_cfg", "dual_adam", "--alternate",
              "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "1e-2", "--num_epochs", "3", "--batch_size", "1",
              "--gradient_accumulation_steps", "1", "--max_length", "48", "--seed", "1", "--save_dir", str(save),
              "--overwrite", "--device", "cpu")
    evaluate = ("--data_path", str(tofu_dir), "--split", "forget01", "--task_id", "1", "--ds_size", "2",
                "--max_new_tokens", "4", "--batch_size", "4", "--device", "cpu")
    run = tofu.TofuRun(forget, evaluate, str(save))
    tofu.unlearn_and_evaluate(run)
    finished = json.loads((save / tofu.RESULT).read_text())

    modality = tofu.TofuEvidence(argparse.Namespace(out_dir=str(tmp_path), optims=["dual_adam"], seeds=[1],
                                                    grid_low=1e-3, grid_high=1e-2, points_per_decade=3,
                                                    retain_lrs=[1e-3], max_extensions=0, stability=True))
    assert modality.config.stability and modality.progress == "forget step"
    call = modality.trajectory_call("ME+GD", "dual_adam", Call("benchmarks.evidence.tofu:unlearn_and_evaluate",
                                                              run, save, tofu.RESULT))
    assert call.save_dir == save / "trajectory" and not call.done
    tofu.record_trajectory(tofu.TofuTrajectory(run, points=3))  # the engine's runner calls it the same way
    assert call.done
    record = json.loads((save / "trajectory" / tofu.TRAJECTORY).read_text())
    # 2 forget rows at batch 1 -> 2 cycles of 3 steps per epoch, 3 epochs = 18 steps (6 forget steps)
    assert record["max_steps"] == 18 and record["interval_steps"] == 6
    assert [(p["step"], p["progress"]) for p in record["points"]] == [(6, 2), (12, 4), (18, 6)]
    assert record["matches_finished_run"] and record["max_abs_difference"] == 0.0
    last = record["points"][-1]
    for key in ("Forget ROUGE", "TOFU Model Utility"):
        assert last[key] == finished[key]
    assert record["points"][0] != last  # the model moved between the checkpoints
    assert not list((save / "trajectory").glob("1/unlearn_times_1/checkpoint-*"))  # evaluated, then deleted

    original = {"Forget ROUGE": 0.9, "TOFU Model Utility": 0.4, "Forget Quality": 0.01}
    modality.prepared = SimpleNamespace(original=original)
    trajectory = modality.read_trajectory(call)
    assert trajectory[0] == {"progress": 0, **original} and trajectory[1:] == record["points"]
    summary = trajectory_summary([trajectory, trajectory], modality.stability_metrics)
    assert [p["progress"] for p in summary["points"]] == [0, 2, 4, 6]
    assert summary["end_std"] == {key: 0.0 for key in tofu.GAP_KEYS}


def test_a_rerun_that_ends_elsewhere_is_recorded_as_not_matching(tmp_path, tofu_dir, tiny_model):
    save = tmp_path / "seed1"
    forget = ("--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01", "--task_list", "1",
              "--forget_loss", "GA+GD", "--lr", "1e-2", "--num_epochs", "2", "--batch_size", "2",
              "--gradient_accumulation_steps", "1", "--max_length", "48", "--seed", "1", "--save_dir", str(save),
              "--overwrite", "--device", "cpu")
    evaluate = ("--data_path", str(tofu_dir), "--split", "forget01", "--task_id", "1", "--ds_size", "2",
                "--max_new_tokens", "4", "--device", "cpu")
    run = tofu.TofuRun(forget, evaluate, str(save))
    tofu.unlearn_and_evaluate(run)
    metrics = json.loads((save / tofu.RESULT).read_text())
    metrics["Forget ROUGE"] += 0.25  # as if the first run had given other numbers
    (save / tofu.RESULT).write_text(json.dumps(metrics))
    tofu.record_trajectory(tofu.TofuTrajectory(run, points=2))
    record = json.loads((save / "trajectory" / tofu.TRAJECTORY).read_text())
    assert not record["matches_finished_run"] and record["max_abs_difference"] == pytest.approx(0.25)
    # joint steps (no --alternate): each step is a forget step; 1 batch per epoch, 2 epochs, points every step
    assert [p["progress"] for p in record["points"]] == [1, 2]


def test_schedule_free_checkpoints_along_the_run_hold_the_weights_to_evaluate(tmp_path, tofu_dir, tiny_model,
                                                                              monkeypatch):
    """A trajectory of a schedule-free optimizer (dual_sf_adam) evaluates the schedule-free average at every
    checkpoint, not the point it trains at: checkpoint-3 is saved inside evaluation_weights."""
    pytest.importorskip("schedulefree")
    import contextlib

    from LLM import main_forget, unlearn
    from LLM.models import load_causal_lm

    swaps = []
    real = unlearn.evaluation_weights

    @contextlib.contextmanager
    def recording(optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        with real(optimizer):
            swaps.append((before, [p.detach().clone() for p in params]))
            yield

    monkeypatch.setattr(unlearn, "evaluation_weights", recording)
    save = tmp_path / "sf"
    main_forget.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", "dual_sf_adam", "--alternate",
                      "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "0.0025", "--num_epochs", "2",
                      "--batch_size", "2", "--gradient_accumulation_steps", "1", "--max_length", "32", "--seed", "0",
                      "--save_steps", "3", "--save_dir", str(save), "--device", "cpu"])
    (train_point, average), = swaps  # one intermediate checkpoint: step 3 of 6
    saved = [p.detach() for p in load_causal_lm(str(save / "1" / "unlearn_times_1" / "checkpoint-3")).parameters()]
    assert all(any(torch.equal(p, a) for a in average) for p in saved)
    assert not any(any(torch.equal(p, y) for y in train_point) for p in saved if p.dim() > 1)
