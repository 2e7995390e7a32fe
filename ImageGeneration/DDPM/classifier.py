"""The dataset classifier that judges generated images (classifier evaluation, IS/FID features).

``resnet34`` is the research code's CIFAR-10 judge (torchvision ResNet-34 at
224x224, ImageNet weights with ``--pretrained_weights``); ``small_cnn`` is a
CPU-sized judge for the 16x16 digits.  Inputs are model-space images in
``[-1, 1]`` (the research code's ``Normalize(0.5, 0.5)``), resized to the
classifier's ``image_size``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from common.errors import UsageError
from common.io import PathLike, atomic_torch_save, check_state_dict, load_torch_file
from dualoptim.registry import Registry

ARCHS: Registry = Registry("--arch")


@ARCHS.register("small_cnn")
def small_cnn(n_classes: int, channels: int) -> nn.Module:
    """Two conv blocks and a linear head; ``features`` is the 128-d penultimate layer."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, n_classes))


@ARCHS.register("resnet34")
def resnet34(n_classes: int, channels: int) -> nn.Module:
    model = torchvision.models.resnet34(weights=None)
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    nn.init.xavier_uniform_(model.fc.weight)
    return model


DEFAULT_ARCH = {"digits": "small_cnn", "cifar10": "resnet34"}
DEFAULT_IMAGE_SIZE = {"small_cnn": 16, "resnet34": 224}


class ImageClassifier(nn.Module):
    """A classifier plus its input convention: resize to ``image_size``, inputs in ``[-1, 1]``."""

    def __init__(self, arch: str, n_classes: int, channels: int, image_size: int) -> None:
        super().__init__()
        self.meta = {"arch": arch, "n_classes": n_classes, "channels": channels, "image_size": image_size}
        self.net = ARCHS.get(arch)(n_classes, channels)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        size = self.meta["image_size"]
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    def logits_and_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate-layer features (the input of the last linear layer) in one pass."""
        captured = {}
        head = self.net.fc if hasattr(self.net, "fc") else self.net[-1]
        handle = head.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
        try:
            logits = self.forward(x)
        finally:
            handle.remove()
        return logits, captured["x"]


def classifier_filename(dataset: str, arch: str) -> str:
    """``cifar10_resnet34.pth``, as the research code names it."""
    return f"{dataset}_{arch}.pth"


def save_classifier(model: ImageClassifier, path: PathLike, extra: Optional[Dict[str, Any]] = None) -> Path:
    return atomic_torch_save({**model.meta, **(extra or {}),
                              "state_dict": {k: v.cpu() for k, v in model.net.state_dict().items()}}, path)


def load_classifier(path: PathLike, device: torch.device, flag: str = "--ckpt_path",
                    dataset: Optional[str] = None) -> ImageClassifier:
    """Load a classifier written by ``train_classifier.py``: a file, or the folder holding one
    (``<dataset>_<arch>.pth``; with ``dataset`` that dataset's, as the research code picks
    ``<ckpt_path>/<dataset>_resnet34.pth``)."""
    path = Path(path)
    if path.is_dir():
        name = f"{dataset or '<dataset>'}_<arch>.pth"
        found = sorted(path.glob(f"{dataset or '*'}_*.pth"))
        if len(found) != 1:
            raise UsageError(f"{flag} {path}: expected exactly one {name} classifier, found {len(found)}")
        path = found[0]
    state = load_torch_file(path, flag)
    if not isinstance(state, dict) or "state_dict" not in state or "arch" not in state:
        raise UsageError(f"{flag} {path}: not a classifier written by train_classifier.py")
    check_state_dict(state["state_dict"], f"{flag} {path} ('state_dict')")
    model = ImageClassifier(state["arch"], state["n_classes"], state["channels"], state["image_size"])
    model.net.load_state_dict(state["state_dict"])
    return model.to(device).eval()


@torch.no_grad()
def predict(model: ImageClassifier, images: torch.Tensor, batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features of model-space images, in batches, on the CPU."""
    device = next(model.parameters()).device
    logits, feats = [], []
    for start in range(0, images.shape[0], batch_size):
        out, f = model.logits_and_features(images[start:start + batch_size].to(device))
        logits.append(out.cpu())
        feats.append(f.cpu())
    return torch.cat(logits), torch.cat(feats)
