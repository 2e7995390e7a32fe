"""Forgetting objectives and Fisher statistics of the latent DiT (methods and loop from :mod:`ImageGeneration.core`).

The DiT forgets with a registered method (:data:`ImageGeneration.core.methods.METHODS`,
``--mode``, the research code's ``sfron`` by default) applied to its :class:`DiTObjectives`;
every method that needs no extra input (:func:`dit_methods`) works.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import nn

from dualoptim.optim import TwoObjectiveOptimizer
from dualoptim.recipes import OptimizerChoice, RecipeSettings
from common.errors import UsageError
from common.saliency import maybe_gradient_mask
from ImageGeneration.core.batches import Batch, BatchStream
from ImageGeneration.core.diffusion import FORGET_LOSSES, noise_prediction_loss
from ImageGeneration.core.methods import METHODS, ForgetObjectives, ForgetPlan, plan_method
from ImageGeneration.core.optim import build_forget_optimizer
from ImageGeneration.core.unlearn import ForgetWeights
from ImageGeneration.DiT.dit import LatentDiT, dit_alphas_cumprod, dit_betas

DIT_LOSSES = ("ga", "rl", "adaga")


def relabel_target(forget_class: int, num_classes: int) -> int:
    """The DiT research code's relabelling ``(k + 100) mod 1000``, kept distinct from ``k`` for any class count."""
    offset = 100 % num_classes or 1
    return (forget_class + offset) % num_classes


def latent_batches(batches: Iterator[Batch], model: LatentDiT, device: torch.device) -> BatchStream:
    """Endless ``(latents, labels)`` batches: images from a loader encoded by the VAE."""
    return BatchStream(batches, lambda x, y: (model.encode(x.to(device)), y.to(device)))


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


def dit_methods() -> list:
    """The ``--mode`` values of the DiT: the registered methods that need no extra input (the DiT has no
    Selective Amnesia terms)."""
    return [name for name in METHODS if not METHODS.get(name).inputs]


@dataclass
class DiTForgetSpec(ForgetWeights):
    """The flags of ``DiT/main_forget.py`` that shape the objectives."""

    forget_class: int
    mode: str = "sfron"
    n_iters: int = 1000
    vb_loss: bool = False


def validate_spec(spec) -> None:
    """Check ``spec``'s ``mode``, ``unlearn_loss`` and ``method`` (a :class:`DiTForgetSpec` or the run's config)
    against the method's table entry (:data:`~ImageGeneration.core.methods.METHODS`)."""
    if spec.mode not in dit_methods():
        raise UsageError(f"--mode {spec.mode!r}: expected one of {', '.join(dit_methods())}")
    method = METHODS.get(spec.mode)
    if method.reads_loss and spec.unlearn_loss not in DIT_LOSSES:
        raise UsageError(f"--unlearn-loss {spec.unlearn_loss!r}: expected one of {', '.join(DIT_LOSSES)}")
    if method.update_methods and spec.method not in method.update_methods:
        raise UsageError(f"--method {spec.method!r}: expected one of {', '.join(method.update_methods)}")


class DiTObjectives(ForgetObjectives):
    """The DiT's loss terms for the registered methods, at uniform random timesteps (:func:`latent_loss`).

    ``ga``/``adaga`` are the core forget losses of the forget latents; ``rl`` descends the loss
    of the forget latents relabelled with :func:`relabel_target`.
    """

    def __init__(self, spec: DiTForgetSpec, model: LatentDiT, forget: BatchStream, remain: BatchStream,
                 mask: Optional[Dict[str, torch.Tensor]] = None) -> None:
        self.spec, self.model, self.forget, self.remain = spec, model, forget, remain
        self.n_iters = spec.n_iters
        self.abar = dit_alphas_cumprod().to(next(model.transformer.parameters()).device)
        self.target = relabel_target(spec.forget_class, model.num_classes)
        self.masker = maybe_gradient_mask(model.transformer, mask)

    def forget_term(self, kind: str) -> torch.Tensor:
        latents, labels = self.forget.next()
        if kind == "rl":
            return latent_loss(self.model, latents, torch.full_like(labels, self.target), self.abar,
                               vb=self.spec.vb_loss)
        return latent_loss(self.model, latents, labels, self.abar, kind=kind, vb=self.spec.vb_loss)

    def remain_term(self) -> torch.Tensor:
        latents, labels = self.remain.next()
        return latent_loss(self.model, latents, labels, self.abar, vb=self.spec.vb_loss)


def dit_plan(spec: DiTForgetSpec, model: LatentDiT, forget: BatchStream, remain: BatchStream,
             mask: Optional[Dict[str, torch.Tensor]] = None, dual: bool = False) -> ForgetPlan:
    """The registered method ``spec.mode`` on the DiT's objectives (``dual``: the optimizer keeps one state per
    objective)."""
    return plan_method(spec.mode, spec, DiTObjectives(spec, model, forget, remain, mask), dual)


#: The DiT research code's optimizer: AdamW without weight decay, for both objectives.
DIT_ADAMW = OptimizerChoice("adamw", 0.0)


def dit_optimizer(model: nn.Module, lr: float, recipe: str, forget_lr: float) -> TwoObjectiveOptimizer:
    """The ``--optim recipe`` optimizer of the DiT: ``native`` is the research code's AdamW (weight decay 0) at
    ``--lr``, ``dual_native`` (``--dual``) adds a second AdamW state for the forget loss at ``--forget_lr``;
    the image-classification recipes get ``--forget_lr`` / ``--lr`` and SGD without weight decay."""
    settings = RecipeSettings(forget_lr=forget_lr, retain_lr=lr, shared_lrs=(lr, lr), weight_decay=0.0,
                              native_forget=DIT_ADAMW, native_retain=DIT_ADAMW)
    return build_forget_optimizer(recipe, model.parameters(), settings)


def latent_loss_fn(model: LatentDiT, vb: bool = False) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """``compute_loss(transformer, (images, labels))`` for Fisher diagonals over image batches."""
    abar = dit_alphas_cumprod()

    def compute_loss(transformer: nn.Module, batch: Batch) -> torch.Tensor:
        device = next(transformer.parameters()).device
        images, labels = batch
        return latent_loss(model, model.encode(images.to(device)), labels.to(device), abar.to(device), vb=vb)

    return compute_loss
