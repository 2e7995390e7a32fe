"""Forgetting objectives and gradient statistics of the conditional DDPM (methods from :mod:`ImageGeneration.core`).

The methods themselves (SalUn, SFR-on, Selective Amnesia, GA, RL) are registered in
:data:`ImageGeneration.core.methods.METHODS`; :class:`DDPMObjectives` gives them the
DDPM's loss terms and :func:`plan_forgetting` picks one by ``--mode``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn

from common.checkpointing import Snapshotter
from common.distributed import SampleSharding
from dualoptim.optim import TwoObjectiveOptimizer
from common.saliency import maybe_gradient_mask
from ImageGeneration.core.batches import Batch, BatchStream
from ImageGeneration.core.diffusion import (
    EMA, FORGET_LOSSES, antithetic_timesteps, ewc_penalty, guided_noise, noise_prediction_loss, per_sample_sum,
    pseudo_labels_for, q_sample)
from ImageGeneration.core.methods import METHODS, SA_FISHER, ForgetObjectives, ForgetPlan, plan_method
from common.precision import MixedPrecision
from ImageGeneration.core.unlearn import ForgetWeights, run_unlearning
from ImageGeneration.DDPM.config import alphas_cumprod
from ImageGeneration.DDPM.networks import DDPMNetwork, data_transform, noise_predictor, null_label
from ImageGeneration.DDPM.training import diffusion_loss_on

ARCHITECTURE_KEYS = ("network", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "norm_num_groups",
                     "resamp_with_conv")
DATA_SHAPE_KEYS = ("image_size", "channels", "n_classes")


def config_kind(mode: str) -> str:
    """The default config of ``--mode`` (``<dataset>_<kind>.yml``), from the method table."""
    return METHODS.get(mode).config_kind


def adopt_architecture(run_config: SimpleNamespace, ckpt_config: SimpleNamespace) -> SimpleNamespace:
    """A new config: ``run_config`` with the network and data shape of the checkpoint it continues from
    (neither input is changed).

    A forgetting config carries its own optimizer, EMA and schedule settings,
    but the UNet it loads is fixed by the checkpoint.
    """
    model = {**vars(run_config.model), **{key: getattr(ckpt_config.model, key) for key in ARCHITECTURE_KEYS}}
    data = {**vars(run_config.data), **{key: getattr(ckpt_config.data, key) for key in DATA_SHAPE_KEYS}}
    return SimpleNamespace(**{**vars(run_config), "model": SimpleNamespace(**model),
                              "data": SimpleNamespace(**data), "diffusion": ckpt_config.diffusion})


@dataclass(frozen=True)
class AmnesiaBatch:
    """Selective Amnesia's draws of one step, shared by its two terms: the replay images and labels
    with their Gaussian noise, the uniform noise images with theirs, and the timesteps of both."""

    x_replay: torch.Tensor
    c_replay: torch.Tensor
    e_replay: torch.Tensor
    x_noise: torch.Tensor
    e_noise: torch.Tensor
    t: torch.Tensor


@dataclass
class ForgetSpec(ForgetWeights):
    """What to forget and how: the flags of ``main_forget.py``."""

    mode: str
    label_to_forget: int


class DDPMObjectives(ForgetObjectives):
    """The DDPM's loss terms for the registered methods.

    Forget and remain terms use antithetic timesteps and the training label dropout
    (``model.cond_drop_prob``); ``rl`` relabels to :func:`pseudo_labels_for`.  Selective
    Amnesia's terms read one :meth:`amnesia_batch` and drop no label: ``noise_term`` is the loss
    of its U[-1, 1] noise images labelled with the forgotten class, ``replay_term`` is ``gamma``
    times the loss of its replay batch plus ``lmbda`` times the EWC penalty at the weights the
    plan was made with, weighted by ``sa_fisher``.  ``sharding`` runs the network data-parallel
    (:mod:`common.distributed`).
    """

    def __init__(self, label_to_forget: int, unet: DDPMNetwork, config: SimpleNamespace,
                 forget_batches: Optional[BatchStream], remain_batches: Optional[BatchStream],
                 mask: Optional[Dict[str, torch.Tensor]] = None,
                 sa_fisher: Optional[Mapping[str, torch.Tensor]] = None,
                 sharding: Optional[SampleSharding] = None) -> None:
        self.sharding = sharding or SampleSharding()
        self.unet, self.config, self.label_to_forget = unet, config, label_to_forget
        self.forget_batches, self.remain_batches = forget_batches, remain_batches
        self.device = next(unet.parameters()).device
        self.abar = alphas_cumprod(config).to(self.device)
        self.n_iters = config.training.n_iters
        self.train_eps = noise_predictor(unet, config.model.cond_drop_prob, sharding=self.sharding)
        self.plain_eps = noise_predictor(unet, 0.0, sharding=self.sharding)
        self.masker = maybe_gradient_mask(unet, mask)
        if sa_fisher is not None:
            self.anchor = {name: p.detach().clone() for name, p in unet.named_parameters()}
            self.fisher = {name: value.to(self.device) for name, value in sa_fisher.items()}

    def forget_term(self, kind: str) -> torch.Tensor:
        x0, c = self.forget_batches.next()
        t = antithetic_timesteps(x0.shape[0], self.abar.shape[0], self.device)
        pseudo = pseudo_labels_for(c, self.label_to_forget, self.config.data.n_classes)
        return FORGET_LOSSES.get(kind)(self.train_eps, x0, t, c, torch.randn_like(x0), self.abar, pseudo,
                                       self.config.training.gamma)

    def remain_term(self) -> torch.Tensor:
        x0, c = self.remain_batches.next()
        return diffusion_loss_on(self.train_eps, x0, c, self.abar)

    def amnesia_batch(self) -> AmnesiaBatch:
        """One step's draws, in the research code's order (``runners/diffusion.py:389-411``): the next
        replay batch, as many U[-1, 1] noise images, the replay's then the noise images' Gaussian
        noise, and one set of antithetic timesteps that both terms use."""
        x_replay, c_replay = self.remain_batches.next()
        n, data = x_replay.shape[0], self.config.data
        x_noise = (torch.rand((n, data.channels, data.image_size, data.image_size), device=self.device) - 0.5) * 2.0
        e_replay, e_noise = torch.randn_like(x_replay), torch.randn_like(x_noise)
        t = antithetic_timesteps(n, self.abar.shape[0], self.device)
        return AmnesiaBatch(x_replay, c_replay, e_replay, x_noise, e_noise, t)

    def noise_term(self, batch: AmnesiaBatch) -> torch.Tensor:
        c_noise = torch.full((batch.t.shape[0],), self.label_to_forget, dtype=torch.long, device=self.device)
        return noise_prediction_loss(self.plain_eps, batch.x_noise, batch.t, c_noise, batch.e_noise, self.abar)

    def replay_term(self, batch: AmnesiaBatch) -> torch.Tensor:
        penalty = self.sharding.replicated(ewc_penalty(self.unet, self.fisher, self.anchor))  # the weights', not the batch's
        replay = noise_prediction_loss(self.plain_eps, batch.x_replay, batch.t, batch.c_replay, batch.e_replay,
                                       self.abar)
        training = self.config.training
        return training.gamma * replay + training.lmbda * penalty


def plan_forgetting(spec: ForgetSpec, unet: DDPMNetwork, config: SimpleNamespace,
                    forget_batches: Optional[BatchStream],
                    remain_batches: Optional[BatchStream], mask: Optional[Dict[str, torch.Tensor]] = None,
                    sa_fisher: Optional[Mapping[str, torch.Tensor]] = None,
                    sharding: Optional[SampleSharding] = None, dual: bool = False) -> ForgetPlan:
    """The registered method ``spec.mode`` applied to the DDPM's :class:`DDPMObjectives` (``dual``: the
    optimizer keeps one state per objective)."""
    if SA_FISHER in METHODS.get(spec.mode).inputs and sa_fisher is None:
        raise ValueError(f"--mode {spec.mode} needs the Fisher dictionary")
    objectives = DDPMObjectives(spec.label_to_forget, unet, config, forget_batches, remain_batches, mask,
                                sa_fisher, sharding)
    return plan_method(spec.mode, spec, objectives, dual)


def forget_ddpm(spec: ForgetSpec, unet: DDPMNetwork, config: SimpleNamespace, optimizer: TwoObjectiveOptimizer,
                plan: ForgetPlan, ema: Optional[EMA], logger: logging.Logger,
                on_snapshot: Callable[[int], None],
                sharding: Optional[SampleSharding] = None,
                snapshots: Optional[Snapshotter] = None, allow_nonfinite: bool = False,
                precision: Optional[MixedPrecision] = None) -> List[Dict[str, float]]:
    """Run the planned forgetting for ``training.n_iters`` steps (resumable with ``snapshots``; ``precision``:
    the ``--amp`` autocast, default float32)."""
    return run_unlearning(
        unet, optimizer, config.training.n_iters, plan.forget_loss, plan.remain_loss, schedule=plan.schedule,
        forget_mask=plan.forget_mask, remain_mask=plan.remain_mask, grad_clip=config.optim.grad_clip, ema=ema,
        log_freq=config.training.log_freq, on_snapshot=on_snapshot, snapshot_freq=config.training.snapshot_freq,
        log=logger.info, desc=f"forgetting ({spec.mode})", sharding=sharding, snapshots=snapshots,
        allow_nonfinite=allow_nonfinite, precision=precision)


# --------------------------------------------------------------------------- gradient statistics

def guided_loss_fn(config: SimpleNamespace, cond_scale: float) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """``compute_loss(unet, (x, c))`` for mask statistics: the guided prediction's simple loss.

    The research code scores saliency with the model in eval mode and the
    classifier-free-guided output (``mode="test"``) at ``--cond_scale``.
    """
    abar = alphas_cumprod(config)

    def compute_loss(unet: DDPMNetwork, batch: Batch) -> torch.Tensor:
        device = next(unet.parameters()).device
        x, c = batch
        x0, c = data_transform(x.to(device)), c.to(device)
        t = antithetic_timesteps(x0.shape[0], abar.shape[0], device)
        noise = torch.randn_like(x0)
        x_t = q_sample(x0, t, noise, abar)
        output = guided_noise(noise_predictor(unet), x_t, t, c, torch.full_like(c, null_label(unet)), cond_scale)
        return per_sample_sum((noise - output).square()).mean()

    return compute_loss


def elbo_fisher_loss_fn(config: SimpleNamespace, timesteps: torch.Tensor,
                        n_chunks: int = 1) -> Callable[[nn.Module, Batch], Iterator[torch.Tensor]]:
    """Selective Amnesia's per-sample Fisher loss: the simple loss summed over ``timesteps``.

    Used with batches of one sample so that ``accumulate_gradients(power=2)`` averages squared
    *per-sample* gradients, as the research code's FIM does.  The sum comes in ``n_chunks``
    chunks of timesteps, each backpropagated before the next is built, so memory holds one
    chunk's graphs (the research code's ``--n_chunks``); the gradient is the same.
    """
    abar = alphas_cumprod(config)

    def compute_loss(unet: DDPMNetwork, batch: Batch) -> Iterator[torch.Tensor]:
        device = next(unet.parameters()).device
        x, c = batch
        x0, c = data_transform(x.to(device)), c.to(device)
        eps_fn = noise_predictor(unet, config.model.cond_drop_prob)
        for chunk in timesteps.chunk(n_chunks):
            total = 0.0
            for t in chunk.tolist():
                t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
                total = total + noise_prediction_loss(eps_fn, x0, t_batch, c, torch.randn_like(x0), abar)
            yield total

    return compute_loss
