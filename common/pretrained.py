"""ImageNet-pretrained torchvision weights, found without a download: a given file or the torch hub cache.

The research code starts some networks from ImageNet weights (image classification's ``swin_t``, the
diffusion judge's ResNet-34), which torchvision would download. Runs here never download: the weights come
from ``--pretrained_weights PATH`` or from the file torchvision leaves in ``$TORCH_HOME/hub/checkpoints``;
with neither the script stops with one line saying how to supply them, and a random initialisation happens
only when asked for (``--from_scratch``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch
import torchvision

from common.errors import UsageError
from common.io import load_torch_file


def cached_weights_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision keeps ``weights`` once downloaded (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def imagenet_weights(arch: str, weights: torchvision.models.WeightsEnum, path: Optional[str], from_scratch: bool,
                     flag: str = "--arch") -> Optional[Dict[str, torch.Tensor]]:
    """The ImageNet state dict of torchvision's ``arch`` (``None`` with ``from_scratch``): ``path``, else the
    hub cache's file of ``weights``; with neither, a one-line :class:`UsageError` naming both ways. A file
    that is not ``arch``'s full state dict (every key, every shape) is refused."""
    if from_scratch:
        return None
    if path is None:
        cached = cached_weights_file(weights)
        if not cached.is_file():
            raise UsageError(f"{flag} {arch}: starts from ImageNet-pretrained weights, as the research code; "
                             f"put torchvision's {cached.name} at {cached} or pass --pretrained_weights PATH "
                             f"(--from_scratch: random initialisation)")
        path = str(cached)
    state = load_torch_file(path, "--pretrained_weights")
    with torch.device("meta"):  # shapes only: building it here must not draw from the seeded generator
        expected = torchvision.models.get_model(arch).state_dict()
    if not isinstance(state, dict) or set(state) != set(expected) or any(
            tuple(state[key].shape) != tuple(value.shape) for key, value in expected.items()):
        raise UsageError(f"--pretrained_weights {path}: not torchvision's ImageNet {arch} state dict")
    return state
