"""The epoch driver and the one training loop shared by every iterative method.

The research code wraps each method's per-epoch function in a decorator that
builds the optimizer(s) for ``--optim``, attaches a learning-rate scheduler,
runs ``--unlearn_epochs`` epochs and saves ``checkpoint_{epoch}.pt`` after
each.  :func:`run_epochs` is that driver; a method supplies only an epoch
function, which trains through :meth:`UnlearnRun.train_on` (one loader, one
loss, one objective) so no method carries its own copy of the batch loop.

Resuming
--------
With ``--save_dir`` the driver writes a resume snapshot
(:class:`common.checkpointing.Snapshotter`) at the end of every epoch and, with
``--save_every N``, after every ``N`` optimizer steps.  The loop position is
``(epoch, pass, batch)``: a pass is one :meth:`UnlearnRun.train_on` call, the
loader of pass ``(epoch, k)`` is put at ``epoch``'s data order
(:func:`common.checkpointing.position_loader`), and on ``--resume`` the passes
an interrupted epoch had finished return their recorded result without
running again.

Objectives and optimizers
-------------------------
The optimizer is the ``--optim`` recipe of :mod:`dualoptim.recipes`: an
object with the :class:`~dualoptim.optim.base.TwoObjectiveOptimizer` interface (``SharedOptim``
for ``--optim sgd|adam``), whose ``is_dual`` says whether it keeps one state
per objective.  A forget-objective update goes through ``forget_step()`` and a
retain-objective update through ``retain_step()``.
The research code's *main* optimizer (the one it schedules, logs and, for
single-objective methods such as FT, GA and retrain, steps on every batch)
is the retain-side optimizer here.

Mixed precision and memory format
---------------------------------
``--amp`` runs every training forward pass (model and loss) under
``torch.autocast`` in ``--amp_dtype`` (:class:`common.precision.MixedPrecision`,
the one mixed-precision helper of every modality); the weights and every
optimizer state stay float32.  float16 adds a ``torch.amp.GradScaler``
that scales each objective's loss, unscales before clipping and skips a step
whose gradients overflowed, for either of DualOptim's optimizers.
``--channels_last`` converts the model and its input batches to channels-last.
Both are off by default, and then every step is exactly the plain one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR

from common.checkpointing import ProcessGroup, Snapshotter, position_loader
from common.distributed import sharding_of
from common.progress import progress
from dualoptim.optim import SharedOptim, TwoObjectiveOptimizer
from common.errors import UsageError
from common.io import atomic_torch_save
from common.precision import MixedPrecision, amp_precision
from dualoptim.recipes import IMAGE_FLAG, RecipeSettings, build_recipe
from common import tracking
from common.nonfinite import check_finite_loss
from common.saliency import Mask, maybe_gradient_mask
from common.sam import SAM, sam_of
from ImageClassification.config import UnlearnConfig

#: ``(images, targets) -> (loss, logits)`` for one batch already on the device.
BatchLoss = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def parse_milestones(decreasing_lr: Union[str, Sequence[int]]) -> List[int]:
    """``--decreasing_lr "91,136"`` (or a list) as a list of epoch milestones."""
    if isinstance(decreasing_lr, str):
        try:
            return [int(part) for part in decreasing_lr.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--decreasing_lr: expected comma-separated epochs such as 91,136, "
                             f"got {decreasing_lr!r}") from None
    return [int(epoch) for epoch in decreasing_lr]


def build_unlearn_optimizer(model: nn.Module, config: UnlearnConfig,
                            shared_lrs: Tuple[float, float],
                            adam_betas: Tuple[float, float] = (0.9, 0.999)) -> TwoObjectiveOptimizer:
    """The ``--optim`` recipe of a run (:mod:`dualoptim.recipes`).

    A dual recipe's forget optimizer runs at ``--unlearn_lr`` and its retain
    optimizer at ``--retain_lr``; a single optimizer (``--optim sgd|adam``)
    steps forget and retain batches at ``shared_lrs`` (the method's choice,
    see :class:`~dualoptim.recipes.RecipeSettings`), ``adam_betas`` are
    those of the single ``adam`` optimizer.
    """
    settings = RecipeSettings(forget_lr=config.unlearn_lr, retain_lr=config.retain_lr, shared_lrs=shared_lrs,
                              momentum=config.momentum, weight_decay=config.weight_decay, adam_betas=adam_betas)
    return build_recipe(IMAGE_FLAG, config.optim, model.parameters(), settings)


def sam_sgd(model: nn.Module, config: UnlearnConfig, lr: float) -> SharedOptim:
    """SAM around SGD(``lr``, ``--momentum``, ``--weight_decay``), rho 0.05: the research code's
    ``main_train.py --optim sam`` and ``retrain_sam`` optimizer, one state for every step."""
    if config.amp and config.amp_dtype == "float16":
        raise UsageError("--amp_dtype float16: not supported with SAM (an overflowed first step would move "
                         "the weights); use --amp_dtype bfloat16")
    optimizer = SAM(model.parameters(), torch.optim.SGD, lr=lr, momentum=config.momentum,
                    weight_decay=config.weight_decay)
    return SharedOptim(optimizer, lr, lr)


def make_epoch_scheduler(optimizer: Optimizer, config: UnlearnConfig) -> LRScheduler:
    """Per-epoch scheduler of the research code.

    ``MultiStepLR`` on ``--decreasing_lr`` with gamma 0.1, except for
    ``retrain`` and ``main_train.py`` (``unlearn == "train"``) of an
    ``--imagenet_arch`` model: linear warmup over ``--warmup`` epochs, then
    cosine decay to zero at ``--unlearn_epochs``; ``main_train.py`` with an
    ``--optim`` other than ``sgd``/``sam``: cosine annealing to zero; and
    ``main_train.py --periodic_cosine_lr``: the research code's per-epoch lr
    overwrite (:func:`periodic_cosine`).
    """
    if config.periodic_cosine_lr:
        return LambdaLR(optimizer, lr_lambda=periodic_cosine)
    if config.imagenet_arch and config.unlearn in ("retrain", "train"):
        warmup, total = config.warmup, config.unlearn_epochs

        def warmup_cosine(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(total - warmup, 1)))

        return LambdaLR(optimizer, lr_lambda=warmup_cosine)
    if config.unlearn == "train" and config.optim not in ("sgd", "sam"):
        return CosineAnnealingLR(optimizer, T_max=config.unlearn_epochs, eta_min=0.0)
    return MultiStepLR(optimizer, milestones=parse_milestones(config.decreasing_lr), gamma=0.1)


def periodic_cosine(epoch: int) -> float:
    """Factor on ``--lr`` in epoch ``epoch`` of the research code's ``main_train.py`` (its lines 137-139).

    It never steps its scheduler; at the start of every epoch it sets the lr to
    ``lr * (1 + cos(pi * (epoch - 10) / 10)) / 2``: 0 in epoch 0, ``lr`` in epoch 10,
    0 again in epoch 20, a 20-epoch cosine cycle.  The paper's original models were trained so.
    """
    return (1.0 + math.cos(math.pi * (epoch - 10) / 10)) / 2.0


def warmup_lr(optimizer: Optimizer, epoch: int, step: int, steps_per_epoch: int, warmup: int,
              lr: float) -> None:
    """Linear per-step warmup of the research code over the first ``warmup`` (``--warmup``) epochs.

    Sets every group's learning rate to ``lr * progress`` (capped at ``lr``).
    As in the research code the warmup targets ``--lr`` (the training learning
    rate), not ``--unlearn_lr``, and the value it writes persists until the
    scheduler next changes the learning rate.
    """
    total_steps = warmup * steps_per_epoch
    lr = min(lr * (epoch * steps_per_epoch + step) / total_steps, lr)
    for group in optimizer.param_groups:
        group["lr"] = lr


class AverageMeter:
    """Running value and size-weighted average of a logged quantity."""

    def __init__(self) -> None:
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def run_snapshots(config: UnlearnConfig, model: nn.Module, every: Optional[int] = None) -> Snapshotter:
    """The resume snapshots of a run: in ``--save_dir`` (none without it), every ``--save_every`` steps.

    Every process of ``model``'s sharding restores its own RNG state; only the main one writes.
    """
    return Snapshotter(config.save_dir, every=config.save_every if every is None else every,
                       resume=config.resume, config=config.record(),
                       processes=ProcessGroup.of(sharding_of(model).accelerator))


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return (logits.argmax(dim=1) == target).float().mean().item() * 100.0


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` under ``--channels_last``, else ``torch.preserve_format`` (no conversion)."""
    return torch.channels_last if channels_last else torch.preserve_format


class UnlearnRun:
    """What a method's epoch function works with: model, optimizer, flags, current epoch.

    Args:
        model: the model being unlearned (updated in place).
        optimizer: the run's :class:`~dualoptim.optim.base.TwoObjectiveOptimizer`.
        config: the run's settings (``print_freq``, ``warmup``, ``lr``, ...).
        device: where batches are moved.
        mask: optional saliency mask; gradients are multiplied by it before
            every masked update (one foreach kernel, see
            :class:`common.saliency.GradientMask`).
        snapshots: where :meth:`train_on` saves its position every
            ``--save_every`` optimizer steps (default: nowhere).
    """

    def __init__(self, model: nn.Module, optimizer: TwoObjectiveOptimizer, config: UnlearnConfig,
                 device: torch.device, mask: Optional[Mask] = None,
                 snapshots: Optional[Snapshotter] = None) -> None:
        self.memory_format = memory_format(config.channels_last)  # of the batches; the model is built in it
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.device = device
        self.precision = MixedPrecision(device, amp_precision(config.amp, config.amp_dtype), "--amp_dtype")
        # loss scaling only for float16; a disabled scaler passes every call straight through
        self.scaler = self.precision.scaler
        self.apply_mask = maybe_gradient_mask(model, mask)
        self.snapshots = snapshots or Snapshotter(None)
        if self.scaler.is_enabled():  # float16 loss scale: part of the state a resumed run continues
            self.snapshots.register(grad_scaler=self.scaler)
        self.epoch = 0
        # Under ``accelerate launch``: each backward covers this process's slice of the batch
        # (common.distributed.shard_forward); the slices' gradients are summed before each step.
        self.sharding = sharding_of(model)
        self.steps = 0                  # optimizer steps taken, over every pass and epoch
        self.epoch_results: list = []   # what the epoch function returned, per finished epoch
        self._pass_results: list = []   # what this epoch's finished passes returned
        self._pass_calls = 0            # train_on calls so far in this epoch
        self._partial: Optional[dict] = None  # where a resumed snapshot interrupted a pass
        self.loss: Optional[torch.Tensor] = None  # the last loss checked before a step

    def autocast(self):
        """The ``--amp`` context of a training forward pass (a no-op without ``--amp``)."""
        return self.precision.autocast()

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return images.to(self.device, memory_format=self.memory_format), targets.to(self.device)

    def position(self, epoch: int, partial: Optional[dict] = None) -> dict:
        """The loop values of a snapshot taken now (``partial``: the unfinished pass)."""
        return {"epoch": epoch, "steps": self.steps, "epoch_results": self.epoch_results,
                "pass_results": self._pass_results, "partial": partial}

    def resume(self) -> int:
        """Restore the last snapshot when resuming; returns the epoch to start at."""
        loop = self.snapshots.restore()
        if loop is None:
            return 0
        self.steps, self.epoch_results = loop["steps"], loop["epoch_results"]
        self._pass_results, self._partial = loop["pass_results"], loop["partial"]
        return loop["epoch"]

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._pass_calls = 0

    def end_epoch(self, result: object) -> None:
        """Record the epoch's result and snapshot the start of the next epoch."""
        self.epoch_results.append(result)
        self._pass_results, self._partial = [], None
        self.snapshots.save(**self.position(self.epoch + 1))

    def warmup(self, step: int, steps_per_epoch: int) -> None:
        """Warm the main (retain-side) optimizer up while ``epoch < --warmup``."""
        if self.epoch < self.config.warmup:
            warmup_lr(self.optimizer.retain_optimizer, self.epoch, step, steps_per_epoch, self.config.warmup,
                      self.config.lr)

    def update(self, loss: torch.Tensor, objective: str, masked: bool = True,
               max_grad_norm: Optional[float] = None,
               recompute: Optional[Callable[[], torch.Tensor]] = None) -> None:
        """One step on ``loss``: zero grads, backward (summed over processes), mask, clip, step ``objective``
        (``recompute``: see :meth:`step`)."""
        self.check_loss(loss, objective)
        self.optimizer.zero_grad()
        self.backward(loss)
        if masked:
            self.apply_mask()
        self.step(objective, max_grad_norm, recompute, masked)

    def check_loss(self, loss: torch.Tensor, objective: str) -> None:
        """Stop on a NaN/inf loss before step ``self.steps + 1`` of ``objective`` (unless ``--allow_nonfinite``)."""
        check_finite_loss(loss, self.steps + 1, objective, self.optimizer.lr(objective),
                          self.config.allow_nonfinite)
        self.loss = loss.detach()  # what the step after it reports (common.tracking)

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.scale(loss).backward()

    def step(self, objective: str, max_grad_norm: Optional[float] = None,
             recompute: Optional[Callable[[], torch.Tensor]] = None, masked: bool = True) -> None:
        """Step ``objective`` on the current gradients, summed over the processes of a launch first and
        clipped to ``max_grad_norm`` (true scale under AMP).  Masking commutes with the sum, so a mask
        applied to the local gradients is the mask of the summed ones.

        When ``objective``'s optimizer is :class:`common.sam.SAM`, these gradients move the weights to
        SAM's worst case, ``recompute()`` gives the batch's loss there, and its (masked) gradients make
        the step, as the research code's trainer does.
        """
        self.sharding.sync_gradients(self.model)
        sam = sam_of(self.optimizer, objective)
        if sam is not None:
            if recompute is None:
                raise ValueError("a SAM step needs recompute, the batch's loss at the perturbed weights")
            sam.first_step()
            self.optimizer.zero_grad()
            with self.autocast():
                perturbed = recompute()
            self.backward(perturbed)
            if masked:
                self.apply_mask()
            self.sharding.sync_gradients(self.model)
        optimizer = self.optimizer.for_objective(objective)
        if max_grad_norm is not None:
            self.precision.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=max_grad_norm)
        self.precision.step(optimizer)
        tracking.current().step({objective: self.loss}, self.optimizer)

    def train_on(self, loader: Iterable, batch_loss: BatchLoss, objective: str, desc: str,
                 warmup_every_step: bool = False, accum_steps: int = 1) -> float:
        """Train one pass over ``loader``; returns the average top-1 accuracy (true labels).

        Each batch is moved to the device, ``batch_loss(images, targets)``
        gives the loss, and the ``objective`` optimizer steps (every
        ``accum_steps`` batches and at the end of the pass, with the loss
        divided by ``accum_steps``, as the research code's trainer does).
        Every ``--print_freq`` batches a research-code style line is printed.
        After every optimizer step the position is offered to the snapshots.
        """
        index = self._pass_calls
        self._pass_calls += 1
        if index < len(self._pass_results):  # finished before the snapshot this run resumed from
            return self._pass_results[index]
        model, config = self.model, self.config
        model.train()
        losses, top1 = AverageMeter(), AverageMeter()
        total, first = len(loader), 0
        if self._partial is not None:
            first = self._partial["batch"]
            losses.load_state_dict(self._partial["losses"])
            top1.load_state_dict(self._partial["top1"])
            self._partial = None
        position_loader(loader, self.epoch, first)
        start = time.time()
        bar = progress(loader, desc=f"epoch {self.epoch} {desc}", total=total, initial=first, leave=False,
                       dynamic_ncols=True, disable=not self.sharding.is_main)
        for i, (images, targets) in enumerate(bar, start=first):
            if warmup_every_step:
                self.warmup(i + 1, total)
            images, targets = self.to_device(images, targets)
            with self.autocast():
                loss, logits = batch_loss(images, targets)
            stepped = accum_steps == 1 or (i + 1) % accum_steps == 0 or i == total - 1
            # SAM's second pass: the last batch's undivided loss, as the research code's trainer
            recompute = lambda: batch_loss(images, targets)[0]  # noqa: E731
            if accum_steps == 1:
                self.update(loss, objective, recompute=recompute)
            else:
                if i % accum_steps == 0:
                    self.optimizer.zero_grad()
                self.check_loss(loss, objective)
                self.backward(loss / accum_steps)
                self.apply_mask()
                if stepped:
                    self.step(objective, recompute=recompute)
            losses.update(loss.item(), images.size(0))
            top1.update(top1_accuracy(logits.detach(), targets), images.size(0))
            if stepped:  # a snapshot between accumulated batches would lose their gradients
                self.steps += 1
                partial = {"batch": i + 1, "losses": losses.state_dict(), "top1": top1.state_dict()}
                self.snapshots.step(self.steps, **self.position(self.epoch, partial))
            bar.set_postfix(loss=f"{losses.avg:.4f}", acc=f"{top1.avg:.2f}")
            if (i + 1) % config.print_freq == 0:
                print(f"Epoch: [{self.epoch}][{i}/{total}]\tLoss {losses.val:.4f} ({losses.avg:.4f})\t"
                      f"Accuracy {top1.val:.3f} ({top1.avg:.3f})\tTime {time.time() - start:.2f}")
                start = time.time()
        self._pass_results.append(top1.avg)
        return top1.avg


def cross_entropy_loss(model: nn.Module, sign: float = 1.0) -> BatchLoss:
    """``sign * CE(model(x), y)``: the retain loss (``+1``) or gradient ascent (``-1``)."""
    def batch_loss(images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        return sign * F.cross_entropy(logits, targets), logits
    return batch_loss


def run_epochs(model: nn.Module, config: UnlearnConfig, device: torch.device,
               mask: Optional[Mask], epoch_fn: Callable[[UnlearnRun], object],
               lr_switching: bool = True, schedule_forget: bool = True,
               epoch_checkpoints: bool = True, optimizer: Optional[TwoObjectiveOptimizer] = None) -> UnlearnRun:
    """Run ``epoch_fn`` for ``--unlearn_epochs`` epochs with the ``--optim`` optimizer.

    Per epoch: log ``Epoch #e, Learning rate: lr`` (the main optimizer's),
    call ``epoch_fn(run)``, step the schedulers, save the model's
    ``state_dict`` atomically as ``<save_dir>/checkpoint_{e+1}.pt``, then a
    resume snapshot (see the module docstring); with ``--resume`` the run
    continues from the last snapshot in ``--save_dir``.  Checkpoints and the
    model returned hold the optimizer's weights to evaluate
    (:meth:`~dualoptim.optim.base.TwoObjectiveOptimizer.eval_mode`: a
    schedule-free forget optimizer's average), snapshots the weights to train on.

    Args:
        lr_switching: whether the method, run with one optimizer (``--optim
            sgd|adam``), steps forget batches at ``--unlearn_lr`` and retain
            batches at ``--retain_lr`` as the research code's RL and SCRUB do.
            Methods that never switch (FT, GA, retrain, boundary_*) run the
            single optimizer at ``--unlearn_lr`` throughout; under ``dual*``
            their retain-side optimizer runs at ``--retain_lr``, exactly as in
            the research code.
        schedule_forget: attach a scheduler to a separate forget optimizer
            too (the research code does for RL, not for SCRUB; methods that
            never step the forget optimizer pass ``False``).
        epoch_checkpoints: write the ``checkpoint_{e}.pt`` files.
        optimizer: the run's optimizer when it is not the ``--optim`` one
            (``main_train.py``'s, ``retrain_sam``'s SAM).

    Returns:
        The run: its ``optimizer`` and the epoch function's results per epoch
        (``epoch_results``).
    """
    optimizer = optimizer or build_unlearn_optimizer(
        model, config, (config.unlearn_lr, config.retain_lr if lr_switching else config.unlearn_lr))
    scheduled = [optimizer.retain_optimizer]
    if schedule_forget and optimizer.forget_optimizer is not optimizer.retain_optimizer:
        scheduled.append(optimizer.forget_optimizer)
    schedulers = [make_epoch_scheduler(opt, config) for opt in scheduled]
    snapshots = run_snapshots(config, model).register(
        model=model, optimizer=optimizer, **{f"scheduler{i}": s for i, s in enumerate(schedulers)})
    run = UnlearnRun(model, optimizer, config, device, mask, snapshots)
    save_dir = Path(config.save_dir) if config.save_dir and epoch_checkpoints else None
    first_epoch = run.resume()
    for epoch in progress(range(first_epoch, config.unlearn_epochs), desc=f"{config.unlearn} ({config.optim})",
                      total=config.unlearn_epochs, initial=first_epoch, dynamic_ncols=True,
                      disable=not run.sharding.is_main):
        run.begin_epoch(epoch)
        start = time.time()
        print(f"Epoch #{epoch}, Learning rate: {optimizer.retain_optimizer.param_groups[0]['lr']}")
        result = epoch_fn(run)
        for scheduler in schedulers:
            scheduler.step()
        if save_dir is not None and run.sharding.is_main:
            with optimizer.evaluation_weights():  # a schedule-free optimizer's average, not its train point
                atomic_torch_save(model.state_dict(), save_dir / f"checkpoint_{epoch + 1}.pt")
        run.end_epoch(result)
        print(f"one epoch duration:{time.time() - start}")
    optimizer.eval_mode()  # what the caller evaluates and saves (the snapshots above hold the train weights)
    return run
