"""Boundary unlearning (Chen et al., CVPR 2023): boundary shrinking and boundary expanding.

Both fine-tune on the forget set only, with the run's main optimizer (as the
research code does; see :mod:`.finetune` for what that means per ``--optim``).
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.saliency import Mask

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders
from .engine import UnlearnRun, run_epochs
from .registry import UNLEARN_METHODS

#: FGSM step of boundary shrinking (fixed in the paper).
SHRINK_BOUND = 0.1


def fgsm_neighbour(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                   bound: float = SHRINK_BOUND) -> torch.Tensor:
    """One FGSM step of size ``bound`` from ``images``, clamped to [0, 1] and rounded to 1/255."""
    images = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(images), targets)
    (grad,) = torch.autograd.grad(loss, images)
    adversarial = torch.clamp(images.detach() + grad.sign() * bound, 0.0, 1.0)
    return torch.round(adversarial * 255) / 255


@UNLEARN_METHODS.register("boundary_shrink")
def boundary_shrink(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                    mask: Optional[Mask], device: torch.device) -> None:
    """Relabel each forget sample with the original model's prediction on its FGSM
    neighbour (the nearest other class) and fine-tune on those labels."""
    original = copy.deepcopy(model).eval().requires_grad_(False)

    def shrink_loss(images: torch.Tensor, targets: torch.Tensor):
        neighbour_labels = original(fgsm_neighbour(original, images, targets)).argmax(dim=1)
        logits = model(images)
        return F.cross_entropy(logits, neighbour_labels), logits

    def epoch_fn(run: UnlearnRun) -> None:
        run.train_on(loaders.forget_loader, shrink_loss, "retain", "forget", warmup_every_step=True)

    run_epochs(model, config, device, mask, epoch_fn, lr_switching=False, schedule_forget=False)


def last_linear(model: nn.Module) -> Tuple[str, nn.Linear]:
    """Name and module of the last ``nn.Linear`` in ``model`` (the classifier head)."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise ValueError("boundary_expanding needs a model with an nn.Linear classifier head")
    return found[-1]


def expand_head(model: nn.Module) -> str:
    """Add one output ("shadow class") to the classifier head, keeping the existing rows.

    Returns the head's module name.
    """
    name, head = last_linear(model)
    expanded = nn.Linear(head.in_features, head.out_features + 1, bias=head.bias is not None,
                         device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        expanded.weight[:-1].copy_(head.weight)
        if head.bias is not None:
            expanded.bias[:-1].copy_(head.bias)
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, expanded)
    return name


@UNLEARN_METHODS.register("boundary_expanding")
def boundary_expanding(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                       mask: Optional[Mask], device: torch.device) -> None:
    """Train every forget sample towards a new shadow class ``num_classes``.

    As in the research code the expanded head (``num_classes + 1`` outputs)
    is kept, so forget samples predicted as the shadow class count as
    misclassified.  Mask entries of the old head no longer match its shape
    and are dropped (the head trains unmasked).
    """
    expand_head(model)
    if mask:
        shapes = {name: param.shape for name, param in model.named_parameters()}
        mask = {name: value for name, value in mask.items() if shapes.get(name) == value.shape}
    shadow_class = loaders.num_classes

    def expand_loss(images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        return F.cross_entropy(logits, torch.full_like(targets, shadow_class)), logits

    def epoch_fn(run: UnlearnRun) -> None:
        run.train_on(loaders.forget_loader, expand_loss, "retain", "forget")

    run_epochs(model, config, device, mask, epoch_fn, lr_switching=False, schedule_forget=False)
