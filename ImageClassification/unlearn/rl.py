"""Random labelling (RL), SalUn (RL with a saliency mask; Fan et al., ICLR 2024) and RL_proximal.

Each epoch fine-tunes the forget set on uniformly random labels (a forget
update per batch) and then the retain set on its true labels (a retain
update per batch).  With ``--mask_path`` every gradient is multiplied by the
saliency mask, so only salient weights move.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from common.checkpointing import pass_generator, resumable_loader
from common.errors import UsageError
from common.saliency import Mask

from ImageClassification.config import UnlearnConfig
from ImageClassification.data import Loader, UnlearnLoaders
from ImageClassification.device_data import DeviceLoader
from .engine import UnlearnRun, cross_entropy_loss, run_epochs
from .projections import ProximalShrink, after_each_step
from .registry import UNLEARN_METHODS

#: Datasets on which the research code's single-optimizer RL trains one
#: shuffled mix of relabelled forget and retain samples (see :func:`RL`).
MIXED_RELABEL_DATASETS = ("cifar100", "TinyImagenet")


class RelabelledDataset(Dataset):
    """``dataset`` with its labels replaced by ``labels`` (images and transforms unchanged).

    A label is returned as the same type as the original one (``int`` or
    tensor), so the relabelled set collates together with its unmodified
    siblings.
    """

    def __init__(self, dataset: Dataset, labels: torch.Tensor) -> None:
        if len(labels) != len(dataset):
            raise ValueError(f"got {len(labels)} labels for a dataset of {len(dataset)} samples")
        self.dataset = dataset
        self.labels = labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index][:2]
        new_label = self.labels[index]
        return image, new_label.to(label.dtype) if isinstance(label, torch.Tensor) else int(new_label)


def random_label_loss(model: nn.Module, num_classes: int):
    """CE against labels drawn uniformly from ``[0, num_classes)`` afresh for every batch.

    The labels are drawn on the CPU from torch's global generator (as the
    research code does), so a seed gives the same labels on every device.
    """
    def batch_loss(images: torch.Tensor, targets: torch.Tensor):
        random_targets = torch.randint(0, num_classes, targets.shape).to(targets.device)
        logits = model(images)
        return F.cross_entropy(logits, random_targets), logits
    return batch_loss


def mixed_relabel_loader(loaders: UnlearnLoaders, batch_size: int, seed: int, epoch: int) -> Loader:
    """One shuffled loader over the forget set (random labels, drawn once) and the retain set.

    The labels and the order depend on ``(seed, epoch)`` only (the research
    code draws both from the global RNG), so a resumed run rebuilds the same
    loader for the epoch it continues.
    """
    forget, retain = loaders.forget_loader, loaders.retain_loader
    on_device = isinstance(forget, DeviceLoader)  # --data_on_device: the same mix of the resident views
    forget_samples = forget.images if on_device else forget.dataset
    labels = torch.randint(0, loaders.num_classes, (len(forget_samples),), generator=pass_generator(seed, epoch))
    if on_device:
        return DeviceLoader(forget_samples.relabelled(labels).concat(retain.images), batch_size, seed,
                            memory_format=forget.memory_format)
    mixed = ConcatDataset([RelabelledDataset(forget_samples, labels), retain.dataset])
    return resumable_loader(mixed, batch_size, seed)


@UNLEARN_METHODS.register("RL")
def RL(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
       mask: Optional[Mask], device: torch.device) -> None:
    """Random-label unlearning (SalUn when ``mask`` is given).

    Per epoch, by default: forget batches with fresh random labels ->
    ``forget_step()``; then retain batches -> ``retain_step()``.

    The research code's single-optimizer runs (``--optim sgd|adam``) on
    ``cifar100`` and ``TinyImagenet`` instead relabel the whole forget set
    once per epoch and train one shuffled loader over forget + retain
    samples; published numbers use that, so we keep it.  Those mixed batches
    step the single optimizer at ``--unlearn_lr`` (``forget_step()``).
    """
    num_classes = loaders.num_classes
    retain_loss = cross_entropy_loss(model)
    forget_loss = random_label_loss(model, num_classes)

    def epoch_fn(run: UnlearnRun) -> None:
        # The research code warms up once per epoch, at the first step.
        run.warmup(1, len(loaders.forget_loader) + len(loaders.retain_loader))
        if config.dataset in MIXED_RELABEL_DATASETS and not run.optimizer.is_dual:
            run.train_on(mixed_relabel_loader(loaders, config.batch_size, config.seed, run.epoch), retain_loss,
                         "forget", "forget+retain")
        else:
            run.train_on(loaders.forget_loader, forget_loss, "forget", "forget")
            run.train_on(loaders.retain_loader, retain_loss, "retain", "retain")

    run_epochs(model, config, device, mask, epoch_fn)


@UNLEARN_METHODS.register("RL_proximal")
def RL_proximal(loaders: UnlearnLoaders, model: nn.Module, config: UnlearnConfig,
                mask: Optional[Mask], device: torch.device) -> None:
    """Random labelling with a proximal step towards the epoch's starting weights after every update.

    Each epoch trains one shuffled loader over the forget set (relabelled at
    random once per epoch) and the retain set -- on ``svhn`` a forget pass
    with fresh random labels per batch, then a retain pass -- with the run's
    main optimizer, as the research code's ``RL_proximal`` does; after every
    step :class:`~.projections.ProximalShrink` returns the
    ``--mask_ratio``-scheduled share of the weights to their values at the
    start of the epoch and shrinks the others towards them.

    The research code's ``RL_proximal`` cannot run: it reads ``--mask_ratio``,
    which its parser lacks, and its epoch function does not accept the
    ``optimizer_ul`` argument its driver passes; this is the intended method.
    The anchor is the epoch's starting weights, so resume snapshots are taken
    at epoch ends only.
    """
    if config.save_every:
        raise UsageError("--save_every: RL_proximal resumes from epoch ends only (its proximal anchor is "
                         "each epoch's starting weights); drop --save_every")
    steps_per_epoch = len(loaders.forget_loader) + len(loaders.retain_loader)
    shrink = ProximalShrink(model, config.mask_ratio, config.unlearn_epochs * steps_per_epoch)
    offset = {"first": 0, "step": 0, "per_step": 0}  # the research code's step offset in the current pass
    retain_loss = cross_entropy_loss(model)
    attached = []

    def project() -> None:
        shrink.apply(shrink.count(offset["first"] + offset["step"]))
        offset["step"] += offset["per_step"]

    def epoch_fn(run: UnlearnRun) -> None:
        if run not in attached:
            attached.append(run)
            after_each_step(run.optimizer, project)
        shrink.set_anchor()
        run.warmup(1, steps_per_epoch)
        offset.update(first=run.epoch * steps_per_epoch, step=0, per_step=0)
        if config.dataset != "svhn":
            run.train_on(mixed_relabel_loader(loaders, config.batch_size, config.seed, run.epoch), retain_loss,
                         "retain", "forget+retain")
            return
        run.train_on(loaders.forget_loader, random_label_loss(model, loaders.num_classes), "retain", "forget")
        offset.update(per_step=1)  # the research code's retain pass counts its batches
        run.train_on(loaders.retain_loader, retain_loss, "retain", "retain")

    run_epochs(model, config, device, mask, epoch_fn, lr_switching=False, schedule_forget=False)
