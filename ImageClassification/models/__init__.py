"""Image classifiers, looked up by their ``--arch`` name.

Every model carries its input normalisation (``normalize``, per-dataset mean
and std, as the research code attaches to its models) so data loaders feed
plain ``[0, 1]`` tensors and checkpoints are self-contained.
"""
from __future__ import annotations

import argparse
from typing import Callable, Dict, Sequence

import torch
import torchvision
from torch import nn

from common.errors import UsageError
from common.io import checkpoint_state_dict
from common.registry import Registry
from ImageClassification.models.cifar_resnet import CifarResNet

#: ``--arch`` name -> ``builder(num_classes, imagenet_arch) -> nn.Module``.
MODELS: Registry[Callable[[int, bool], nn.Module]] = Registry("--arch")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std saved in the state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedClassifier(nn.Module):
    """``backbone(normalize(x))``."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


def _small_input_stem(model: nn.Module) -> nn.Module:
    """CIFAR stem for torchvision ResNets: 3x3 stride-1 first convolution, no max-pool."""
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@MODELS.register("resnet18")
def resnet18(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    return model if imagenet_arch else _small_input_stem(model)


@MODELS.register("resnet50")
def resnet50(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    model = torchvision.models.resnet50(num_classes=num_classes)
    return model if imagenet_arch else _small_input_stem(model)


def _cifar_resnet(depth: int) -> Callable[[int, bool], nn.Module]:
    def build(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
        return CifarResNet(depth, num_classes)
    build.__name__ = f"resnet{depth}s"
    return build


for _depth in (20, 44, 56):
    MODELS.register(f"resnet{_depth}s")(_cifar_resnet(_depth))


@MODELS.register("vgg16_bn")
def vgg16_bn(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    if imagenet_arch:
        return torchvision.models.vgg16_bn(num_classes=num_classes)
    # small inputs: the convolutional features, global average pooling and one linear head
    features = torchvision.models.vgg16_bn().features
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


@MODELS.register("swin_t")
def swin_t(num_classes: int, imagenet_arch: bool = True) -> nn.Module:
    return torchvision.models.swin_t(num_classes=num_classes)


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                imagenet_arch: bool = False) -> NormalizedClassifier:
    """A freshly initialised ``arch`` for ``num_classes`` with the dataset's normalisation."""
    return NormalizedClassifier(MODELS.get(arch)(num_classes, imagenet_arch), mean, std)


def build_model_from_args(args: argparse.Namespace) -> NormalizedClassifier:
    """A fresh model for the run's ``--arch``/dataset (``args.num_classes``, ``args.data_mean/std``).

    Under ``--channels_last`` it is built in that memory format, so every copy a method
    makes of it (SCRUB's teacher, boundary_shrink's attack model) runs in it too.
    """
    model = build_model(args.arch, args.num_classes, args.data_mean, args.data_std, args.imagenet_arch)
    return model.to(memory_format=torch.channels_last) if getattr(args, "channels_last", False) else model


def load_weights(model: nn.Module, checkpoint: object, flag: str, path: object, arch: str) -> Dict:
    """Load a research-style checkpoint (``{"state_dict": ...}`` or a bare state dict) into ``model``.

    A checkpoint of another architecture or class count is a one-line
    :class:`UsageError`, not a wall of missing keys.
    """
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{flag} {path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    saved_arch = checkpoint.get("arch")
    if saved_arch is not None and saved_arch != arch:
        raise UsageError(f"{flag} {path}: checkpoint is a {saved_arch}, but --arch is {arch}")
    state_dict = checkpoint_state_dict(checkpoint, f"{flag} {path}")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UsageError(f"{flag} {path}: does not match --arch {arch} ({len(missing)} missing and "
                         f"{len(unexpected)} unexpected weights, e.g. {example!r})")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise UsageError(f"{flag} {path}: weight {key!r} has shape {tuple(state_dict[key].shape)}, "
                             f"--arch {arch} with this dataset expects {tuple(value.shape)}")
    model.load_state_dict(state_dict)
    return checkpoint
