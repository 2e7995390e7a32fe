"""Fine-tuning baselines: FT, FT with an l1 penalty (l1-sparse), gradient ascent, retrain (and with SAM).

All four optimise a single objective with the run's main optimizer (the
retain-side one; see :mod:`.engine`), exactly as the research code does:
under ``--optim sgd|adam`` it runs at ``--unlearn_lr``, under ``dual*`` it is
the retain optimizer at ``--retain_lr``.  This holds for GA too, whose
ascent steps on forget batches go through that main optimizer in the
research code.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from common.distributed import sharding_of
from dualoptim.optim import TwoObjectiveOptimizer
from common.saliency import Mask

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders
from .engine import UnlearnRun, run_epochs, sam_sgd
from .registry import UNLEARN_METHODS


def l1_norm(model: nn.Module) -> torch.Tensor:
    """``||theta||_1`` over all parameters (differentiable)."""
    return torch.stack([param.abs().sum() for param in model.parameters()]).sum()


def l1_weight(config: UnlearnConfig, epoch: int) -> float:
    """l1 weight of ``epoch``: ``--alpha`` decayed linearly to 0 over the first
    ``--unlearn_epochs - --no-l1-epochs`` epochs, 0 afterwards."""
    l1_epochs = config.unlearn_epochs - config.no_l1_epochs
    if epoch < l1_epochs:
        return config.alpha * (1 - epoch / l1_epochs)
    return 0.0


def penalised_loss(model: nn.Module, sign: float, l1: float):
    """``sign * CE + l1 * ||theta||_1`` for one batch."""
    def batch_loss(images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        loss = sign * F.cross_entropy(logits, targets)
        if l1:  # a term of the weights alone: every process adds it, its gradient must count once
            loss = loss + l1 * sharding_of(model).replicated(l1_norm(model))
        return loss, logits
    return batch_loss


def _single_objective(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                      mask: Optional[Mask], device: torch.device, on_forget: bool, sign: float,
                      l1_schedule=None, accum_steps: int = 1, optimizer: Optional[TwoObjectiveOptimizer] = None,
                      before_epoch: Optional[Callable[[UnlearnRun], None]] = None,
                      after_epoch: Optional[Callable[[UnlearnRun], None]] = None) -> None:
    """Train ``sign * CE (+ l1)`` on the forget or the retain loader with the main optimizer
    (``optimizer``, or the ``--optim`` one).

    ``before_epoch(run)`` / ``after_epoch(run)`` run around each epoch's pass
    (the pruning methods prune there).
    """
    loader, name = (loaders.forget_loader, "forget") if on_forget else (loaders.retain_loader, "retain")

    def epoch_fn(run: UnlearnRun) -> None:
        if before_epoch:
            before_epoch(run)
        l1 = l1_schedule(run.epoch) if l1_schedule else 0.0
        run.train_on(loader, penalised_loss(model, sign, l1), "retain", name,
                     warmup_every_step=True, accum_steps=accum_steps)
        if after_epoch:
            after_epoch(run)

    run_epochs(model, config, device, mask, epoch_fn, lr_switching=False, schedule_forget=False,
               optimizer=optimizer)


@UNLEARN_METHODS.register("FT")
def FT(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
       mask: Optional[Mask], device: torch.device) -> None:
    """Fine-tune on the retain set (catastrophic forgetting of the forget set)."""
    _single_objective(loaders, model, config, mask, device, on_forget=False, sign=1.0)


@UNLEARN_METHODS.register("FT_l1")
def FT_l1(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
          mask: Optional[Mask], device: torch.device) -> None:
    """Fine-tune on the retain set with a decaying l1 penalty (Jia et al., 2023).

    The research code's ``FT_l1`` cannot run (its epoch function does not
    accept the ``optimizer_ul`` argument its driver passes); this is the
    intended method.
    """
    _single_objective(loaders, model, config, mask, device, on_forget=False, sign=1.0,
                      l1_schedule=lambda epoch: l1_weight(config, epoch))


def sparsity(model: nn.Module) -> float:
    """Percentage of exactly-zero parameters."""
    total = sum(param.numel() for param in model.parameters())
    zeros = sum(int((param == 0).sum()) for param in model.parameters())
    return 100.0 * zeros / total


@UNLEARN_METHODS.register("FT_prune", "l1-sparse")
def FT_prune(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
             mask: Optional[Mask], device: torch.device) -> None:
    """l1-sparse unlearning: ``FT_l1`` followed by a sparsity report, as in SalUn's ``FT_prune``."""
    FT_l1(loaders, model, config, mask, device)
    print(f"* remaining weight = {100.0 - sparsity(model):.3f}%")


@UNLEARN_METHODS.register("GA")
def GA(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
       mask: Optional[Mask], device: torch.device) -> None:
    """Gradient ascent on the forget set: minimise ``-CE`` on forget batches."""
    _single_objective(loaders, model, config, mask, device, on_forget=True, sign=-1.0)


@UNLEARN_METHODS.register("GA_l1")
def GA_l1(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
          mask: Optional[Mask], device: torch.device) -> None:
    """Gradient ascent with a constant ``--alpha`` l1 penalty."""
    _single_objective(loaders, model, config, mask, device, on_forget=True, sign=-1.0,
                      l1_schedule=lambda epoch: config.alpha)


@UNLEARN_METHODS.register("retrain")
def retrain(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
            mask: Optional[Mask], device: torch.device) -> None:
    """Retrain on the retain set: the exact-unlearning reference.

    It trains the model it is given; the pipeline gives it the architecture as
    constructed (its own initialisation, seeded by ``--train_seed``, no
    ``--model_path``), as the research code does.  ``--accum_steps`` batches
    are accumulated per step, as in the research code's trainer.
    """
    _single_objective(loaders, model, config, mask, device, on_forget=False, sign=1.0,
                      accum_steps=config.accum_steps)


@UNLEARN_METHODS.register("retrain_sam")
def retrain_sam(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                mask: Optional[Mask], device: torch.device) -> None:
    """``retrain`` with SAM around SGD at ``--unlearn_lr`` (:mod:`common.sam`), whatever ``--optim`` says,
    on MultiStepLR, as the research code's ``retrain_sam``."""
    _single_objective(loaders, model, config, mask, device, on_forget=False, sign=1.0,
                      accum_steps=config.accum_steps,
                      optimizer=sam_sgd(model, config, config.unlearn_lr))


@UNLEARN_METHODS.register("raw")
def raw(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
        mask: Optional[Mask], device: torch.device) -> None:
    """No unlearning: evaluate the original model as it is."""
