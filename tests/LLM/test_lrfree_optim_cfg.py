"""``--optim_cfg dual_sf_adam`` through main_forget: schedule-free forget steps, AdamW retain steps, and the
saved model is the schedule-free average (the weights to evaluate), not the point it trained at."""
from __future__ import annotations

import json

import pytest
import torch

from LLM import main_forget, trainer
from LLM.models import load_causal_lm

pytest.importorskip("schedulefree")


def test_schedule_free_pair_runs_and_saves_its_average(tmp_path, tofu_dir, tiny_model, monkeypatch):
    swaps = []
    real_eval_weights = trainer.eval_weights

    def recording_eval_weights(optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        real_eval_weights(optimizer)
        swaps.append((before, [p.detach().clone() for p in params]))

    monkeypatch.setattr(trainer, "eval_weights", recording_eval_weights)
    save = tmp_path / "sf"
    main_forget.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", "dual_sf_adam", "--alternate",
                      "--retain_freq", "2", "--lr", "1e-3", "--forget_lr", "0.0025", "--num_epochs", "2",
                      "--batch_size", "2", "--gradient_accumulation_steps", "1", "--max_length", "32",
                      "--seed", "0", "--save_dir", str(save), "--device", "cpu"])
    out = save / "1" / "unlearn_times_1"
    history = json.loads((out / "run.json").read_text())["history"]
    assert [h["objective"] for h in history] == ["forget", "retain", "retain"] * 2
    # retain steps at the scheduled --lr, forget steps at --forget_lr times the schedule's factor (as dual_adam's)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = trainer.build_scheduler(probe, max_steps=6, warmup_steps=3)
    for h in history:
        ratio = 0.0025 / 1e-3 if h["objective"] == "forget" else 1.0
        assert h["lr"] == pytest.approx(ratio * probe.param_groups[0]["lr"], rel=1e-12)
        scheduler.step()

    (before, after), = swaps  # one swap, after the last step
    saved = [p.detach() for p in load_causal_lm(str(out / "checkpoint-last")).parameters()]
    matrices = [p for p in saved if p.dim() > 1]
    assert all(any(torch.equal(p, a) for a in after) for p in saved)
    assert not any(any(torch.equal(p, b) for b in before) for p in matrices)  # y was not saved
