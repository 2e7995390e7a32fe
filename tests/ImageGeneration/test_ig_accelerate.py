"""``accelerate launch`` with 2 CPU processes trains and unlearns the DDPM exactly as one process does.

The data is the embedded digits set at its native 8x8, so the launched scripts need no patching.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from common.distributed import SampleSharding
from ImageGeneration.DDPM import main_forget, main_train

from ig_fixtures import TINY_CONFIG

CPU = ["--device", "cpu"]


def only_run(root: Path) -> Path:
    runs = [p.parent.parent for p in root.glob("results/**/ckpts/ckpt.pth")]
    assert len(runs) == 1, runs
    return runs[0]


def assert_same_run(one: Path, two: Path, history_key: str) -> None:
    records = {n: json.loads((d / "run.json").read_text())["metrics"] for n, d in (("one", one), ("two", two))}
    assert records["one"]["num_processes"] == 1 and records["two"]["num_processes"] == 2
    for a, b in zip(records["one"][history_key], records["two"][history_key], strict=True):
        a, b = (a, b) if isinstance(a, dict) else ({"loss": a}, {"loss": b})
        assert b == pytest.approx(a, rel=1e-4)
    states = [torch.load(d / "ckpts" / "ckpt.pth", weights_only=False) for d in (one, two)]
    for key in ("model", "ema"):
        assert states[0][key].keys() == states[1][key].keys()
        # Attention key biases get no true gradient (softmax ignores them), only float noise that
        # Adam normalises into lr-sized steps; they agree to the step size, everything else tightly.
        mismatched = {name: float((states[0][key][name] - states[1][key][name]).abs().max())
                      for name in states[0][key]
                      if not torch.allclose(states[0][key][name], states[1][key][name],
                                            atol=1e-3 if name.endswith("to_k.bias") else 1e-5)}
        assert not mismatched, (key, mismatched)
    assert not any(two.parent.glob("*_1")), "only the main process creates the run folder"


@pytest.fixture(scope="module")
def digits_config(tmp_path_factory):
    config = copy.deepcopy(TINY_CONFIG)
    config["data"].update(n_classes=10, image_size=8)
    config["training"].update(batch_size=7, n_iters=3)  # 7 = uneven slices of 4 and 3 samples
    config["model"]["cond_drop_prob"] = 0.5
    # SGD without clipping: any error in the gradient's scale shows in the weights (Adam and
    # clipping would normalise it away); --dual still steps its forget state with Adam.
    config["optim"].update(optimizer="SGD", lr=1e-4, grad_clip=0.0)
    path = tmp_path_factory.mktemp("accelerate") / "digits8.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_two_processes_train_and_unlearn_like_one(tmp_path, digits_config, launch_two_processes):
    train = ["--config", digits_config, "--mode", "pretrain"] + CPU
    launch_two_processes("ImageGeneration/DDPM/main_train.py", train + ["--exp_root", str(tmp_path / "train_two")])
    pretrained = main_train.main(train + ["--exp_root", str(tmp_path / "train_one")])
    assert_same_run(Path(pretrained), only_run(tmp_path / "train_two"), "losses")

    forget = ["--ckpt_folder", pretrained, "--config", digits_config, "--mode", "sfron", "--method", "ron",
              "--unlearn_loss", "adaga", "--forget_alpha", "2.0", "--decay_forget_alpha", "--dual",
              "--forget_lr", "1e-4"] + CPU
    launch_two_processes("ImageGeneration/DDPM/main_forget.py", forget + ["--exp_root", str(tmp_path / "forget_two")])
    unlearned = main_forget.main(forget + ["--exp_root", str(tmp_path / "forget_one")])
    assert_same_run(Path(unlearned), only_run(tmp_path / "forget_two"), "history")


def test_single_process_sharding_is_the_identity():
    sharding = SampleSharding()
    assert not sharding.active and sharding.is_main and sharding.world == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert sharding.forward(lambda a: a * 2, x).equal(x * 2)
    term = (x ** 2).sum()
    assert sharding.replicated(term) is term
    assert sharding.broadcast("run") == "run"
