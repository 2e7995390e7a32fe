"""The research code's VGG-16 with batch norm for 32x32 inputs (its ``models/VGG.py``, configuration "D").

Thirteen bias-free 3x3 convolutions with BatchNorm and ReLU in five stages of
64/128/256/512/512 channels (max-pooling between stages, none after the last),
adaptive average pooling to 2x2 and an MLP head 2048-256-256-C.  Initialisation:
kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0,
linear weights N(0, 0.01) and biases 0.  Parameter names follow the research
code (``features.<i>``, ``classifier.<i>``), and modules are created in its
order, so a seed draws the same initial weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ImageClassification.models.init import research_init

#: channels of the convolutions, "M" a 2x2 max-pool
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers, channels = [], 3
        for width in VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(512 * 2 * 2, 256), nn.ReLU(True), nn.Linear(256, 256),
                                        nn.ReLU(True), nn.Linear(256, num_classes))
        research_init(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

