"""One-shot baselines that perturb the weights using second-order information.

* ``fisher`` -- Fisher forgetting (Golatkar et al., CVPR 2020): add Gaussian
  noise scaled by the inverse Fisher diagonal of the retain set.
* ``wfisher`` -- influence unlearning (IU) with a WoodFisher inverse-Hessian
  estimate (Jia et al., NeurIPS 2023).
* ``fisher_new`` -- Fisher forgetting as Golatkar et al.'s code does it: sample
  every weight around its value with a variance from a Hessian-diagonal
  estimate of the retain loss.

Neither uses an optimizer, so ``--optim`` has no effect on them.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from common.distributed import sharding_of
from common.progress import progress
from common.saliency import Mask

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders
from .registry import UNLEARN_METHODS

#: Added to every per-sample gradient before squaring, as in the research code.
FISHER_EPS = 1e-8
#: Cap on the noise standard deviation of Fisher forgetting.
FISHER_MAX_STD = 1e-3
#: Damping ``N`` of the WoodFisher recursion, which also bounds the samples it reads (``N + 2``).
WOODFISHER_N = 1000


def fisher_diagonal(model: nn.Module, loader: Iterable, device: torch.device) -> Dict[str, torch.Tensor]:
    """``mean_i (d log p(y_i | x_i) / d theta + eps)^2`` over all samples, in eval mode.

    One forward pass per batch, then one backward pass per sample through it.
    """
    model.eval()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    totals = [torch.zeros_like(p) for p in params]
    count = 0
    for images, targets in progress(loader, desc="fisher", leave=False, disable=not sharding_of(model).is_main):
        log_probs = torch.log_softmax(model(images.to(device)), dim=-1)
        targets = targets.to(device)
        for i in range(len(targets)):
            grads = torch.autograd.grad(log_probs[i, targets[i]], params, retain_graph=True)
            torch._foreach_add_(totals, torch._foreach_pow(torch._foreach_add(list(grads), FISHER_EPS), 2))
        count += len(targets)
    return {name: total / count for (name, _), total in zip(named, totals)}


@UNLEARN_METHODS.register("fisher")
def fisher(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
           mask: Optional[Mask], device: torch.device) -> None:
    """Add ``N(0, min(sqrt(--alpha / F), 1e-3)^2)`` noise to every weight.

    Parameters whose last dimension equals the number of classes (the head's
    bias) get ten times the noise; the research code tests for 10 literally.
    """
    fisher_diag = fisher_diagonal(model, loaders.retain_loader, device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in fisher_diag:
                continue
            std = torch.sqrt(config.alpha / fisher_diag[name]).clamp(max=FISHER_MAX_STD)
            noise = std * torch.randn_like(param)
            if param.shape[-1] == loaders.num_classes:
                noise = noise * 10
            param.add_(noise)


def trainable(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def flat_loss_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy of a batch, flattened over the trainable parameters."""
    loss = F.cross_entropy(model(images), targets)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, trainable(model))])


def summed_gradient(model: nn.Module, loader: Iterable, device: torch.device, desc: str):
    """``(sum over batches of n_batch * mean-loss gradient, number of samples)``."""
    total, count = None, 0
    for images, targets in progress(loader, desc=desc, leave=False, disable=not sharding_of(model).is_main):
        g = flat_loss_gradient(model, images.to(device), targets.to(device)) * images.size(0)
        total = g if total is None else total + g
        count += images.size(0)
    return total, count


def woodfisher_inverse_hvp(model: nn.Module, loader: Iterable, device: torch.device,
                           v: torch.Tensor, damping: float = WOODFISHER_N) -> torch.Tensor:
    """The research code's WoodFisher recursion for ``H^-1 v`` over single-sample gradients.

    ``k`` starts at ``v`` and ``o`` at the first gradient; for each further
    gradient ``g``: ``k -= (k.g / (N + o.g)) o`` and ``o -= (o.g / (N + o.g)) o``.
    Stops after ``N + 2`` samples.
    """
    k_vec, o_vec = v.clone(), None
    bar = progress(loader, desc="woodfisher", leave=False, disable=not sharding_of(model).is_main)
    for index, (image, target) in enumerate(bar):
        sample_grad = flat_loss_gradient(model, image.to(device), target.to(device))
        with torch.no_grad():
            if o_vec is None:
                o_vec = sample_grad.clone()
            else:
                overlap = torch.dot(o_vec, sample_grad)
                k_vec -= (torch.dot(k_vec, sample_grad) / (damping + overlap)) * o_vec
                o_vec -= (overlap / (damping + overlap)) * o_vec
        if index > damping:
            break
    return k_vec


@UNLEARN_METHODS.register("wfisher")
def wfisher(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
            mask: Optional[Mask], device: torch.device) -> None:
    """Influence unlearning: ``theta += --alpha * H^-1 (g_forget - g_retain)`` (masked if given).

    ``g_forget = sum_forget / (n_f + n_r)`` and
    ``g_retain = sum_retain * n_f / ((n_f + n_r) n_r)`` are the summed
    per-set gradients weighted as in the research code; ``H^-1`` is the
    WoodFisher estimate over single retain samples.
    """
    model.eval()
    forget_loader = DataLoader(loaders.forget_loader.dataset, batch_size=config.batch_size, shuffle=False)
    retain_loader = DataLoader(loaders.retain_loader.dataset, batch_size=config.batch_size, shuffle=False)
    single_loader = DataLoader(loaders.retain_loader.dataset, batch_size=1, shuffle=False)
    forget_grad, n_forget = summed_gradient(model, forget_loader, device, "forget gradient")
    retain_grad, n_retain = summed_gradient(model, retain_loader, device, "retain gradient")
    forget_grad = forget_grad / (n_forget + n_retain)
    retain_grad = retain_grad * n_forget / ((n_forget + n_retain) * n_retain)
    perturbation = config.alpha * woodfisher_inverse_hvp(model, single_loader, device, forget_grad - retain_grad)
    with torch.no_grad():
        offset = 0
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            step = perturbation[offset:offset + param.numel()].view_as(param)
            if mask and name in mask:
                step = step * mask[name].to(device=param.device, dtype=param.dtype)
            param.add_(step)
            offset += param.numel()


#: ``fisher_new``: batch size of the Hessian pass, its damping, variance caps (all weights, classifier rows) and the
#: variance of a forgotten class's classifier row, as in the research code.
HESSIAN_BATCH_SIZE = 32
HESSIAN_EPS = 1e-8
FISHER_NEW_MAX_VAR = 1e3
FISHER_NEW_HEAD_MAX_VAR = 1e2
FORGOTTEN_CLASS_VAR = 1e-4


def hessian_diagonal(model: nn.Module, dataset, device: torch.device, num_classes: int):
    """``mean over batches of sum_y mean_i p(y | x_i) * (d CE(f(x), y) / d theta)^2``, in eval mode.

    The research code's Hessian-diagonal estimate (Golatkar et al.): for every
    batch of 32 (in order) and every class ``y``, the squared gradient of the
    batch's mean cross-entropy against label ``y``, weighted by the batch's
    mean predicted probability of ``y``.  Also returns the labels seen.
    """
    model.eval()
    params = trainable(model)
    totals = [torch.zeros_like(p) for p in params]
    loader = DataLoader(dataset, batch_size=HESSIAN_BATCH_SIZE, shuffle=False)
    labels = set()
    for images, targets in progress(loader, desc="hessian", leave=False, disable=not sharding_of(model).is_main):
        logits = model(images.to(device))
        probs = torch.softmax(logits, dim=-1).detach()
        labels.update(int(t) for t in targets)
        for y in range(num_classes):
            loss = F.cross_entropy(logits, torch.full((len(targets),), y, device=logits.device))
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            torch._foreach_add_(totals, torch._foreach_mul(torch._foreach_pow(list(grads), 2), probs[:, y].mean()))
    return [total / len(loader) for total in totals], labels


@UNLEARN_METHODS.register("fisher_new")
def fisher_new(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
               mask: Optional[Mask], device: torch.device) -> None:
    """Sample every weight from ``N(theta, var)`` with ``var`` from the retain set's Hessian diagonal ``h``.

    ``var = --alpha * min(1 / (h + 1e-8), 1e3)`` (``1e2`` for weights whose
    first dimension is the class count), averaged over the input dimension
    (dim 1) of every multi-dimensional weight, then times 10 on the classifier
    rows and on every one-dimensional parameter (BatchNorm, biases).  When a
    whole class (``--class_to_replace``) is forgotten, its classifier row is
    sampled around 0 with variance ``1e-4``.

    The research code applies that last rule whenever 4500 CIFAR-10 (450
    CIFAR-100) samples are forgotten, class given or not, so a random
    forget set zeroes the last class's row (``--class_to_replace`` -1); here
    it applies when the forgotten class has no sample left in the retain set.
    """
    num_classes = loaders.num_classes
    hessian, retain_labels = hessian_diagonal(model, loaders.retain_loader.dataset, device, num_classes)
    whole_class = config.class_to_replace >= 0 and config.class_to_replace not in retain_labels
    with torch.no_grad():
        for param, h in zip(trainable(model), hessian):
            head = param.shape[0] == num_classes
            var = (1.0 / (h + HESSIAN_EPS)).clamp(max=FISHER_NEW_MAX_VAR)
            if head:
                var = var.clamp(max=FISHER_NEW_HEAD_MAX_VAR)
            var = config.alpha * var
            if param.dim() > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(param).clone()
            mean = param.detach().clone()
            if head and whole_class:
                mean[config.class_to_replace] = 0
                var[config.class_to_replace] = FORGOTTEN_CLASS_VAR
            if head or param.dim() == 1:
                var = var * 10
            param.copy_(mean + var.sqrt() * torch.empty_like(param).normal_())
