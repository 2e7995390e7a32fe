"""LoRA ranks from the research code's rank configs, and adapters that merge into plain weights."""
import math

import pytest
import torch

from common.errors import UsageError
from ImageClassification.lora import LoraAdapters, flatten_rank_config, lora_ranks
from ImageClassification.models import build_model

MEAN, STD = (0.5,) * 3, (0.25,) * 3


def test_research_code_rank_config_resolves_per_layer():
    model = build_model("resnet18", 10, MEAN, STD)
    config = {"conv1": 0.5, "layer1": 0.1, "layer2": {"downsample": 0.25, "0": {"conv1": 0.3, "conv2": 0.2}, "1": 0.0},
              "layer3": 0.5, "layer4": 0.5, "fc": 0.2}
    ranks = lora_ranks(model, flatten_rank_config(config))
    assert ranks["backbone.conv1"] == math.ceil(0.5 * 3)                  # stem: min(3, 64), ceil
    assert ranks["backbone.layer1.0.conv1"] == math.floor(0.1 * 64)       # BasicBlock convolutions: floor
    assert ranks["backbone.layer2.0.conv1"] == math.floor(0.3 * 64)
    assert ranks["backbone.layer2.0.conv2"] == math.floor(0.2 * 128)
    assert ranks["backbone.layer2.0.downsample.0"] == math.ceil(0.25 * 64)  # the block's shortcut
    assert ranks["backbone.layer2.1.conv1"] == 0                           # rank 0: frozen, no adapter
    assert ranks["backbone.fc"] == math.ceil(0.2 * 10)                    # fc's own entry (the original reads conv1's)
    with pytest.raises(UsageError, match="no rank for layer 'layer3.0.conv1'"):
        lora_ranks(model, flatten_rank_config({"conv1": 0.5, "layer1": 0.1, "layer2": 0.1}))


def test_adapters_train_only_lora_bn_and_biases_and_merge_exactly():
    torch.manual_seed(0)
    model = build_model("resnet20s", 10, MEAN, STD)
    adapters = LoraAdapters(flatten_rank_config(0.25))
    adapters.attach(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".bn" in n or n == "backbone.fc.base_layer.bias" for n in trainable)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    x = torch.rand(4, 3, 16, 16)
    model.eval()
    expected = model(x)
    adapters.merge(model)
    assert set(model.state_dict()) == set(build_model("resnet20s", 10, MEAN, STD).state_dict())
    assert torch.allclose(model(x), expected, atol=1e-4)
