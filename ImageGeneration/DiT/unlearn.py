"""Forgetting objectives and Fisher statistics of the latent DiT (shared loop from :mod:`ImageGeneration.core`)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from common.dualoptim import DualOptim, SharedOptim
from common.errors import UsageError
from common.saliency import maybe_gradient_mask
from ImageGeneration.core.diffusion import FORGET_LOSSES, noise_prediction_loss
from ImageGeneration.core.unlearn import ForgetWeights
from ImageGeneration.DiT.dit import LatentDiT, dit_alphas_cumprod, dit_betas

Batch = Tuple[torch.Tensor, torch.Tensor]
DIT_LOSSES = ("ga", "rl", "adaga")
METHODS = ("ron", "joint")


def relabel_target(forget_class: int, num_classes: int) -> int:
    """The DiT research code's relabelling ``(k + 100) mod 1000``, kept distinct from ``k`` for any class count."""
    offset = 100 % num_classes or 1
    return (forget_class + offset) % num_classes


class LatentBatches:
    """Endless ``(latents, labels)`` batches: images from a loader encoded by the VAE.

    Its position is that of ``batches`` (an :class:`~common.checkpointing.EndlessLoader`),
    so it can be registered with resume snapshots.
    """

    def __init__(self, batches: Iterator[Batch], model: LatentDiT, device: torch.device) -> None:
        self.batches, self.model, self.device = batches, model, device

    def next(self) -> Batch:
        x, y = next(self.batches)
        return self.model.encode(x.to(self.device)), y.to(self.device)

    def state_dict(self) -> Dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.batches.load_state_dict(state)


def latent_loss(model: LatentDiT, latents: torch.Tensor, labels: torch.Tensor, abar: torch.Tensor,
                kind: str = "plain", gamma: float = 1.0, vb: bool = False) -> torch.Tensor:
    """Element-mean diffusion loss (``plain``) or a core forget loss, at uniform random timesteps.

    ``vb`` adds the learned-variance bound of a variance-predicting DiT to every sample's loss,
    as the research code's ``training_losses`` does (``mse + vb``).
    """
    t = torch.randint(0, abar.shape[0], (latents.shape[0],)).to(latents.device)
    noise = torch.randn_like(latents)
    variance = {"variance_betas": dit_betas(abar.shape[0])} if vb else {}
    eps_fn = model.output_fn if vb else model.eps_fn
    if kind == "plain":
        loss = noise_prediction_loss(eps_fn, latents, t, labels, noise, abar, **variance)
    else:
        loss = FORGET_LOSSES.get(kind)(eps_fn, latents, t, labels, noise, abar, None, gamma, **variance)
    return loss / model.latent_numel


def add_vb_arg(parser) -> None:
    parser.add_argument("--vb-loss", action=argparse.BooleanOptionalAction, default=None,
                        help="add the learned-variance bound to the diffusion loss (default: on when the DiT "
                             "predicts variances, as the research code's DiT-XL/2)")


def resolve_vb(requested: Optional[bool], model: LatentDiT) -> bool:
    """``--vb-loss``, defaulting to whether the DiT learns its variances; on for one that does not is an error."""
    if requested and not model.learns_variance:
        raise UsageError("--vb-loss: the DiT does not predict variances (out_channels must be 2 x in_channels)")
    return model.learns_variance if requested is None else requested


@dataclass
class DiTForgetSpec(ForgetWeights):
    """The flags of ``DiT/main_forget.py`` that shape the objectives."""

    forget_class: int
    n_iters: int = 1000
    vb_loss: bool = False


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
        alpha = spec.forget_weight(step, spec.n_iters)
        latents, labels = forget.next()
        if spec.unlearn_loss == "rl":
            loss = latent_loss(model, latents, torch.full_like(labels, target), abar, vb=spec.vb_loss)
        else:
            loss = latent_loss(model, latents, labels, abar, kind=spec.unlearn_loss, vb=spec.vb_loss)
        return alpha * loss

    def remain_loss(step: int) -> torch.Tensor:
        latents, labels = remain.next()
        return spec.remain_alpha * latent_loss(model, latents, labels, abar, vb=spec.vb_loss)

    schedule = spec.schedule("alternate" if spec.method == "ron" else "joint")
    remain_mask = masker if spec.unlearn_loss == "rl" else (lambda: None)
    return forget_loss, remain_loss, schedule, masker, remain_mask


def dit_optimizer(model: nn.Module, lr: float, dual: bool, forget_lr: float) -> DualOptim:
    """AdamW (weight decay 0) at ``--lr``; with ``--dual`` a second AdamW state for the forget loss at ``--forget_lr``."""
    if dual:
        return DualOptim(model.parameters(), forget_optim="adamw", forget_lr=forget_lr, forget_weight_decay=0.0,
                         retain_optim="adamw", retain_lr=lr, retain_weight_decay=0.0)
    return SharedOptim(torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0), forget_lr=lr, retain_lr=lr)


def latent_loss_fn(model: LatentDiT, vb: bool = False) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """``compute_loss(transformer, (images, labels))`` for Fisher diagonals over image batches."""
    abar = dit_alphas_cumprod()

    def compute_loss(transformer: nn.Module, batch: Batch) -> torch.Tensor:
        device = next(transformer.parameters()).device
        images, labels = batch
        return latent_loss(model, model.encode(images.to(device)), labels.to(device), abar.to(device), vb=vb)

    return compute_loss
