"""Training of the conditional DDPM (``main_train.py``); forgetting is in :mod:`ImageGeneration.DDPM.unlearn`."""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Callable, Iterator, List, Optional

import torch

from common import tracking
from common.checkpointing import Snapshotter
from common.distributed import SampleSharding
from common.nonfinite import check_finite_loss
from common.progress import progress
from ImageGeneration.core.batches import Batch, BatchStream
from ImageGeneration.core.diffusion import EMA, antithetic_timesteps, noise_prediction_loss
from ImageGeneration.DDPM.data import random_flip
from ImageGeneration.DDPM.config import alphas_cumprod
from ImageGeneration.DDPM.networks import DDPMNetwork, data_transform, noise_predictor
from ImageGeneration.DDPM.optimizers import build_optimizer


def ddpm_batches(batches: Iterator[Batch], device: torch.device, flip: bool) -> BatchStream:
    """Endless ``(x0, c)`` batches in model space (``[-1, 1]``, optional random flips) on ``device``."""
    def prepare(x: torch.Tensor, c: torch.Tensor) -> Batch:
        x = x.to(device)
        if flip:
            x = random_flip(x)
        return data_transform(x), c.to(device)

    return BatchStream(batches, prepare)


def diffusion_loss_on(eps_fn, x0: torch.Tensor, c: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The simple loss of one batch with antithetic timesteps and fresh noise."""
    t = antithetic_timesteps(x0.shape[0], abar.shape[0], x0.device)
    return noise_prediction_loss(eps_fn, x0, t, c, torch.randn_like(x0), abar)


def train_ddpm(unet: DDPMNetwork, config: SimpleNamespace, batches: BatchStream, logger: logging.Logger,
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
    for step in progress(range(loop["step"], t_cfg.n_iters), desc="training", total=t_cfg.n_iters,
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
        tracking.current().step({"train": losses[-1]}, optimizer, step=step + 1)
        if (step + 1) % t_cfg.log_freq == 0:
            logger.info(f"step: {step}, loss: {losses[-1]}")
        if (step + 1) % t_cfg.snapshot_freq == 0 or step + 1 == t_cfg.n_iters:
            on_snapshot(step, optimizer, ema)
        snapshots.step(step + 1, t_cfg.n_iters, step=step + 1, losses=losses)
    return losses
