"""Kill DDPM forgetting (DualOptim) with SIGKILL mid-run, rerun it with --resume: the same bits as a straight run.

The straight and resumed runs run in-process (one thread), the killed one as a program
(``OMP_NUM_THREADS=1``), on the embedded digits at 8x8 and a tiny UNet.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from ImageGeneration.DDPM import main_forget, main_train
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, save_checkpoint
from ImageGeneration.DDPM.config import to_namespace
from ImageGeneration.DDPM.networks import build_unet

from ig_fixtures import TINY_CONFIG

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 10-class tiny config (6 steps, snapshots every 2) and a freshly initialised model folder."""
    root = tmp_path_factory.mktemp("ddpm_resume")
    tree = copy.deepcopy(TINY_CONFIG)
    tree["data"]["n_classes"] = 10
    tree["training"].update(n_iters=6, snapshot_freq=2)
    config_path = root / "tiny10.yml"
    config_path.write_text(yaml.safe_dump(tree))
    config = to_namespace(tree)
    torch.manual_seed(0)
    save_checkpoint(root / "pretrained" / CKPT_RELPATH, build_unet(config.model, config.data), config,
                    list(range(10)), step=0)
    return root, str(config_path)


def forget_args(setup):
    root, config = setup
    return ["--ckpt_folder", str(root / "pretrained"), "--config", config, "--mode", "sfron", "--label_to_forget",
            "1", "--dual", "--forget_lr", "1e-3"] + CPU


def same(a, b) -> bool:
    """Bitwise equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def record(run_dir):
    return json.loads((Path(run_dir) / "run.json").read_text())


def test_sigkill_mid_run_then_resume_equals_straight_run(setup, tmp_path, killed_run, one_thread, capsys):
    argv = forget_args(setup)
    straight = main_forget.main(argv + ["--exp_root", str(tmp_path / "straight")])
    killed_run("ImageGeneration.DDPM.main_forget", argv + ["--exp_root", tmp_path / "interrupted"], kill_at=5)
    (killed_dir,) = [p.parent for p in (tmp_path / "interrupted").rglob("resume_state.pt")]
    snapshot = torch.load(killed_dir / "resume_state.pt")
    assert snapshot["loop"]["step"] == 4 and set(snapshot["objects"]) == {
        "model", "optimizer", "ema", "forward_generator", "forget_batches", "remain_batches"}
    assert set(snapshot["objects"]["optimizer"]) == {"forget", "retain"}  # both DualOptim states
    capsys.readouterr()

    resumed = main_forget.main(argv + ["--exp_root", str(tmp_path / "interrupted"), "--resume"])
    assert Path(resumed) == killed_dir and "resuming from" in capsys.readouterr().out
    a = torch.load(Path(straight) / CKPT_RELPATH)
    b = torch.load(Path(resumed) / CKPT_RELPATH)
    assert a["step"] == b["step"] == 5
    for key in ("model", "ema", "optimizer"):
        assert same(a[key], b[key]), key
    metrics = [{k: v for k, v in record(d)["metrics"].items() if k != "run_dir"} for d in (straight, resumed)]
    assert metrics[0] == metrics[1] and len(metrics[0]["history"]) == 6
    assert not (killed_dir / "resume_state.pt").exists()

    # a later run never writes into a finished run's folder, with or without --resume
    before = (Path(straight) / CKPT_RELPATH).read_bytes()
    again = main_forget.main(argv + ["--exp_root", str(tmp_path / "straight"), "--resume"])
    assert Path(again) != Path(straight) and Path(again).parent == Path(straight).parent
    assert (Path(straight) / CKPT_RELPATH).read_bytes() == before


def test_truncated_snapshot_is_a_one_line_error(setup, tmp_path, capsys):
    argv = forget_args(setup) + ["--exp_root", str(tmp_path)]
    parts = ["digits", "forget_1", "ron_adaga0.5", "f1.0False_r1.0_lr0.001_dual"]
    snapshot = tmp_path.joinpath("results", *parts, "2026_01_01_000000", "resume_state.pt")
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"PK\x03\x04")
    with pytest.raises(SystemExit) as exit_info:
        main_forget.main(argv + ["--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith(f"error: --resume {snapshot}: cannot be read as a torch checkpoint")


@pytest.mark.slow
def test_training_resumes_with_ema_and_losses(setup, tmp_path, killed_run, one_thread):
    argv = ["--config", setup[1], "--dataset", "digits"] + CPU
    straight = main_train.main(argv + ["--exp_root", str(tmp_path / "straight")])
    killed_run("ImageGeneration.DDPM.main_train", argv + ["--exp_root", tmp_path / "interrupted"], kill_at=3)
    resumed = main_train.main(argv + ["--exp_root", str(tmp_path / "interrupted"), "--resume"])
    a = torch.load(Path(straight) / CKPT_RELPATH)
    b = torch.load(Path(resumed) / CKPT_RELPATH)
    assert all(same(a[key], b[key]) for key in ("model", "ema", "optimizer"))
    assert record(straight)["metrics"]["losses"] == record(resumed)["metrics"]["losses"]
