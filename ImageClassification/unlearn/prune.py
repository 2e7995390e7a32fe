"""Unlearning with pruning: GA_prune (iterative magnitude pruning), GA_prune_bi and FT_prune_bi.

All three prune the convolution weights globally (``--rate``, smallest
``|w|`` or at random with ``--random_prune``) and keep the pruned weights at
zero for the rest of the run (:class:`~.projections.PrunedConvs`).  Their
training is :mod:`.finetune`'s single-objective loop.

* ``GA_prune`` / ``GA_prune_bi`` -- as the research code, gradient ascent on
  the forget set with its own SGD (``--lr``, ``--momentum``,
  ``--weight_decay``, MultiStepLR on ``--decreasing_lr``) for ``--epochs``
  epochs, whatever ``--optim``, ``--unlearn_lr`` and ``--unlearn_epochs`` say.
  ``GA_prune`` runs ``--pruning_times`` states (train, prune ``--rate`` of the
  remaining weights, rewind the unpruned weights to their values at the start
  of epoch ``--rewind_epoch`` of the first state); ``GA_prune_bi`` prunes
  ``--rate`` of the remaining weights after every epoch.
* ``FT_prune_bi`` -- FT under ``--optim`` for ``--unlearn_epochs`` epochs,
  pruning every second epoch counted back from the end so that ``--rate`` of
  the weights are pruned in total.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from common.errors import UsageError
from common.saliency import Mask
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders

from .engine import UnlearnRun, parse_milestones
from .finetune import _single_objective
from .projections import PrunedConvs, after_each_step, prune_rate_per_step
from .registry import UNLEARN_METHODS

#: FT_prune_bi prunes every this many epochs (the research code's ``prune_step``).
PRUNE_STEP = 2


class KeepPruned:
    """``before_epoch`` hook: from a run's first epoch on, its pruned weights stay zero after every step.

    The masks are read from the weights when the run starts (after a resume
    restored them), and :meth:`prune` extends them.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.pruned = PrunedConvs(model)
        self._run: Optional[UnlearnRun] = None

    def __call__(self, run: UnlearnRun) -> None:
        if run is not self._run:
            self._run, self.pruned = run, PrunedConvs(self.model)
            after_each_step(run.optimizer, self.pruned.apply)

    def prune(self, rate: float, random: bool) -> None:
        print("random pruning" if random else "L1 pruning")
        self.pruned.prune(rate, random)
        self.pruned.report()


def ga_prune_config(config: UnlearnConfig, **overrides) -> UnlearnConfig:
    """The research code's GA pruning loop: plain SGD at ``--lr`` for ``--epochs`` epochs."""
    return config.replace(**{"optim": "sgd", "unlearn_lr": config.lr, "retain_lr": config.lr,
                             "unlearn_epochs": config.epochs, **overrides})


@UNLEARN_METHODS.register("GA_prune")
def GA_prune(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
             mask: Optional[Mask], device: torch.device) -> None:
    """Iterative magnitude pruning of a gradient-ascent model (lottery-ticket style).

    For each of ``--pruning_times`` states: ``--epochs`` epochs of GA, prune
    ``--rate`` of the remaining convolution weights, and (except after the
    last state) rewind the weights to the rewind point with the new mask and
    a fresh optimizer whose schedule starts at epoch ``--rewind_epoch``.
    ``--prune_type`` ``rewind_lt`` rewinds to the start of epoch
    ``--rewind_epoch`` of the first state; ``lt`` and ``pt`` to the model as
    it was given.  Only the last state writes per-epoch checkpoints and
    resume snapshots; a resumed run recomputes the earlier states.
    """
    rewind_epoch = config.rewind_epoch if config.prune_type == "rewind_lt" else 0
    if config.pruning_times > 1 and rewind_epoch >= config.epochs:
        raise UsageError(f"--rewind_epoch: must be below --epochs ({config.epochs}), got {rewind_epoch}")
    rewind_to = {"weights": copy.deepcopy(model.state_dict())}
    keep = KeepPruned(model)

    def before_epoch(run: UnlearnRun) -> None:
        keep(run)
        if state == 0 and run.epoch == rewind_epoch:
            rewind_to["weights"] = copy.deepcopy(model.state_dict())

    print("#" * 40 + " Start Standard Training Iterative Pruning " + "#" * 40)
    milestones = parse_milestones(config.decreasing_lr)
    for state in range(config.pruning_times):
        last = state == config.pruning_times - 1
        print("*" * 42 + f"\npruning state {state}\n" + "*" * 42)
        overrides = {"save_dir": config.save_dir if last else None}
        if state > 0:  # learning-rate rewinding: the schedule continues from epoch rewind_epoch
            overrides["unlearn_lr"] = config.lr * 0.1 ** sum(m <= rewind_epoch for m in milestones)
            overrides["decreasing_lr"] = [m - rewind_epoch for m in milestones if m > rewind_epoch]
        keep.pruned.report()
        _single_objective(loaders, model, ga_prune_config(config, **overrides), mask, device, on_forget=True,
                          sign=-1.0, before_epoch=before_epoch)
        keep.prune(config.rate, config.random_prune)
        if not last:  # rewind the unpruned weights, keep the mask
            model.load_state_dict(rewind_to["weights"])
            keep.pruned.apply()


@UNLEARN_METHODS.register("GA_prune_bi")
def GA_prune_bi(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                mask: Optional[Mask], device: torch.device) -> None:
    """Gradient ascent for ``--epochs`` epochs, pruning ``--rate`` of the remaining convolution
    weights after every epoch (no rewinding)."""
    keep = KeepPruned(model)
    keep.pruned.report()
    _single_objective(loaders, model, ga_prune_config(config), mask, device, on_forget=True, sign=-1.0,
                      before_epoch=keep, after_epoch=lambda run: keep.prune(config.rate, config.random_prune))


@UNLEARN_METHODS.register("FT_prune_bi")
def FT_prune_bi(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                mask: Optional[Mask], device: torch.device) -> None:
    """FT on the retain set with pruning at the start of every epoch ``e`` with
    ``(--unlearn_epochs - e) % 2 == 0``, each at ``1 - (1 - --rate) ** (1 / ((E - 1) // 2 + 1))``
    of the remaining weights (``--rate`` overall when ``E`` is even).

    The research code's ``FT_prune_bi`` cannot run (its epoch function does
    not accept the ``optimizer_ul`` argument its driver passes); this is the
    intended method.  A pruning at the start of epoch ``e > 0`` is done at the
    end of epoch ``e - 1`` (the same weights enter epoch ``e``), so resume
    snapshots never fall between a pruning and its epoch.
    """
    epochs = config.unlearn_epochs
    rate = prune_rate_per_step(config.rate, (epochs - 1) // PRUNE_STEP + 1)
    keep = KeepPruned(model)
    if epochs % PRUNE_STEP == 0:
        keep.prune(rate, config.random_prune)

    def after_epoch(run: UnlearnRun) -> None:
        if run.epoch + 1 < epochs and (epochs - run.epoch - 1) % PRUNE_STEP == 0:
            keep.prune(rate, config.random_prune)

    _single_objective(loaders, model, config, mask, device, on_forget=False, sign=1.0,
                      before_epoch=keep, after_epoch=after_epoch)
