"""Forgetting objectives and Fisher statistics of the latent DiT (shared loop from :mod:`ImageGeneration.core`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from common.dualoptim import DualOptim, SharedOptim
from common.errors import UsageError
from common.saliency import maybe_gradient_mask
from ImageGeneration.core.diffusion import FORGET_LOSSES, cosine_decay, noise_prediction_loss
from ImageGeneration.DiT.dit import LatentDiT, dit_alphas_cumprod

Batch = Tuple[torch.Tensor, torch.Tensor]
DIT_LOSSES = ("ga", "rl", "adaga")
METHODS = ("ron", "joint")


def relabel_target(forget_class: int, num_classes: int) -> int:
    """The DiT research code's relabelling ``(k + 100) mod 1000``, kept distinct from ``k`` for any class count."""
    offset = 100 % num_classes or 1
    return (forget_class + offset) % num_classes


class LatentBatches:
    """Endless ``(latents, labels)`` batches: images from a loader encoded by the VAE."""

    def __init__(self, batches: Iterator[Batch], model: LatentDiT, device: torch.device) -> None:
        self.batches, self.model, self.device = batches, model, device

    def next(self) -> Batch:
        x, y = next(self.batches)
        return self.model.encode(x.to(self.device)), y.to(self.device)


def latent_loss(model: LatentDiT, latents: torch.Tensor, labels: torch.Tensor, abar: torch.Tensor,
                kind: str = "plain", gamma: float = 1.0) -> torch.Tensor:
    """Element-mean diffusion loss (``plain``) or a core forget loss, at uniform random timesteps."""
    t = torch.randint(0, abar.shape[0], (latents.shape[0],)).to(latents.device)
    noise = torch.randn_like(latents)
    if kind == "plain":
        loss = noise_prediction_loss(model.eps_fn, latents, t, labels, noise, abar)
    else:
        loss = FORGET_LOSSES.get(kind)(model.eps_fn, latents, t, labels, noise, abar, None, gamma)
    return loss / model.latent_numel


@dataclass
class DiTForgetSpec:
    forget_class: int
    unlearn_loss: str = "ga"
    method: str = "ron"
    forget_alpha: float = 1.0
    decay_forget_alpha: bool = False
    remain_alpha: float = 1.0
    n_iters: int = 1000
    dual: bool = False


def validate_spec(spec: DiTForgetSpec) -> None:
    if spec.unlearn_loss not in DIT_LOSSES:
        raise UsageError(f"--unlearn-loss {spec.unlearn_loss!r}: expected one of {', '.join(DIT_LOSSES)}")
    if spec.method not in METHODS:
        raise UsageError(f"--method {spec.method!r}: expected one of {', '.join(METHODS)}")


def dit_objectives(spec: DiTForgetSpec, model: LatentDiT, forget: LatentBatches, remain: LatentBatches,
                   mask: Optional[Dict[str, torch.Tensor]] = None):
    """``(forget_loss, remain_loss, schedule, forget_mask, remain_mask)`` for :func:`run_unlearning`.

    ``ga``: ascend the forget-class loss; ``adaga``: SFR-on's re-weighted ascent;
    ``rl``: descend the loss of the forget images relabelled with :func:`relabel_target`
    (the remain gradient is masked too, SalUn with alternating updates).
    """
    device = next(model.transformer.parameters()).device
    abar = dit_alphas_cumprod().to(device)
    target = relabel_target(spec.forget_class, model.num_classes)
    masker = maybe_gradient_mask(model.transformer, mask)

    def forget_loss(step: int) -> torch.Tensor:
        alpha = cosine_decay(spec.forget_alpha, step, spec.n_iters) if spec.decay_forget_alpha else spec.forget_alpha
        latents, labels = forget.next()
        if spec.unlearn_loss == "rl":
            loss = latent_loss(model, latents, torch.full_like(labels, target), abar)
        else:
            loss = latent_loss(model, latents, labels, abar, kind=spec.unlearn_loss)
        return alpha * loss

    def remain_loss(step: int) -> torch.Tensor:
        latents, labels = remain.next()
        return spec.remain_alpha * latent_loss(model, latents, labels, abar)

    schedule = "alternate" if spec.method == "ron" or spec.dual else "joint"
    remain_mask = masker if spec.unlearn_loss == "rl" else (lambda: None)
    return forget_loss, remain_loss, schedule, masker, remain_mask


def dit_optimizer(model: nn.Module, lr: float, dual: bool, forget_lr: float) -> DualOptim:
    """AdamW (weight decay 0) at ``--lr``; with ``--dual`` a second AdamW state for the forget loss at ``--forget_lr``."""
    if dual:
        return DualOptim(model.parameters(), forget_optim="adamw", forget_lr=forget_lr, forget_weight_decay=0.0,
                         retain_optim="adamw", retain_lr=lr, retain_weight_decay=0.0)
    return SharedOptim(torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0), forget_lr=lr, retain_lr=lr)


def latent_loss_fn(model: LatentDiT) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """``compute_loss(transformer, (images, labels))`` for Fisher diagonals over image batches."""
    abar = dit_alphas_cumprod()

    def compute_loss(transformer: nn.Module, batch: Batch) -> torch.Tensor:
        device = next(transformer.parameters()).device
        images, labels = batch
        return latent_loss(model, model.encode(images.to(device)), labels.to(device), abar.to(device))

    return compute_loss
