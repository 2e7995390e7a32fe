"""``--report_to``: moment norms by objective, and TensorBoard event files from every modality's runs."""
import argparse
import sys
from pathlib import Path

import pytest
import torch

from common.errors import UsageError
from common.tracking import add_report_args, objective_lrs, tracking
from dualoptim import DecoupledAdamW, DualOptim, SharedOptim, moment_norms


def event_scalars(folder):
    """``{tag: [(step, value), ...]}`` of the TensorBoard event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = {path.parent for path in folder.rglob("events.out.tfevents.*")}
    assert len(runs) == 1, runs
    events = EventAccumulator(str(runs.pop()))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_moment_norms_are_the_norms_of_each_objectives_buffers():
    weight = torch.nn.Parameter(torch.zeros(4))
    g_forget, g_retain = torch.tensor([1.0, 2.0, 2.0, 0.0]), torch.tensor([0.0, 3.0, 0.0, 4.0])
    dual = DualOptim([weight], "adamw", 1e-3, 0.0, "sgd", 0.1, 0.9, 0.0)
    weight.grad = g_forget.clone()
    dual.forget_step()
    weight.grad = g_retain.clone()
    dual.retain_step()
    norms = moment_norms(dual)
    # AdamW's first step: m = (1 - 0.9) g, v = (1 - 0.999) g^2; SGD's first momentum buffer is the gradient
    assert norms == pytest.approx({"forget/exp_avg": 0.1 * 3.0, "forget/exp_avg_sq": 0.001 * 33 ** 0.5,
                                   "retain/momentum_buffer": 5.0})
    decoupled = DecoupledAdamW([weight], lr=1e-3)
    decoupled.set_objective("retain")
    weight.grad = g_retain.clone()
    decoupled.step()
    assert moment_norms(decoupled) == pytest.approx({"forget/exp_avg": 0.0, "forget/exp_avg_sq": 0.0,  # not stepped
                                                     "retain/exp_avg": 0.5, "retain/exp_avg_sq": 0.001 * 337 ** 0.5})
    shared = SharedOptim(torch.optim.SGD([weight], lr=0.1, momentum=0.9), 0.1, 0.01)
    weight.grad = g_forget.clone()
    shared.forget_step()
    assert moment_norms(shared) == pytest.approx({"shared/momentum_buffer": 3.0})
    assert objective_lrs(shared) == pytest.approx({"forget": 0.1, "retain": 0.01})
    assert objective_lrs(DecoupledAdamW([weight], lr=1e-3, forget_lr_ratio=3.0)) == pytest.approx(
        {"forget": 3e-3, "retain": 1e-3})


def report_args(kind, steps=1):
    parser = argparse.ArgumentParser()
    add_report_args(parser)
    return parser.parse_args(["--report_to", kind, "--logging_steps", str(steps)])


def test_wandb_without_the_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from common.errors import ArgumentParser

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    parser = ArgumentParser(prog="main.py")
    add_report_args(parser)
    with pytest.raises(SystemExit):  # refused while the command line is read, before anything is written
        parser.parse_args(["--report_to", "wandb"])
    assert capsys.readouterr().err == ("error: main.py: argument --report_to: wandb needs the wandb package "
                                       "(pip install wandb)\n")
    record = {"report_to": "wandb", "logging_steps": 1}  # a record that bypassed the parser
    with pytest.raises(UsageError, match=r"--report_to wandb: needs the wandb package \(pip install wandb\)"):
        with tracking(record, tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_logging_steps_and_final_metrics(tmp_path):
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = DualOptim([weight], "adamw", 1e-3, 0.0, "sgd", 0.1, 0.9, 0.0)
    with tracking(report_args("tensorboard", steps=2), tmp_path) as reporter:
        for step, objective in enumerate(("forget", "retain", "forget", "retain"), 1):
            weight.grad = torch.ones(2) * step
            getattr(optimizer, f"{objective}_step")()
            reporter.step({objective: float(step)}, optimizer)
        reporter.metrics({"UA": 12.5, "name": "ignored", "done": True})
    scalars = event_scalars(tmp_path / "tensorboard")
    assert scalars["loss/forget"] == [(2, 1.0), (4, 3.0)] and scalars["loss/retain"] == [(2, 2.0), (4, 4.0)]
    assert scalars["lr/forget"][0][1] == pytest.approx(1e-3) and scalars["lr/retain"][0][1] == pytest.approx(0.1)
    assert scalars["eval/UA"] == [(4, 12.5)] and "eval/name" not in scalars and "eval/done" not in scalars
    assert {"moments/forget/exp_avg", "moments/retain/momentum_buffer"} <= set(scalars)


def test_image_classification_training_and_unlearning_report_to_tensorboard(tmp_path):
    from ImageClassification import main_random, main_train
    common = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "256", "--device", "cpu",
              "--report_to", "tensorboard", "--logging_steps", "1"]
    main_train.main(common + ["--epochs", "1", "--lr", "0.1", "--save_dir", str(tmp_path / "original")])
    trained = event_scalars(tmp_path / "original" / "tensorboard")
    assert {"loss/retain", "moments/shared/momentum_buffer", "eval/test_acc"} <= set(trained)
    save_dir = tmp_path / "rl"
    main_random.main(common + ["--num_indexes_to_replace", "60", "--unlearn", "RL", "--unlearn_epochs", "1",
                               "--unlearn_lr", "1e-3", "--retain_lr", "0.01", "--optim", "dual", "--save_dir",
                               str(save_dir), "--model_path", str(tmp_path / "original" / "0model_SA_best.pth.tar")])
    scalars = event_scalars(save_dir / "tensorboard")
    assert {"loss/forget", "loss/retain", "lr/forget", "lr/retain", "moments/forget/exp_avg",
            "moments/forget/exp_avg_sq", "moments/retain/momentum_buffer", "eval/UA", "eval/MIA"} <= set(scalars)
    steps = [step for step, _ in scalars["lr/forget"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2  # every optimizer step logged
    assert scalars["lr/forget"][0][1] == pytest.approx(1e-3) and scalars["lr/retain"][0][1] == pytest.approx(0.01)


def test_llm_unlearning_reports_both_objectives_moments(tmp_path, tofu_dir, tiny_model):
    from LLM import main_forget
    save = tmp_path / "unlearn"
    main_forget.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", "dual_adam", "--alternate",
                      "--lr", "1e-3", "--forget_lr", "5e-3", "--num_epochs", "1", "--batch_size", "2",
                      "--gradient_accumulation_steps", "1", "--max_length", "32", "--save_dir", str(save),
                      "--device", "cpu", "--report_to", "tensorboard", "--logging_steps", "1"])
    scalars = event_scalars(save / "1" / "unlearn_times_1" / "tensorboard")
    assert {"moments/forget/exp_avg", "moments/retain/exp_avg", "loss/forget", "loss/retain",
            "eval/final_loss"} <= set(scalars)
    assert scalars["lr/forget"][0][1] == pytest.approx(5 * scalars["lr/retain"][0][1])  # forget lr / lr


def test_ddpm_unlearning_reports_to_tensorboard(tmp_path):
    from ImageGeneration.DDPM import main_forget, main_train
    from benchmarks.evidence.ddpm import sized_config
    train_cfg = sized_config("pretrain", tmp_path, 2)
    pretrained = main_train.main(["--exp_root", str(tmp_path), "--config", train_cfg, "--device", "cpu"])
    run_dir = main_forget.main(["--exp_root", str(tmp_path), "--ckpt_folder", pretrained, "--mode", "salun",
                                "--config", sized_config("saliency_unlearn", tmp_path, 3), "--dual",
                                "--device", "cpu", "--report_to", "tensorboard", "--logging_steps", "1"])
    scalars = event_scalars(Path(run_dir) / "tensorboard")
    # --dual alternates: a forget step then a remain step per iteration (3 iterations, 6 steps)
    assert [step for step, _ in scalars["loss/forget"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in scalars["loss/retain"]] == [2, 3, 4, 5, 6]
    assert {"moments/forget/exp_avg", "moments/retain/exp_avg", "eval/final_forget_loss"} <= set(scalars)
