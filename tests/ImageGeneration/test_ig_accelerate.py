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
from ImageGeneration.DDPM import generate_mask, main_forget, main_train, sample

from ig_fixtures import TINY_CONFIG

CPU = ["--device", "cpu"]
DDPM = "ImageGeneration/DDPM/"


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
    states = [torch.load(d / "ckpts" / "ckpt.pth") for d in (one, two)]
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


PRETRAIN = ["--mode", "pretrain"] + CPU


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits_config):
    """The one-process pretrained model every multi-process run is compared against (or starts from)."""
    root = tmp_path_factory.mktemp("train_one")
    return main_train.main(["--config", digits_config, "--exp_root", str(root)] + PRETRAIN)


def test_two_processes_train_and_unlearn_like_one(tmp_path, digits_config, pretrained, launch_two_processes):
    launch_two_processes(DDPM + "main_train.py",
                         ["--config", digits_config, "--exp_root", str(tmp_path / "train_two")] + PRETRAIN)
    assert_same_run(Path(pretrained), only_run(tmp_path / "train_two"), "losses")

    forget = ["--ckpt_folder", pretrained, "--config", digits_config, "--mode", "sfron", "--method", "ron",
              "--unlearn_loss", "adaga", "--forget_alpha", "2.0", "--decay_forget_alpha", "--dual",
              "--forget_lr", "1e-4"] + CPU
    launch_two_processes(DDPM + "main_forget.py", forget + ["--exp_root", str(tmp_path / "forget_two")])
    unlearned = main_forget.main(forget + ["--exp_root", str(tmp_path / "forget_one")])
    assert_same_run(Path(unlearned), only_run(tmp_path / "forget_two"), "history")


@pytest.mark.slow
def test_two_processes_run_selective_amnesia_like_one(tmp_path, digits_config, pretrained, launch_two_processes):
    """``--mode sa``: every process loads the Fisher dictionary and the replayed samples, draws the same
    uniform-noise forget batch, and the EWC penalty -- a function of the weights, computed in full on
    every process -- enters the summed gradient once."""
    common = ["--ckpt_folder", pretrained, "--config", digits_config] + CPU
    sample.main(common + ["--mode", "sample_classes", "--n_samples_per_class", "3", "--timesteps", "2"])
    generate_mask.main(common + ["--mode", "sa_fim", "--fim_timesteps", "2"])
    fisher = torch.load(Path(pretrained) / "fisher_dict.pt")
    config = yaml.safe_load(Path(digits_config).read_text())
    # lr * lmbda * max F = 0.4: an EWC gradient counted twice would move the weights of largest
    # Fisher by 0.4 x their distance from the anchor per step (visible at the 1e-5 tolerance),
    # while one EWC step stays stable (factor 1 - 2 * 0.4 on that distance).
    config["optim"]["lr"] = 1e-3
    config["training"].update(n_iters=4, gamma=1.0,
                              lmbda=0.4 / (1e-3 * max(float(v.max()) for v in fisher.values())))
    sa_config = tmp_path / "sa.yml"
    sa_config.write_text(yaml.safe_dump(config))

    forget = ["--ckpt_folder", pretrained, "--config", str(sa_config), "--mode", "sa", "--label_to_forget", "0"] + CPU
    launch_two_processes(DDPM + "main_forget.py", forget + ["--exp_root", str(tmp_path / "sa_two")])
    unlearned = main_forget.main(forget + ["--exp_root", str(tmp_path / "sa_one")])
    record = json.loads((Path(unlearned) / "run.json").read_text())["metrics"]
    assert record["schedule"] == "joint"
    assert_same_run(Path(unlearned), only_run(tmp_path / "sa_two"), "history")


def test_single_process_sharding_is_the_identity():
    sharding = SampleSharding()
    assert not sharding.active and sharding.is_main and sharding.world == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert sharding.forward(lambda a: a * 2, x).equal(x * 2)
    term = (x ** 2).sum()
    assert sharding.replicated(term) is term
    assert sharding.broadcast("run") == "run"
