"""Image classifiers, looked up by their ``--arch`` name.

Every model carries its input normalisation (``normalize``, per-dataset mean
and std, as the research code attaches to its models) so data loaders feed
plain ``[0, 1]`` tensors and checkpoints are self-contained.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
import torchvision
from torch import nn

from common.errors import UsageError
from common.io import checkpoint_state_dict
from common.pretrained import imagenet_weights
from dualoptim.registry import Registry
from ImageClassification.models.cifar_resnet import CifarResNet
from ImageClassification.models.init import research_init
from ImageClassification.models.vgg import CifarVGG

if TYPE_CHECKING:
    from ImageClassification.config import UnlearnConfig

#: ``--arch`` name -> ``builder(num_classes, imagenet_arch) -> nn.Module`` (those of :data:`PRETRAINED`
#: also take ``weights``, their pretrained state dict).
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


def _creation_order(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` and its submodules in the order torchvision's (and the research code's) ResNet
    creates them: a block's ``downsample`` is built before the block's own layers."""
    children = dict(module.named_children())
    downsample = children.pop("downsample", None)
    if downsample is not None:
        yield from _creation_order(downsample)
    yield module
    for child in children.values():
        yield from _creation_order(child)


def _resnet(build: Callable[..., nn.Module], num_classes: int, imagenet_arch: bool) -> nn.Module:
    """A torchvision ResNet; for small inputs with the research code's CIFAR stem (3x3 stride-1 first
    convolution, no max-pool) and its initialisation, drawn as its constructor draws it.

    The research code builds the 3x3 stem inside the constructor, so every layer (the stem too)
    gets the default initialisation and then kaiming-normal (fan_out, ReLU) convolutions and
    BatchNorm 1/0.  The model is built without drawing (meta device), the stem replaced, and
    those draws replayed in the constructor's order: a seed gives the research code's weights.
    """
    if imagenet_arch:
        return build(num_classes=num_classes)
    with torch.device("meta"):
        model = build(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False, device="meta")
    model.maxpool = nn.Identity()
    model.to_empty(device="cpu")
    for module in _creation_order(model):
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            module.reset_parameters()
    return research_init(model)


@MODELS.register("resnet18")
def resnet18(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    return _resnet(torchvision.models.resnet18, num_classes, imagenet_arch)


@MODELS.register("resnet50")
def resnet50(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    return _resnet(torchvision.models.resnet50, num_classes, imagenet_arch)


def _cifar_resnet(depth: int) -> Callable[[int, bool], nn.Module]:
    def build(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
        return CifarResNet(depth, num_classes)
    build.__name__ = f"resnet{depth}s"
    return build


CIFAR_RESNET_DEPTHS = {f"resnet{depth}s": depth for depth in (20, 44, 56)}
for _name, _depth in CIFAR_RESNET_DEPTHS.items():
    MODELS.register(_name)(_cifar_resnet(_depth))


@MODELS.register("vgg16_bn")
def vgg16_bn(num_classes: int, imagenet_arch: bool = False) -> nn.Module:
    # the research code's VGG crashes with --imagenet_arch; torchvision's VGG-16-BN is the ImageNet one
    return torchvision.models.vgg16_bn(num_classes=num_classes) if imagenet_arch else CifarVGG(num_classes)


#: architectures the research code starts from ImageNet-pretrained weights, and those weights
PRETRAINED = {"swin_t": torchvision.models.Swin_T_Weights.IMAGENET1K_V1}


@MODELS.register("swin_t")
def swin_t(num_classes: int, imagenet_arch: bool = True,
           weights: Optional[Mapping[str, torch.Tensor]] = None) -> nn.Module:
    """torchvision's Swin-T, with ``weights`` (its ImageNet state dict) loaded, and a new
    ``Linear(768, num_classes)`` head (PyTorch's default initialisation), as the research code."""
    model = torchvision.models.swin_t()
    if weights is not None:
        model.load_state_dict(weights)
    model.head = nn.Linear(model.head.in_features, num_classes)
    return model


def pretrained_weights(arch: str, path: Optional[str], from_scratch: bool) -> Optional[Dict[str, torch.Tensor]]:
    """The ImageNet weights an ``arch`` of :data:`PRETRAINED` starts from (``None``: another arch,
    or ``--from_scratch``): ``--pretrained_weights PATH``, else torchvision's file in the torch hub
    cache; with neither, a one-line :class:`UsageError` naming both (:func:`common.pretrained.imagenet_weights`)."""
    if arch not in PRETRAINED:
        return None
    return imagenet_weights(arch, PRETRAINED[arch], path, from_scratch)


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                imagenet_arch: bool = False,
                weights: Optional[Mapping[str, torch.Tensor]] = None) -> NormalizedClassifier:
    """A freshly initialised ``arch`` for ``num_classes`` with the dataset's normalisation
    (``weights``: the pretrained weights of an arch of :data:`PRETRAINED`)."""
    options = {"weights": weights} if arch in PRETRAINED else {}
    return NormalizedClassifier(MODELS.get(arch)(num_classes, imagenet_arch, **options), mean, std)


def build_model_from_config(config: UnlearnConfig, pretrained: bool = False) -> NormalizedClassifier:
    """A fresh model for the run's ``--arch``/dataset (``num_classes``, ``data_mean``/``data_std``).

    ``pretrained``: its weights are trained from (``main_train.py``, retrain), so an arch of
    :data:`PRETRAINED` starts from its ImageNet weights (:func:`pretrained_weights`); otherwise
    they are replaced by a checkpoint and none are read.  Under ``--channels_last`` it is built in
    that memory format, so every copy a method makes of it (SCRUB's teacher, boundary_shrink's
    attack model) runs in it too.
    """
    weights = pretrained_weights(config.arch, config.pretrained_weights, config.from_scratch) if pretrained else None
    model = build_model(config.arch, config.num_classes, config.data_mean, config.data_std, config.imagenet_arch,
                        weights)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


#: the normalisation the research code's data pipeline applies before its model's own (TinyImagenet:
#: ImageNet statistics, in the transforms of its dataset.py); none for the other datasets
ORIGINAL_DATA_NORMALIZATION = {"TinyImagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
OUR_PREFIXES = ("backbone.", "normalize.")


def is_original_format(state: Mapping[str, object]) -> bool:
    """Whether a state dict or mask uses the research code's names: its models hold the weights at
    the top level (``conv1.weight``), ours under ``backbone.`` next to ``normalize.``."""
    return any(not str(key).startswith(OUR_PREFIXES) for key in state)


def original_key(key: str, arch: str) -> str:
    """Our name of the research code's parameter or buffer ``key`` of ``arch``.

    Its ``resnet20s/44s/56s`` group the blocks in ``layer1..3``, ours number them through in
    ``layers`` (``layer2.1.conv1.weight`` of ResNet-20 is ``layers.4.conv1.weight``); every
    other name is the same, under ``backbone.``.
    """
    staged = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if arch in CIFAR_RESNET_DEPTHS and staged:
        stage, index, rest = staged.groups()
        key = f"layers.{(int(stage) - 1) * (CIFAR_RESNET_DEPTHS[arch] - 2) // 6 + int(index)}.{rest}"
    return "backbone." + key


def effective_normalization(state: Mapping[str, torch.Tensor], arch: str,
                            dataset: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the one normalisation equivalent to what a research-code model of ``arch``
    trained on ``dataset`` applied to ``[0, 1]`` images.

    Its data pipeline normalises TinyImagenet with ``(m_d, s_d)``, then its model normalises with its
    ``normalize`` buffers ``(m, s)`` -- except ``swin_t``, whose torchvision forward never calls the
    ``normalize`` the research code attaches.  Composed, ``((x - m_d) / s_d - m) / s`` is
    ``(x - (m_d + m s_d)) / (s_d s)``.
    """
    mean, std = torch.zeros(3), torch.ones(3)
    if dataset in ORIGINAL_DATA_NORMALIZATION:
        mean, std = (torch.tensor(v) for v in ORIGINAL_DATA_NORMALIZATION[dataset])
    if arch != "swin_t" and "normalize.mean" in state and "normalize.std" in state:
        model_mean, model_std = state["normalize.mean"].reshape(-1).float(), state["normalize.std"].reshape(-1).float()
        mean, std = mean + model_mean * std, std * model_std
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def from_original_format(state: Mapping[str, torch.Tensor], arch: str, dataset: str) -> Dict[str, torch.Tensor]:
    """A research-code state dict of ``arch`` (trained on ``dataset``) in our names, its normalisation
    folded into our ``normalize`` (:func:`effective_normalization`)."""
    mapped = {original_key(key, arch): value for key, value in state.items() if not key.startswith("normalize.")}
    mapped["normalize.mean"], mapped["normalize.std"] = effective_normalization(state, arch, dataset)
    return mapped


def mask_from_original_format(mask: object, arch: str) -> object:
    """A saliency mask saved by the research code's ``generate_mask.py`` (its parameter names) in ours;
    anything else is returned as it is (and checked by :func:`common.saliency.check_mask`)."""
    if isinstance(mask, dict) and mask and is_original_format(mask):
        return {original_key(str(key), arch): value for key, value in mask.items()}
    return mask


def load_weights(model: nn.Module, checkpoint: object, flag: str, path: object, arch: str,
                 dataset: Optional[str] = None) -> Dict:
    """Load a checkpoint (``{"state_dict": ...}`` or a bare state dict) into ``model``.

    Checkpoints written by the research code (its names, :func:`is_original_format`) are mapped
    to ours first (:func:`from_original_format`, for ``dataset``).  A checkpoint of another
    architecture or class count is a one-line :class:`UsageError`, not a wall of missing keys.
    """
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{flag} {path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    saved_arch = checkpoint.get("arch")
    if saved_arch is not None and saved_arch != arch:
        raise UsageError(f"{flag} {path}: checkpoint is a {saved_arch}, but --arch is {arch}")
    state_dict = checkpoint_state_dict(checkpoint, f"{flag} {path}")
    origin = ""
    if is_original_format(state_dict):
        state_dict, origin = from_original_format(state_dict, arch, dataset), " (a research-code checkpoint)"
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UsageError(f"{flag} {path}{origin}: does not match --arch {arch} ({len(missing)} missing and "
                         f"{len(unexpected)} unexpected weights, e.g. {example!r})")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise UsageError(f"{flag} {path}{origin}: weight {key!r} has shape {tuple(state_dict[key].shape)}, "
                             f"--arch {arch} with this dataset expects {tuple(value.shape)}")
    model.load_state_dict(state_dict)
    return checkpoint


def save_untrained_digits_model(path, arch: str = "resnet20s", seed: int = 0):
    """An untrained ``--arch`` checkpoint for ``--dataset digits`` at ``path`` (a valid ``--model_path``, no
    download): the tests' and ``benchmarks/gpu_check.py``'s starting model."""
    from pathlib import Path

    from common.io import atomic_torch_save
    from ImageClassification.data import DATASETS

    digits = DATASETS.get("digits")
    torch.manual_seed(seed)
    atomic_torch_save({"state_dict": build_model(arch, 10, digits.mean, digits.std).state_dict(), "arch": arch},
                      Path(path))
    return Path(path)
