"""Loading never runs code from a file; the research code's and the project's own files load without an opt-in;
a NaN/inf loss stops every kind of loop with one line, keeping the last resume snapshot and any finished result.

The one-line errors of the entry scripts for unsafe and malformed files are cases of ``tests/test_bad_input.py``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from unsafe import malicious_checkpoint

import common.io
from common.checkpointing import Snapshotter
from dualoptim.optimizers import DualOptim
from common.errors import UsageError
from common.io import TRUST_ENV, check_state_dict, checkpoint_state_dict, load_torch_file
from common.nonfinite import NonFiniteLoss, check_finite_loss
from common.saliency import load_mask, save_masks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def untrusted(monkeypatch):
    """No opt-in from the environment or an earlier in-process ``--trust_checkpoint``."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setattr(common.io, "_trust_requested", False)
    monkeypatch.setattr(common.io, "_trust_warned", False)


# --------------------------------------------------------------------------- loading

def test_a_checkpoint_that_runs_code_is_refused_before_the_code_runs(tmp_path, untrusted):
    path = malicious_checkpoint(tmp_path)
    with pytest.raises(UsageError) as err:
        load_torch_file(path, "--model_path")
    assert str(err.value) == (f"--model_path {path}: holds posix.system, not allowed in a safely loaded file "
                              f"(tensors and plain values only); if you trust the file's source, pass "
                              f"--trust_checkpoint or set {TRUST_ENV}=1")
    assert not (tmp_path / "pwned.txt").exists()


def test_the_opt_in_loads_with_full_pickle_after_one_warning_line(tmp_path, untrusted, monkeypatch, capsys):
    monkeypatch.setenv(TRUST_ENV, "1")
    checkpoint = load_torch_file(malicious_checkpoint(tmp_path), "--model_path")
    load_torch_file(malicious_checkpoint(tmp_path), "--model_path")
    assert checkpoint["state_dict"] == 0  # os.system's exit status: full pickle ran the command
    assert (tmp_path / "pwned.txt").read_text() == "PWNED\n"
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: --trust_checkpoint: loading ")


def test_trust_checkpoint_flag_opts_in_for_the_running_script(untrusted):
    from ImageClassification.arg_parser import build_parser

    assert build_parser().parse_args([]).trust_checkpoint is False and not common.io.trust_requested()
    assert build_parser().parse_args(["--trust_checkpoint"]).trust_checkpoint is True
    assert common.io.trust_requested()


def research_code_checkpoints(model: nn.Module) -> dict:
    """Files shaped as the research code writes them (CityU-MLO/DualOptim)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[91, 136], gamma=0.1)
    return {
        # ImageClassification/main_train.py -> utils.save_checkpoint
        "0model_SA_best.pth.tar": {"result": {"train_ta": [50.5], "test_ta": [48.0], "val_ta": [49.25]},
                                   "epoch": 1, "state_dict": model.state_dict(), "best_sa": 49.25,
                                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        # ImageClassification/unlearn/impl.py save_unlearn_checkpoint: the MIA value is ndarray.mean()
        "RLcheckpoint.pth.tar": {"state_dict": model.state_dict(),
                                 "evaluation_result": {"accuracy": {"retain": 99.5, "forget": 93.0},
                                                       "entropy mia": np.float64(0.125)}},
        # ImageGeneration/DiT/forget.py: the parsed flags ride along
        "0000500.pt": {"model": model.state_dict(), "args": argparse.Namespace(lr=1e-5, forget_class=1,
                                                                               results_dir="results")},
    }


def test_the_research_code_checkpoint_formats_load_without_the_opt_in(tmp_path, untrusted):
    model = nn.Linear(3, 2)
    for name, saved in research_code_checkpoints(model).items():
        torch.save(saved, tmp_path / name)
        loaded = load_torch_file(tmp_path / name, "--model_path")
        assert list(loaded) == list(saved)
        state = checkpoint_state_dict(loaded, name, key="model" if "model" in saved else "state_dict")
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    unlearned = load_torch_file(tmp_path / "RLcheckpoint.pth.tar", "--model_path")
    assert unlearned["evaluation_result"]["entropy mia"] == 0.125
    assert type(unlearned["evaluation_result"]["entropy mia"]) is np.float64
    dit = load_torch_file(tmp_path / "0000500.pt", "--ckpt")
    assert dit["args"] == argparse.Namespace(lr=1e-5, forget_class=1, results_dir="results")
    best = load_torch_file(tmp_path / "0model_SA_best.pth.tar", "--model_path")
    assert best["scheduler"]["milestones"] == {91: 1, 136: 1} and best["best_sa"] == 49.25


def test_the_projects_own_files_load_with_plain_weights_only(tmp_path):
    """Masks, checkpoints and resume snapshots need no allowed globals at all."""
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(5)
    save_masks({0.5: {"weight": torch.ones(2, 3)}}, tmp_path, lambda t: f"with_{t}.pt")
    snapshots = Snapshotter(tmp_path, config={"save_dir": tmp_path, "betas": (0.9, 0.99), "lr": 0.1})
    snapshots.register(model=model, optimizer=optimizer, generator=generator)
    np.random.seed(3)
    snapshots.save(step=4, history=[{"loss": 0.5}])
    snapshot = torch.load(tmp_path / "resume_state.pt", weights_only=True)
    assert snapshot["config"] == {"save_dir": str(tmp_path), "betas": [0.9, 0.99], "lr": 0.1}
    assert torch.equal(torch.load(tmp_path / "with_0.5.pt", weights_only=True)["weight"], torch.ones(2, 3))
    expected = np.random.rand(3)
    np.random.seed(0)
    restored = Snapshotter(tmp_path, resume=True, config={"save_dir": str(tmp_path), "betas": [0.9, 0.99], "lr": 0.1},
                           objects={"model": model, "optimizer": optimizer, "generator": generator}).restore()
    assert restored == {"step": 4, "history": [{"loss": 0.5}]}
    assert np.array_equal(np.random.rand(3), expected)  # the NumPy RNG state survives as plain values
    assert load_mask(tmp_path / "with_0.5.pt", model)["weight"].sum() == 6


def test_malformed_state_dicts_are_one_line():
    with pytest.raises(UsageError, match=r"^x.pt: expected a state dict \(parameter name -> tensor\), got a list$"):
        check_state_dict([torch.ones(1)], "x.pt")
    with pytest.raises(UsageError, match=r"^x.pt \('state_dict'\): state dict entry 'w' is a int, expected a tensor$"):
        checkpoint_state_dict({"state_dict": {"w": 3}}, "x.pt")
    with pytest.raises(UsageError, match=r"^x.pt: holds no state dict .*got a dict with keys 'epoch'$"):
        checkpoint_state_dict({"epoch": 3}, "x.pt")


def test_sources_never_load_unsafely_and_scripts_never_opt_in():
    sources = [p for folder in ("common", "ImageClassification", "ImageGeneration", "LLM", "benchmarks")
               for p in (REPO / folder).rglob("*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "trust_remote_code=True" not in text, path
        assert "weights_only=False" not in text or path == REPO / "common" / "io.py", path
    for path in (REPO / "scripts").rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "--trust_checkpoint" not in text and TRUST_ENV not in text, path


# --------------------------------------------------------------------------- non-finite losses

def test_check_finite_loss_names_step_objective_and_lr():
    check_finite_loss(torch.tensor(1.5), 3, "forget", 0.1)
    check_finite_loss(torch.tensor(float("nan")), 3, "forget", 0.1, allow=True)
    with pytest.raises(NonFiniteLoss) as err:
        check_finite_loss(torch.tensor([1.0, float("-inf")]), 7, "retain", 2e-5)
    assert str(err.value).startswith("the retain loss is -inf at step 7 (lr 2e-05): the run stopped before that "
                                     "step; its last resume snapshot is kept")
    assert "--allow_nonfinite" in str(err.value)


def test_image_generation_loop_stops_before_the_nan_step_and_keeps_its_snapshot(tmp_path):
    from ImageGeneration.core.unlearn import run_unlearning

    def unlearn(n_iters: int, first_bad: int, **kwargs) -> nn.Module:
        """Forget/remain steps on w (grad 1 each); the forget loss is NaN from step ``first_bad`` (0-based)."""
        model = nn.Linear(1, 1, bias=False)
        nn.init.ones_(model.weight)
        optimizer = DualOptim(model.parameters(), forget_optim="sgd", forget_lr=0.5, forget_weight_decay=0.0,
                              retain_optim="sgd", retain_lr=0.25, retain_weight_decay=0.0)
        forget = lambda step: model.weight.sum() * (float("nan") if step >= first_bad else 1.0)  # noqa: E731
        run_unlearning(model, optimizer, n_iters, forget, lambda step: model.weight.sum(), grad_clip=None,
                       log_freq=0, **kwargs)
        return model

    two_steps = unlearn(2, first_bad=99).weight.detach()
    with pytest.raises(NonFiniteLoss, match=r"^the forget loss is nan at step 3 \(lr 0.5\)"):
        unlearn(5, first_bad=2, snapshots=Snapshotter(tmp_path, every=1))
    snapshot = torch.load(tmp_path / "resume_state.pt", weights_only=True)
    # the last snapshot is that of step 2: nothing stepped on the NaN loss
    assert snapshot["loop"]["step"] == 2 and torch.equal(snapshot["objects"]["model"]["weight"], two_steps)
    assert torch.isnan(unlearn(3, first_bad=2, allow_nonfinite=True).weight).all()  # the old behaviour


def test_llm_schedule_stops_on_a_nan_retain_loss():
    from LLM.schedule import BatchStream, Schedule
    from LLM.trainer import make_accelerator, run_schedule

    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    streams = {name: BatchStream([(name, i) for i in range(4)], 1, list, 0) for name in ("forget", "retain")}
    schedule = Schedule(streams, max_steps=4, accumulation=1, forget_freq=1, retain_freq=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    before = model.weight.detach().clone()

    def step_loss(objective, batch):
        return model(torch.ones(1, 2)).sum() * (float("nan") if objective == "retain" else 1.0)

    with pytest.raises(NonFiniteLoss, match=r"^the retain loss is nan at step 2 \(lr 0.01\)"):
        run_schedule(make_accelerator("cpu"), model, optimizer, scheduler, schedule, step_loss, 0.0)
    assert torch.allclose(model.weight, before - 0.01)  # the forget step only


def test_image_classification_run_stops_keeps_snapshot_and_finished_result(digits_resnet20s, tmp_path, capsys):
    """GA at a learning rate of 1e30: the first step blows the weights up and the second loss is NaN.

    GA steps the main optimizer, the retain side of a DualOptim, so its loss is reported as the retain loss."""
    from ImageClassification import main_forget

    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "eval_result.json").write_text('{"UA": 1.0}\n')
    argv = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "64", "--num_indexes_to_replace", "128",
            "--device", "cpu", "--unlearn", "GA", "--unlearn_epochs", "1", "--unlearn_lr", "1e30",
            "--model_path", str(digits_resnet20s), "--save_dir", str(save_dir), "--save_every", "1", "--overwrite"]
    with pytest.raises(SystemExit) as exit_info:
        main_forget.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    found = re.fullmatch(r"error: the retain loss is (nan|inf|-inf) at step (\d+) \(lr 1e\+30\): the run stopped "
                         r"before that step; its last resume snapshot is kept and no result was written .*", lines[-1])
    assert found, lines[-1]
    step = int(found.group(2))
    assert step == 2
    snapshot = torch.load(save_dir / "resume_state.pt", weights_only=True)
    assert snapshot["loop"]["steps"] == step - 1
    assert (save_dir / "eval_result.json").read_text() == '{"UA": 1.0}\n'
    assert not (save_dir / "GAcheckpoint.pth.tar").exists()


LOADING_SCRIPTS = ["ImageClassification.main_train", "ImageClassification.main_random", "ImageClassification.main_forget",
                   "ImageClassification.main_random_sfron", "ImageClassification.generate_mask", "LLM.main_train",
                   "LLM.main_forget", "LLM.real_world_unlearn", "ImageGeneration.DDPM.main_train",
                   "ImageGeneration.DDPM.main_forget", "ImageGeneration.DDPM.generate_mask", "ImageGeneration.DDPM.sample",
                   "ImageGeneration.DDPM.classifier_evaluation", "ImageGeneration.DDPM.evaluator",
                   "ImageGeneration.DDPM.train_classifier", "ImageGeneration.DiT.main_forget",
                   "ImageGeneration.DiT.generate_mask", "ImageGeneration.DiT.sample",
                   "ImageGeneration.DiT.classifier_evaluation"]
TRAINING_SCRIPTS = ["ImageClassification.main_train", "ImageClassification.main_random", "ImageClassification.main_forget",
                    "ImageClassification.main_random_sfron", "LLM.main_train", "LLM.main_forget",
                    "LLM.real_world_unlearn", "ImageGeneration.DDPM.main_train", "ImageGeneration.DDPM.main_forget",
                    "ImageGeneration.DDPM.train_classifier", "ImageGeneration.DiT.main_forget"]


@pytest.mark.parametrize("module", LOADING_SCRIPTS)
def test_entry_scripts_offer_the_opt_ins(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    usage = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--trust_checkpoint" in usage
    # IC generate_mask shares the image-classification parser, --allow_nonfinite included
    expected = module in TRAINING_SCRIPTS or module == "ImageClassification.generate_mask"
    assert ("--allow_nonfinite" in usage) == expected


def test_llm_fine_tuning_names_its_nonfinite_loss_train(tmp_path, tofu_dir, tiny_model, monkeypatch, capsys):
    """docs/reliability.md labels plain training ``train``; LLM main_train's message said "retain loss"."""
    from LLM import losses, main_train

    def nan_loss(model, reference, batch, coefficient):
        return next(model.parameters()).sum() * float("nan")

    monkeypatch.setitem(losses.REGULARIZERS, "GD", nan_loss)  # the loss main_train fine-tunes with
    with pytest.raises(SystemExit):
        main_train.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "full",
                         "--lr", "1e-3", "--num_epochs", "1", "--batch_size", "4", "--max_length", "32",
                         "--save_dir", str(tmp_path / "ft"), "--device", "cpu"])
    message = capsys.readouterr().err.splitlines()[-1]  # after transformers' progress bars
    assert message.startswith("error: the train loss is nan at step 1 (lr 0): the run stopped"), message
    assert not (tmp_path / "ft").exists()


def test_pickled_hugging_face_weights_are_refused_in_one_line_naming_the_type(tmp_path, tiny_dit, tiny_model):
    """Reproduced: DiT printed three lines (diffusers' "Defaulting to unsafe serialization" among them) without
    the refused type; the LLM's line quoted torch's "Re-running torch.load with weights_only set to False"."""
    import logging
    import shutil

    from ImageGeneration.DiT.dit import load_transformer, load_vae
    from LLM.models import load_causal_lm
    from unsafe import writes_pwned

    def pickled(source, part, weights):
        folder = tmp_path / f"{Path(source).name}_{part or 'model'}"
        shutil.copytree(source, folder)
        for tensors in (folder / part).glob("*.safetensors"):
            tensors.unlink()
        torch.save({"weight": writes_pwned(tmp_path)}, folder / part / weights)
        return folder

    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        loads = [(load_transformer, pickled(tiny_dit / "ckpt", "transformer", "diffusion_pytorch_model.bin"),
                  "--ckpt", "transformer/diffusion_pytorch_model.bin"),
                 (load_vae, pickled(tiny_dit / "ckpt", "vae", "diffusion_pytorch_model.bin"), "--vae",
                  "vae/diffusion_pytorch_model.bin"),
                 (load_causal_lm, pickled(tiny_model, "", "pytorch_model.bin"), "--model_path", "pytorch_model.bin")]
        for load, folder, flag, weights in loads:
            with pytest.raises(UsageError) as refused:
                load(str(folder))
            assert str(refused.value) == (f"{flag} {folder / weights}: holds posix.system, not allowed in a safely "
                                          f"loaded file (tensors and plain values only); if you trust the file's "
                                          f"source, pass --trust_checkpoint or set DUALOPTIM_TRUST_CHECKPOINT=1")
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert not (tmp_path / "pwned.txt").exists()
