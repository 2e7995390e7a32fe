"""SFR-on: saliency-masked, adaptively weighted gradient ascent (Huang et al., ECCV 2024).

Run by ``main_random_sfron.py --unlearn SFRon``.  Iteration-based rather than
epoch-based: ``--sfron_iters`` retain steps, with one forget step before every
``--sfron_freq``-th of them.

* Forget step: adaptive gradient ascent (:func:`adaptive_ce`) weighted by
  ``--sfron_alpha`` decayed with a cosine schedule, gradients multiplied by the
  forget-remain balanced saliency mask (:func:`common.saliency.fisher_ratio_masks`) and clipped
  to norm 7, then ``forget_step()``.
* Retain step: cross-entropy on a retain batch, ``retain_step()``.
* Fast-slow weight update after each iteration:
  ``theta <- beta * theta + (1 - beta) * theta_prev`` with the research code's
  ``beta = 1`` (``--sfron_ema_beta``), which leaves the fast weights as they are.
* Both learning rates follow ``CosineAnnealingLR(T_max=--sfron_iters)``.

With ``--save_dir`` a resume snapshot is written every ``--save_every``
iterations (default: every log interval); ``--resume`` continues from it.
``--sfron_checkpoint_every N`` (ours) also saves the model to evaluate as
``checkpoint_step{s}.pt`` after every ``N`` retain steps, as the epoch methods
save ``checkpoint_{e}.pt``: the evidence benchmark's metrics along the run.

With ``--optim sgd|adam`` the research code runs one optimizer at
``--retain_lr`` for both objectives; ``dual*`` adds a forget optimizer at
``--unlearn_lr``.  SFR-on alone also accepts the paper's optimizer ablations
(``--optim dual_sa|dual_ss|dual_ls|dual_ll|dual_sl|dual_share|dual_aa_m|
dual_aa_v|dual_aa_8bit``, see :mod:`dualoptim.recipes`); every one of them
follows the same cosine schedule on each of its torch optimizers.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from common.distributed import sharding_of
from common.errors import UsageError
from common.checkpointing import EndlessLoader
from common.io import atomic_torch_save
from common.progress import progress
from common.saliency import Mask, accumulate_gradients, fisher_ratio_masks
from common.schedules import cosine_decay

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders
from .engine import UnlearnRun, build_unlearn_optimizer, run_snapshots, top1_accuracy
from .registry import UNLEARN_METHODS

#: Gradient-norm clip of the forget step.
MAX_GRAD_NORM = 7.0
#: Saliency threshold ``gamma``: keep weights whose forget/remain Fisher ratio is at least this.
MASK_THRESHOLD = 1.0
#: Numerical floor of the Fisher ratio and of the adaptive weights.
EPS = 1e-15


def adaptive_ce(logits: torch.Tensor, targets: torch.Tensor, lambd: float) -> torch.Tensor:
    """Sample-adaptive cross-entropy: ``sum_i w_i l_i / sum_i w_i`` with ``w_i = 1 / (l_i^lambd + eps)``.

    ``l_i`` is the per-sample cross-entropy; the weights are constants (no
    gradient), so samples the model already gets wrong (large ``l_i``) weigh
    less in the ascent.
    """
    losses = F.cross_entropy(logits, targets, reduction="none")
    weights = 1.0 / (losses.detach().pow(lambd) + EPS)
    return (weights * losses).sum() / weights.sum()


def empirical_fisher(model: nn.Module, loader: Iterable, device: torch.device) -> Dict[str, torch.Tensor]:
    """Mean over batches of the squared mean-CE gradient, in eval mode."""
    model.eval()

    def batch_loss(net: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        return F.cross_entropy(net(images.to(device)), targets.to(device))

    bar = progress(loader, desc="fisher", leave=False, disable=not sharding_of(model).is_main)
    return accumulate_gradients(model, bar, batch_loss, power=2)


def sfron_checkpoint_name(step: int) -> str:
    """The model after ``step`` retain steps (``--sfron_checkpoint_every``)."""
    return f"checkpoint_step{step}.pt"


def sfron_lambda(dataset: str) -> float:
    """Exponent ``lambda`` of the adaptive weights: 0.6 on TinyImagenet, else 0.5."""
    return 0.6 if dataset == "TinyImagenet" else 0.5


@UNLEARN_METHODS.register("SFRon")
def SFRon(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
          mask: Optional[Mask], device: torch.device) -> None:
    """SFR-on unlearning (see the module docstring).

    ``mask`` (``--mask_path``) is not used: SFR-on builds its own saliency
    mask from the forget and remain Fisher diagonals, which it also writes to
    ``<save_dir>/forget_fisher.pt`` and ``remain_fisher.pt``.
    """
    iters, freq = config.sfron_iters, config.sfron_freq  # both >= 1: positive_int flags
    if config.optim.lower() == "adam" and config.momentum >= 1.0:  # before anything is written
        raise UsageError(f"--momentum: must be below 1 with SFR-on --optim adam (AdamW's beta1), got {config.momentum}")
    save_dir = Path(config.save_dir) if config.save_dir else None
    sharding = sharding_of(model)

    forget_fisher = empirical_fisher(model, loaders.forget_loader, device)
    remain_fisher = empirical_fisher(model, loaders.retain_loader, device)
    if save_dir is not None and sharding.is_main:
        atomic_torch_save({k: v.cpu() for k, v in forget_fisher.items()}, save_dir / "forget_fisher.pt")
        atomic_torch_save({k: v.cpu() for k, v in remain_fisher.items()}, save_dir / "remain_fisher.pt")
    saliency = fisher_ratio_masks(forget_fisher, remain_fisher, (MASK_THRESHOLD,))[MASK_THRESHOLD]
    kept = sum(int(m.sum()) for m in saliency.values())
    total = sum(m.numel() for m in saliency.values())
    print(f"Total sparsity th:{MASK_THRESHOLD} weight:{100.0 * (total - kept) / total}")

    # SFR-on's own single AdamW takes its first-moment decay from --momentum (the research code's
    # unlearn/sfron.py:230-236); the other methods' and the dual* AdamWs keep torch's 0.9.
    optimizer = build_unlearn_optimizer(model, config, (config.retain_lr, config.retain_lr),
                                        adam_betas=(config.momentum, 0.999))
    schedulers = [CosineAnnealingLR(opt, T_max=iters) for opt in optimizer.optimizers]

    lambd = sfron_lambda(config.dataset)
    ema_beta = config.sfron_ema_beta
    log_freq = 100 if config.dataset == "TinyImagenet" else 500
    params = list(model.parameters())
    slow = [p.detach().clone() for p in params] if ema_beta != 1.0 else None
    forget_iter, retain_iter = EndlessLoader(loaders.forget_loader), EndlessLoader(loaders.retain_loader)
    running = {"forget_loss": 0.0, "forget_acc": 0.0, "forget_n": 0,
               "remain_loss": 0.0, "remain_acc": 0.0, "remain_n": 0}
    snapshots = run_snapshots(config, model, every=config.save_every or log_freq).register(
        model=model, optimizer=optimizer, forget_data=forget_iter, retain_data=retain_iter,
        **{f"scheduler{i}": s for i, s in enumerate(schedulers)})
    run = UnlearnRun(model, optimizer, config, device, saliency, snapshots)  # registers the fp16 GradScaler too
    loop = snapshots.restore() or {"step": 0, "running": running, "slow": slow}
    running = loop["running"]
    if slow is not None:
        torch._foreach_copy_(slow, loop["slow"])
    start = time.time()
    bar = progress(range(loop["step"], iters), desc=f"SFRon ({config.optim})", total=iters, initial=loop["step"],
                   dynamic_ncols=True, disable=not sharding.is_main)
    for step in bar:
        model.train()
        run.steps = step  # the step a non-finite loss is reported at (run.check_loss)
        if step % freq == 0:
            images, targets = run.to_device(*next(forget_iter))
            with run.autocast():
                logits = model(images)
                ascent = -adaptive_ce(logits, targets, lambd)
            run.update(cosine_decay(config.sfron_alpha, step, iters) * ascent, "forget",
                       masked=True, max_grad_norm=MAX_GRAD_NORM)
            running["forget_loss"] += ascent.item()
            running["forget_acc"] += top1_accuracy(logits.detach(), targets)
            running["forget_n"] += 1

        images, targets = run.to_device(*next(retain_iter))
        with run.autocast():
            logits = model(images)
            remain_loss = F.cross_entropy(logits, targets)
        run.update(remain_loss, "retain", masked=False)
        running["remain_loss"] += remain_loss.item()
        running["remain_acc"] += top1_accuracy(logits.detach(), targets)
        running["remain_n"] += 1

        if slow is not None:  # fast-slow weights: theta <- beta theta + (1 - beta) theta_prev
            with torch.no_grad():
                torch._foreach_lerp_(params, slow, 1.0 - ema_beta)
                torch._foreach_copy_(slow, params)
        for scheduler in schedulers:
            scheduler.step()

        bar.set_postfix(remain_loss=f"{remain_loss.item():.4f}")
        if (step + 1) % log_freq == 0:
            forget_n = max(running["forget_n"], 1)
            print(f"step={step + 1} Forget L:{running['forget_loss'] / forget_n:.4f} "
                  f"Acc:{running['forget_acc'] / forget_n:.4f} "
                  f"Remain L:{running['remain_loss'] / running['remain_n']:.4f} "
                  f"Acc:{running['remain_acc'] / running['remain_n']:.4f} "
                  f"LR:{optimizer.retain_optimizer.param_groups[0]['lr']} "
                  f"({running['remain_n'] / (time.time() - start):.2f} steps/s)")
            running = dict.fromkeys(running, 0)
            start = time.time()
        every = config.sfron_checkpoint_every
        if every and (step + 1) % every == 0 and save_dir is not None and sharding.is_main:
            with optimizer.evaluation_weights():  # a schedule-free optimizer's average, not its train point
                atomic_torch_save(model.state_dict(), save_dir / sfron_checkpoint_name(step + 1))
        snapshots.step(step + 1, iters, step=step + 1, running=running, slow=slow)
    optimizer.eval_mode()  # what the caller evaluates and saves: a schedule-free optimizer's average
