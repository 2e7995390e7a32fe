"""LoRA unlearning (``main_random_lora.py``): an unlearning method that trains low-rank adapters.

The research code's ``main_random_lora.py`` builds ``resnet18_lora`` /
``resnet50_lora`` (loralib layers), loads the original model into it, trains
only the LoRA factors, the BatchNorm layers and the LoRA layers' biases with
the ``--unlearn`` method, and evaluates with SalUn's SVC MIA.  Here any
``--arch`` works as ``<arch>_lora``: :class:`LoraAdapters` injects
``peft`` LoRA layers into every convolution and linear layer of the loaded
model, with

* rank ``r = ceil(f * min(in, out))`` per layer (``floor`` for the two
  convolutions of a torchvision ``BasicBlock``, as the research code), ``f``
  from ``--rank_config``: a JSON number for every layer, or the research
  code's nested dict (``{"conv1": f, "layer1": f or {"downsample": f, "0": f
  or {"conv1": f, "conv2": f}, ...}, ..., "fc": f}``; keys are module-name
  prefixes, ``layerK.downsample`` names the block's shortcut convolution); a
  layer with ``r = 0`` stays frozen;
* scaling ``1 / r`` (loralib's default ``lora_alpha = 1``), ``A`` Kaiming-uniform and ``B`` zero.

After unlearning the adapters are merged into the weights, so the saved
checkpoint is a plain ``<arch>`` model.
"""
from __future__ import annotations

import math
import re
from numbers import Real
from typing import Dict, Mapping, Optional, Sequence

import torch
import torchvision
from torch import nn

from common.errors import UsageError
from common.io import read_json
from ImageClassification.arg_parser import build_parser, parse_config
from ImageClassification.config import UnlearnConfig
from ImageClassification.unlearn.registry import RETRAIN_METHODS

LORA_SUFFIX = "_lora"
#: Flattened ``--rank_config``: module-name prefix (relative to the backbone) -> fraction.
RankFractions = Dict[str, float]


def flatten_rank_config(config: object, prefix: str = "", flag: str = "--rank_config") -> RankFractions:
    """A number, or nested dicts of numbers, as ``{dotted prefix: fraction}`` (``""`` for a number)."""
    if isinstance(config, Real) and not isinstance(config, bool):
        if not 0 <= config <= 1:
            raise UsageError(f"{flag}: rank fractions must be in [0, 1], got {config} for "
                             f"{prefix or 'every layer'}")
        return {prefix: float(config)}
    if isinstance(config, Mapping) and config:
        flat: RankFractions = {}
        for key, value in config.items():
            flat.update(flatten_rank_config(value, f"{prefix}.{key}" if prefix else str(key), flag))
        return flat
    raise UsageError(f"{flag}: expected a number in [0, 1] or a dict of them (as the research code's rank "
                     f"configs), got {_json_kind(config)} at {prefix or 'the top level'}")


def _json_kind(value: object) -> str:
    return "an empty dict" if value == {} else type(value).__name__


def layer_fraction(fractions: RankFractions, name: str, flag: str = "--rank_config") -> float:
    """The fraction of the longest prefix of ``name`` in ``fractions`` (a shortcut convolution
    ``layerK.B.downsample.0`` is looked up as ``layerK.downsample`` first)."""
    shortcut = re.sub(r"^(layer\d+)\.\d+\.(downsample)", r"\1.\2", name)
    for candidate in (shortcut, name) if shortcut != name else (name,):
        parts = candidate.split(".")
        for end in range(len(parts), -1, -1):
            prefix = ".".join(parts[:end])
            if prefix in fractions:
                return fractions[prefix]
    raise UsageError(f"{flag}: no rank for layer {name!r} (the config names {', '.join(sorted(fractions))})")


def lora_ranks(model: nn.Module, fractions: RankFractions, flag: str = "--rank_config") -> Dict[str, int]:
    """``{full module name: rank}`` for every convolution and linear layer of ``model``'s backbone."""
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    ranks = {}
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            size = min(module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            size = min(module.in_features, module.out_features)
        else:
            continue
        parent = backbone.get_submodule(name.rpartition(".")[0])
        rounding = math.floor if isinstance(parent, torchvision.models.resnet.BasicBlock) else math.ceil
        ranks[prefix + name] = rounding(layer_fraction(fractions, name, flag) * size)
    return ranks


class LoraAdapters:
    """Attach LoRA adapters to a model for unlearning, then merge them into its weights (both in place)."""

    def __init__(self, fractions: RankFractions) -> None:
        self.fractions = fractions

    @classmethod
    def from_file(cls, path: Optional[str], flag: str = "--rank_config") -> "LoraAdapters":
        if not path:
            raise UsageError(f"{flag}: required (a JSON rank fraction, e.g. 0.25, or the research code's "
                             f"per-layer dict)")
        return cls(flatten_rank_config(read_json(path, flag), flag=flag))

    def check(self, model: nn.Module) -> Dict[str, int]:
        """The rank of every layer; a layer the config does not cover is a one-line error."""
        ranks = {name: r for name, r in lora_ranks(model, self.fractions).items() if r > 0}
        if not ranks:
            raise UsageError("--rank_config: every layer gets rank 0, nothing would be trained")
        return ranks

    def attach(self, model: nn.Module) -> nn.Module:
        """Inject the adapters; only they, the LoRA layers' biases and the BatchNorm layers stay trainable."""
        from peft import LoraConfig, inject_adapter_in_model  # imported on use: peft is slow to import

        ranks = self.check(model)
        # exact names: peft matches pattern keys as regexes against name suffixes
        exact = {"^" + re.escape(name): rank for name, rank in ranks.items()}
        config = LoraConfig(target_modules=list(ranks), r=1, lora_alpha=1, rank_pattern=exact,
                            alpha_pattern={key: 1 for key in exact}, bias="lora_only")
        inject_adapter_in_model(config, model)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.requires_grad_(True)
                module.bias.requires_grad_(True)
        return model

    @staticmethod
    @torch.no_grad()
    def merge(model: nn.Module) -> nn.Module:
        """Fold every adapter into its layer's weight and put the plain layer back; all weights trainable."""
        from peft.tuners.lora import LoraLayer

        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
        model.requires_grad_(True)
        return model


def parse_lora_config(argv: Optional[Sequence[str]] = None) -> UnlearnConfig:
    """``main_random_lora.py``'s flags: the shared ones, ``--rank_config`` and SalUn's MIA by default.

    ``--arch`` must name a LoRA model (``resnet18_lora``); the config's ``arch`` is the plain
    architecture, whose checkpoints ``--model_path`` holds and the run saves.
    """
    parser = build_parser("DualOptim unlearning with LoRA adapters")
    parser.add_argument("--rank_config", default=None, type=str,
                        help="JSON: a LoRA rank fraction for every layer (e.g. 0.25) or a per-layer dict")
    parser.set_defaults(mia="salun")
    config = parse_config(argv, parser)
    if not config.arch.endswith(LORA_SUFFIX):
        raise UsageError(f"--arch: main_random_lora.py trains LoRA adapters of a model such as "
                         f"resnet18{LORA_SUFFIX}, got {config.arch!r}")
    if config.unlearn in RETRAIN_METHODS:
        raise UsageError(f"--unlearn {config.unlearn} (retrain is the default): main_random_lora.py unlearns "
                         "through LoRA adapters of the original model; pass a method such as --unlearn RL, or "
                         "retrain with main_forget.py")
    if config.mask_path:
        raise UsageError("--mask_path: a saliency mask covers the full weights, not LoRA adapters")
    return config.replace(arch=config.arch[:-len(LORA_SUFFIX)])
