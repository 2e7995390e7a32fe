"""Training, forgetting and gradient statistics of the conditional DDPM.

The entry scripts (``main_train.py``, ``main_forget.py``, ``generate_mask.py``)
parse flags and call the functions here; the losses and the forget/remain
update loop come from :mod:`ImageGeneration.core`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from diffusers import UNet2DModel
from torch import nn
from tqdm import tqdm

from common.checkpointing import Snapshotter
from common.distributed import SampleSharding
from common.dualoptim import DualOptim
from common.nonfinite import check_finite_loss
from common.saliency import maybe_gradient_mask
from ImageGeneration.core.diffusion import (
    EMA, FORGET_LOSSES, antithetic_timesteps, ewc_penalty, guided_noise, noise_prediction_loss,
    per_sample_sum, pseudo_labels_for, q_sample)
from ImageGeneration.core.unlearn import ForgetWeights, run_unlearning
from ImageGeneration.DDPM.data import random_flip
from ImageGeneration.DDPM.model import alphas_cumprod, build_optimizer, data_transform, noise_predictor, null_label

Batch = Tuple[torch.Tensor, torch.Tensor]


class BatchSource:
    """Endless ``(x0, c)`` batches in model space (``[-1, 1]``, optional random flips) on ``device``.

    Its position is that of ``batches`` (an :class:`~common.checkpointing.EndlessLoader`),
    so it can be registered with resume snapshots.
    """

    def __init__(self, batches: Iterator[Batch], device: torch.device, flip: bool) -> None:
        self.batches, self.device, self.flip = batches, device, flip

    def next(self) -> Batch:
        x, c = next(self.batches)
        x = x.to(self.device)
        if self.flip:
            x = random_flip(x)
        return data_transform(x), c.to(self.device)

    def state_dict(self) -> Dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.batches.load_state_dict(state)


def diffusion_loss_on(eps_fn, x0: torch.Tensor, c: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The simple loss of one batch with antithetic timesteps and fresh noise."""
    t = antithetic_timesteps(x0.shape[0], abar.shape[0], x0.device)
    return noise_prediction_loss(eps_fn, x0, t, c, torch.randn_like(x0), abar)


def train_ddpm(unet: UNet2DModel, config: SimpleNamespace, batches: BatchSource, logger: logging.Logger,
               on_snapshot: Callable[[int, torch.optim.Optimizer, Optional[EMA]], None],
               sharding: Optional[SampleSharding] = None,
               snapshots: Optional[Snapshotter] = None, allow_nonfinite: bool = False) -> List[float]:
    """Train (or retrain) the conditional DDPM for ``training.n_iters`` steps; returns the losses.

    Under a multi-process ``sharding`` every process runs its slice of each batch and the
    gradients are summed, so the losses and weights are those of one process.  With
    ``snapshots`` (every ``training.snapshot_freq`` steps, after ``on_snapshot``) a
    resumed run continues from the last one.  A NaN/inf loss stops the run before its step unless
    ``allow_nonfinite`` (:func:`common.nonfinite.check_finite_loss`).
    """
    sharding = sharding or SampleSharding()
    device = next(unet.parameters()).device
    optimizer = build_optimizer(config, unet.parameters())
    ema = EMA(unet, config.model.ema_rate) if config.model.ema else None
    snapshots = (snapshots or Snapshotter(None)).register(
        model=unet, optimizer=optimizer, batches=batches, forward_generator=sharding.forward_generator,
        **({"ema": ema} if ema is not None else {}))
    loop = snapshots.restore() or {"step": 0, "losses": []}
    eps_fn = noise_predictor(unet, config.model.cond_drop_prob, sharding=sharding)
    abar = alphas_cumprod(config).to(device)
    t_cfg, losses = config.training, loop["losses"]
    unet.train()
    for step in tqdm(range(loop["step"], t_cfg.n_iters), desc="training", total=t_cfg.n_iters,
                     initial=loop["step"], dynamic_ncols=True, disable=not sharding.is_main):
        x0, c = batches.next()
        loss = diffusion_loss_on(eps_fn, x0, c, abar)
        check_finite_loss(loss, step + 1, "train", optimizer.param_groups[0]["lr"], allow_nonfinite)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sharding.sync_gradients(unet)
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), config.optim.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(unet)
        losses.append(float(loss.detach()))
        if (step + 1) % t_cfg.log_freq == 0:
            logger.info(f"step: {step}, loss: {losses[-1]}")
        if (step + 1) % t_cfg.snapshot_freq == 0 or step + 1 == t_cfg.n_iters:
            on_snapshot(step, optimizer, ema)
        snapshots.step(step + 1, t_cfg.n_iters, step=step + 1, losses=losses)
    return losses


# --------------------------------------------------------------------------- gradient statistics

def guided_loss_fn(config: SimpleNamespace, cond_scale: float) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """``compute_loss(unet, (x, c))`` for mask statistics: the guided prediction's simple loss.

    The research code scores saliency with the model in eval mode and the
    classifier-free-guided output (``mode="test"``) at ``--cond_scale``.
    """
    abar = alphas_cumprod(config)

    def compute_loss(unet: UNet2DModel, batch: Batch) -> torch.Tensor:
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

    def compute_loss(unet: UNet2DModel, batch: Batch) -> Iterator[torch.Tensor]:
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


# --------------------------------------------------------------------------- forgetting

FORGET_MODES = ("salun", "sfron", "sa", "ga", "rl")
SFRON_METHODS = ("ron", "joint")
ARCHITECTURE_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "norm_num_groups")
DATA_SHAPE_KEYS = ("image_size", "channels", "n_classes")


def adopt_architecture(run_config: SimpleNamespace, ckpt_config: SimpleNamespace) -> SimpleNamespace:
    """``run_config`` with the network and data shape of the checkpoint it continues from.

    A forgetting config carries its own optimizer, EMA and schedule settings,
    but the UNet it loads is fixed by the checkpoint.
    """
    for key in ARCHITECTURE_KEYS:
        setattr(run_config.model, key, getattr(ckpt_config.model, key))
    for key in DATA_SHAPE_KEYS:
        setattr(run_config.data, key, getattr(ckpt_config.data, key))
    run_config.diffusion = ckpt_config.diffusion
    return run_config


@dataclass
class ForgetSpec(ForgetWeights):
    """What to forget and how: the flags of ``main_forget.py``."""

    mode: str
    label_to_forget: int


@dataclass
class ForgetPlan:
    """The closures and settings :func:`run_unlearning` needs."""

    forget_loss: Callable[[int], torch.Tensor]
    remain_loss: Callable[[int], torch.Tensor]
    schedule: str
    forget_mask: Callable[[], None]
    remain_mask: Callable[[], None]


def plan_forgetting(spec: ForgetSpec, unet: UNet2DModel, config: SimpleNamespace,
                    forget_batches: Optional[BatchSource],
                    remain_batches: BatchSource, mask: Optional[Dict[str, torch.Tensor]] = None,
                    sa_fisher: Optional[Mapping[str, torch.Tensor]] = None,
                    sharding: Optional[SampleSharding] = None) -> ForgetPlan:
    """Turn a :class:`ForgetSpec` into forget/remain losses and an update schedule.

    ``salun``/``ga``/``rl``: ``forget_alpha * L_forget`` and ``remain_alpha * L_remain`` in one
    joint step, the mask on the summed gradient (``ga``/``rl`` are SalUn's loop with that loss).
    ``sfron``: ``--method ron`` alternates a masked forget step (alpha cosine-decayed with
    ``--decay_forget_alpha``) and a remain step (masked too for the ``rl`` loss); ``joint`` sums.
    ``sa``: Selective Amnesia: the diffusion loss of uniform noise labelled with the forgotten
    class, plus ``gamma`` times that of replayed samples of the other classes and ``lmbda``
    times the EWC penalty at the pretrained weights.
    With ``--dual`` every mode alternates, so DualOptim's forget and retain states each see
    only their own objective's gradients.  ``sharding`` runs the network data-parallel
    (:mod:`common.distributed`).
    """
    sharding = sharding or SampleSharding()
    device = next(unet.parameters()).device
    abar = alphas_cumprod(config).to(device)
    n_iters = config.training.n_iters
    n_classes = config.data.n_classes
    train_eps = noise_predictor(unet, config.model.cond_drop_prob, sharding=sharding)
    masker = maybe_gradient_mask(unet, mask)

    if spec.mode == "sa":
        if sa_fisher is None:
            raise ValueError("Selective Amnesia needs the Fisher dictionary")
        plain_eps = noise_predictor(unet, 0.0, sharding=sharding)
        anchor = {name: p.detach().clone() for name, p in unet.named_parameters()}
        fisher = {name: value.to(device) for name, value in sa_fisher.items()}
        gamma, lmbda = config.training.gamma, config.training.lmbda
        shape = (config.data.channels, config.data.image_size, config.data.image_size)

        def forget_loss(step: int) -> torch.Tensor:
            n = config.training.batch_size
            x_forget = (torch.rand((n, *shape), device=device) - 0.5) * 2.0
            c_forget = torch.full((n,), spec.label_to_forget, dtype=torch.long, device=device)
            return diffusion_loss_on(plain_eps, x_forget, c_forget, abar)

        def remain_loss(step: int) -> torch.Tensor:
            x, c = remain_batches.next()
            penalty = sharding.replicated(ewc_penalty(unet, fisher, anchor))  # the weights', not the batch's
            return gamma * diffusion_loss_on(plain_eps, x, c, abar) + lmbda * penalty

        schedule = "joint"
        forget_mask = remain_mask = masker
    else:
        loss_kind = spec.mode if spec.mode in ("ga", "rl") else spec.unlearn_loss
        objective = FORGET_LOSSES.get(loss_kind)

        def forget_loss(step: int) -> torch.Tensor:
            x0, c = forget_batches.next()
            t = antithetic_timesteps(x0.shape[0], abar.shape[0], device)
            pseudo = pseudo_labels_for(c, spec.label_to_forget, n_classes)
            loss = objective(train_eps, x0, t, c, torch.randn_like(x0), abar, pseudo, config.training.gamma)
            return (spec.forget_weight(step, n_iters) if spec.mode == "sfron" else spec.forget_alpha) * loss

        def remain_loss(step: int) -> torch.Tensor:
            x0, c = remain_batches.next()
            return spec.remain_alpha * diffusion_loss_on(train_eps, x0, c, abar)

        if spec.mode == "sfron":
            schedule = "alternate" if spec.method == "ron" else "joint"
            forget_mask = masker
            remain_mask = masker if loss_kind == "rl" else (lambda: None)
        else:
            schedule, forget_mask, remain_mask = "joint", masker, masker
    return ForgetPlan(forget_loss, remain_loss, spec.schedule(schedule), forget_mask, remain_mask)


def forget_ddpm(spec: ForgetSpec, unet: UNet2DModel, config: SimpleNamespace, optimizer: DualOptim,
                plan: ForgetPlan, ema: Optional[EMA], logger: logging.Logger,
                on_snapshot: Callable[[int], None],
                sharding: Optional[SampleSharding] = None,
                snapshots: Optional[Snapshotter] = None, allow_nonfinite: bool = False) -> List[Dict[str, float]]:
    """Run the planned forgetting for ``training.n_iters`` steps (resumable with ``snapshots``)."""
    return run_unlearning(
        unet, optimizer, config.training.n_iters, plan.forget_loss, plan.remain_loss, schedule=plan.schedule,
        forget_mask=plan.forget_mask, remain_mask=plan.remain_mask, grad_clip=config.optim.grad_clip, ema=ema,
        log_freq=config.training.log_freq, on_snapshot=on_snapshot, snapshot_freq=config.training.snapshot_freq,
        log=logger.info, desc=f"forgetting ({spec.mode})", sharding=sharding, snapshots=snapshots,
        allow_nonfinite=allow_nonfinite)
