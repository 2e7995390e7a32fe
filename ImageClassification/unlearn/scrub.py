"""SCRUB (Kurmanji et al., NeurIPS 2023) as the research code runs it.

The teacher is the original model.  Per epoch the student first moves away
from the teacher on the forget set (one ``forget_step()`` per batch on
``-KL(teacher || student)``), then stays close to it and to the labels on the
retain set (one ``retain_step()`` per batch on
``gamma * CE + alpha * KL(teacher || student)``).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from common.saliency import Mask

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import UnlearnLoaders
from .engine import UnlearnRun, run_epochs
from .registry import UNLEARN_METHODS


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1),
                    reduction="batchmean")


def scrub_forget_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Forget objective: ``-KL(teacher || student)`` (minimised, i.e. the KL is maximised)."""
    return -distill_kl(student_logits, teacher_logits)


def scrub_retain_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      alpha: float, gamma: float) -> torch.Tensor:
    """Retain objective: ``gamma * CE(student, y) + alpha * KL(teacher || student)``."""
    return gamma * F.cross_entropy(student_logits, targets) + alpha * distill_kl(student_logits, teacher_logits)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model``.

    It stays in train mode, as the research code's teacher does (it is built
    fresh and never switched to eval): BatchNorm layers normalise with batch
    statistics.  Published SCRUB numbers depend on this.
    """
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.train()


@UNLEARN_METHODS.register("SCRUB")
def SCRUB(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
          mask: Optional[Mask], device: torch.device) -> None:
    """SCRUB with ``--scrub_alpha`` (retain KL weight) and ``--scrub_gamma`` (retain CE weight).

    As in the research code only the main (retain-side) optimizer follows the
    ``--decreasing_lr`` schedule; a separate forget optimizer keeps
    ``--unlearn_lr``.
    """
    teacher = frozen_teacher(model)

    def forget_loss(images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        with torch.no_grad():
            teacher_logits = teacher(images)
        return scrub_forget_loss(logits, teacher_logits), logits

    def retain_loss(images: torch.Tensor, targets: torch.Tensor):
        logits = model(images)
        with torch.no_grad():
            teacher_logits = teacher(images)
        return scrub_retain_loss(logits, teacher_logits, targets, config.scrub_alpha, config.scrub_gamma), logits

    def epoch_fn(run: UnlearnRun) -> None:
        run.warmup(1, len(loaders.forget_loader) + len(loaders.retain_loader))
        run.train_on(loaders.forget_loader, forget_loss, "forget", "forget")
        run.train_on(loaders.retain_loader, retain_loss, "retain", "retain")

    run_epochs(model, config, device, mask, epoch_fn, schedule_forget=False)
