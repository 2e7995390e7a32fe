"""A tiny synthetic classification problem shared by the unlearning-method tests.

Three well-separated classes of 4x4 one-channel "images" with values in
[0, 1], a small MLP with BatchNorm (so train/eval mode matters), and an
"original" model pre-trained on all of it.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ImageClassification.arg_parser import build_parser, validate_args
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders

NUM_CLASSES = 3
BATCH_SIZE = 8


def make_images(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % NUM_CLASSES
    centres = torch.stack([torch.linspace(0.1, 0.9, 16).roll(5 * c) for c in range(NUM_CLASSES)])
    images = (centres[targets] + 0.3 * torch.randn(n, 16, generator=generator)).clamp(0, 1)
    return images.view(n, 1, 4, 4), targets


def make_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, NUM_CLASSES))


def make_loaders(forget_n: int = 12, retain_n: int = 36, seed: int = 0) -> UnlearnLoaders:
    x, y = make_images(forget_n + retain_n, seed)
    forget = TensorDataset(x[:forget_n], y[:forget_n])
    retain = TensorDataset(x[forget_n:], y[forget_n:])
    test = TensorDataset(*make_images(24, seed + 1))
    return UnlearnLoaders(
        forget_loader=DataLoader(forget, batch_size=BATCH_SIZE, shuffle=True,
                                 generator=torch.Generator().manual_seed(seed)),
        retain_loader=DataLoader(retain, batch_size=BATCH_SIZE, shuffle=True,
                                 generator=torch.Generator().manual_seed(seed + 1)),
        test_loader=DataLoader(test, batch_size=BATCH_SIZE),
        num_classes=NUM_CLASSES)


def make_args(**overrides) -> UnlearnConfig:
    """The settings a method receives: every flag at its default, the general ones scaled down
    (and ``overrides``), completed and frozen as the scripts do (``validate_args``: ``--retain_lr``
    defaults to ``--unlearn_lr``; :meth:`UnlearnConfig.from_args`)."""
    args = build_parser(optim_choices=None).parse_args([])
    general = dict(unlearn="RL", optim="sgd", unlearn_lr=0.05, retain_lr=None, unlearn_epochs=2,
                   momentum=0.9, weight_decay=5e-4, decreasing_lr="91,136", warmup=0, lr=0.1,
                   print_freq=50, batch_size=BATCH_SIZE, dataset="digits",
                   imagenet_arch=False, save_dir=None, seed=1, sfron_iters=6, sfron_freq=3,
                   num_workers=0, workers=0)
    general.update(overrides)
    for key, value in general.items():
        setattr(args, key, value)
    return UnlearnConfig.from_args(validate_args(args, unlearning=args.unlearn != "train"))


@pytest.fixture(scope="session")
def original_model() -> nn.Module:
    """``make_model()`` trained to fit all 48 samples (a stand-in for the original model)."""
    torch.manual_seed(0)
    model = make_model()
    loaders = make_loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for loader in (loaders.forget_loader, loaders.retain_loader):
            for x, y in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
    return model.eval()


@pytest.fixture
def model(original_model) -> nn.Module:
    return copy.deepcopy(original_model)


@pytest.fixture
def loaders() -> UnlearnLoaders:
    return make_loaders()


@pytest.fixture(name="make_args")
def make_args_fixture():
    return make_args


@pytest.fixture(name="make_loaders")
def make_loaders_fixture():
    return make_loaders


class StepRecorder:
    """Records every optimizer a run builds and the objective of every step it takes."""

    def __init__(self) -> None:
        self.optimizers = []
        self.steps = []

    def wrap(self, optimizer):
        self.optimizers.append(optimizer)
        forget_step, retain_step = optimizer.forget_step, optimizer.retain_step

        def recorded_forget(closure=None):
            self.steps.append("forget")
            return forget_step(closure)

        def recorded_retain(closure=None):
            self.steps.append("retain")
            return retain_step(closure)

        optimizer.forget_step, optimizer.retain_step = recorded_forget, recorded_retain
        return optimizer


@pytest.fixture
def recorder(monkeypatch) -> StepRecorder:
    """Patch the optimizer factories the methods use so every step is recorded."""
    from ImageClassification.unlearn import engine, sfron

    rec = StepRecorder()
    build = engine.build_unlearn_optimizer
    monkeypatch.setattr(engine, "build_unlearn_optimizer", lambda *a, **k: rec.wrap(build(*a, **k)))
    monkeypatch.setattr(sfron, "build_unlearn_optimizer", lambda *a, **k: rec.wrap(build(*a, **k)))
    return rec


@pytest.fixture
def sgd_step_lrs(monkeypatch):
    """The learning rate of every ``torch.optim.SGD.step`` call, in order."""
    used = []
    sgd_step = torch.optim.SGD.step

    def spy(self, closure=None):
        used.append(self.param_groups[0]["lr"])
        return sgd_step(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    return used

