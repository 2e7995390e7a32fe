"""The research code's weight initialisation, shared by its CIFAR ResNet stems and its VGG."""
from __future__ import annotations

from typing import Optional

from torch import nn


def research_init(model: nn.Module, linear_std: Optional[float] = None) -> nn.Module:
    """The research code's initialisation, in module order (so a seed draws its weights): kaiming-normal
    (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0, and with ``linear_std`` linear weights
    N(0, ``linear_std``) and biases 0 (without it, linear layers keep their own initialisation)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)
    return model
