"""The forget/remain update loop shared by every diffusion unlearning method.

A method supplies two closures, ``forget_loss(step)`` and ``remain_loss(step)``,
each returning a scalar to minimise (already weighted by its alpha); this
module applies them to the model with one of two update schedules:

``alternate`` (SFR-on's ``--method ron``, and every run of a dual optimizer, ``--dual``)
    forget backward -> forget mask -> clip -> ``optimizer.forget_step()``, then
    remain backward -> remain mask -> clip -> ``optimizer.retain_step()``.
    With :class:`~dualoptim.optimizers.DualOptim` the two steps use separate
    optimizer states, which is the point of DualOptim.

``joint`` (SalUn, Selective Amnesia, ``--method joint``)
    one backward of ``forget + remain`` -> clip -> mask -> one step, as the
    research code does (it clips before masking in this schedule).

Under ``--amp`` (:class:`common.precision.MixedPrecision`) each loss closure runs under
autocast and the weights, optimizer states and EMA stay float32; float16 scales
each loss, unscales before clipping and skips an overflowed step.

With a :class:`~common.checkpointing.Snapshotter` the loop registers the model,
optimizer (both DualOptim states), EMA and the sharded forward generator,
continues from the last snapshot when resuming and offers one after every
step; the caller registers the data streams its loss closures read.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from common import tracking
from common.checkpointing import Snapshotter
from common.distributed import SampleSharding
from dualoptim.optimizers import DualOptim
from common.nonfinite import check_finite_loss
from common.precision import MixedPrecision
from common.progress import progress
from common.schedules import cosine_decay
from ImageGeneration.core.diffusion import EMA

LossFn = Callable[[int], torch.Tensor]
SCHEDULES = ("alternate", "joint")


@dataclass(kw_only=True)
class ForgetWeights:
    """The forgetting knobs every model shares: the forget loss, the update method and the alphas (the
    optimizer is :mod:`ImageGeneration.core.optim`'s)."""

    unlearn_loss: str = "rl"
    method: str = "ron"
    forget_alpha: float = 1.0
    decay_forget_alpha: bool = False
    remain_alpha: float = 1.0

    @classmethod
    def args_of(cls, args: argparse.Namespace) -> Dict[str, Any]:
        """The fields of this class from parsed flags, as keyword arguments."""
        return {f.name: getattr(args, f.name) for f in fields(ForgetWeights)}

    def forget_weight(self, step: int, n_iters: int) -> float:
        """``forget_alpha``, cosine-decayed over ``n_iters`` steps with ``decay_forget_alpha``."""
        return cosine_decay(self.forget_alpha, step, n_iters) if self.decay_forget_alpha else self.forget_alpha


def _clip(model: nn.Module, grad_clip: Optional[float], precision: MixedPrecision, stepped) -> None:
    """Clip the true (unscaled) gradients of the optimizer view ``stepped`` to ``grad_clip`` (0/None: none)."""
    if grad_clip:
        precision.unscale_(stepped)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


def run_unlearning(model: nn.Module, optimizer: DualOptim, n_iters: int, forget_loss: LossFn,
                   remain_loss: LossFn, schedule: str = "alternate",
                   forget_mask: Callable[[], None] = lambda: None,
                   remain_mask: Callable[[], None] = lambda: None,
                   grad_clip: Optional[float] = 1.0, ema: Optional[EMA] = None,
                   log_freq: int = 50, on_snapshot: Optional[Callable[[int], None]] = None,
                   snapshot_freq: int = 0, log: Callable[[str], None] = print,
                   desc: str = "unlearning",
                   sharding: Optional[SampleSharding] = None,
                   clip_remain: bool = True, snapshots: Optional[Snapshotter] = None,
                   allow_nonfinite: bool = False,
                   precision: Optional[MixedPrecision] = None) -> List[Dict[str, float]]:
    """Run ``n_iters`` unlearning steps; returns the per-step losses.

    ``forget_mask``/``remain_mask`` multiply the gradients in place (a
    :class:`~common.saliency.GradientMask` or a no-op); in the ``joint``
    schedule only ``forget_mask`` applies.  ``on_snapshot(step)`` is called
    every ``snapshot_freq`` steps and after the last one, before the resume
    snapshot of that step.  Under a multi-process ``sharding`` the gradients
    are summed over the processes after every backward.  ``clip_remain=False``
    clips only the forget step's gradients (the DiT research code clips neither
    its remain step nor its joint step).  A NaN/inf loss stops the run before its step
    (:func:`common.nonfinite.check_finite_loss`) unless ``allow_nonfinite``.  ``precision``: the
    ``--amp`` autocast and loss scaler (default: float32, every call the plain one).
    """
    remain_clip = grad_clip if clip_remain else None
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown update schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    sharding = sharding or SampleSharding()
    snapshots = (snapshots or Snapshotter(None)).register(
        model=model, optimizer=optimizer, forward_generator=sharding.forward_generator,
        **({"ema": ema} if ema is not None else {}))
    precision = precision or MixedPrecision(next(model.parameters()).device)
    if precision.scaler.is_enabled():  # float16 loss scale: part of the state a resumed run continues
        snapshots.register(grad_scaler=precision.scaler)
    loop = snapshots.restore() or {"step": 0, "history": []}
    history: List[Dict[str, float]] = loop["history"]
    forget_view, retain_view = optimizer.for_objective("forget"), optimizer.for_objective("retain")

    def check(loss: torch.Tensor, objective: str, stepped_as: str, step: int) -> None:
        """``objective``'s loss, before the ``stepped_as`` step that applies it."""
        check_finite_loss(loss, step + 1, objective, optimizer.lr(stepped_as), allow_nonfinite)

    model.train()
    for step in progress(range(loop["step"], n_iters), desc=desc, total=n_iters, initial=loop["step"],
                     dynamic_ncols=True, disable=not sharding.is_main):
        if schedule == "alternate":
            optimizer.zero_grad()
            with precision.autocast():
                f_loss = forget_loss(step)
            check(f_loss, "forget", "forget", step)
            precision.scale(f_loss).backward()
            sharding.sync_gradients(model)
            forget_mask()
            _clip(model, grad_clip, precision, forget_view)
            precision.step(forget_view)
            tracking.current().step({"forget": f_loss}, optimizer)
            optimizer.zero_grad()
            with precision.autocast():
                r_loss = remain_loss(step)
            check(r_loss, "retain", "retain", step)
            precision.scale(r_loss).backward()
            sharding.sync_gradients(model)
            remain_mask()
            _clip(model, remain_clip, precision, retain_view)
            precision.step(retain_view)
            tracking.current().step({"retain": r_loss}, optimizer)
        else:
            optimizer.zero_grad()
            with precision.autocast():
                f_loss = forget_loss(step)
                r_loss = remain_loss(step)
            check(f_loss, "forget", "retain", step)  # the joint step is the retain step
            check(r_loss, "retain", "retain", step)
            precision.scale(f_loss + r_loss).backward()
            sharding.sync_gradients(model)
            _clip(model, remain_clip, precision, retain_view)
            forget_mask()
            precision.step(retain_view)
            tracking.current().step({"forget": f_loss, "retain": r_loss}, optimizer)
        if ema is not None:
            ema.update(model)
        record = {"step": step, "forget_loss": float(f_loss.detach()), "remain_loss": float(r_loss.detach())}
        history.append(record)
        if log_freq and (step + 1) % log_freq == 0:
            log(f"step:{step:04d}, forget L:{record['forget_loss']:.4f}, remain L:{record['remain_loss']:.4f}")
        if on_snapshot is not None and ((snapshot_freq and (step + 1) % snapshot_freq == 0) or step + 1 == n_iters):
            on_snapshot(step)
        snapshots.step(step + 1, n_iters, step=step + 1, history=history)
    return history
