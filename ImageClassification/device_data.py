"""``--data_on_device``: array datasets resident on the run's device, batches built there.

The default input path is the research code's: a ``DataLoader`` builds every batch one image at a time
(uint8 array -> PIL image -> ``RandomCrop(size, padding)`` -> ``RandomHorizontalFlip`` -> ``ToTensor``).
With ``--data_on_device`` each split (train, validation, test) goes to the device once, as uint8
``(N, H, W, C)``, and a :class:`DeviceLoader` builds every batch there in one step:

1. the order of pass ``e`` is a permutation drawn on the device by ``pass_generator(seed, e)``
   (:meth:`common.checkpointing.ResumableSampler.next_pass`; on the CPU it is the loader path's order);
2. the same generator then draws the augmentation of the whole pass, one draw per position of the
   order: a crop offset ``(dy, dx)``, each uniform on ``0..2p`` (``p`` the dataset's crop padding,
   ``(2p + 1)^2`` positions, 81 for CIFAR), and a flip, true with probability 1/2
   (:meth:`BatchAugment.draw`);
3. a batch is one gather: output pixel ``(i, j)`` of image ``k`` is source pixel
   ``(i + dy - p, j' + dx - p)`` of image ``index[k]``, with ``j' = W - 1 - j`` when flipped, else ``j``,
   and 0 where that falls outside the image -- ``RandomCrop(size, padding=p)`` on a zero-padded image
   followed by ``RandomHorizontalFlip``, for every image at once (:meth:`BatchAugment.apply`);
4. the uint8 batch becomes ``float32 / 255`` in the run's memory format (channels-last under
   ``--channels_last``) in the same copy: ``ToTensor``'s values, bit for bit.

The per-channel mean/std normalisation stays where the pipeline has it, inside the model
(:class:`ImageClassification.models.NormalizedClassifier`, saved in every checkpoint): moving it into the
loader would change the checkpoints' format for one elementwise op on the device.

A pass's randomness depends on ``(seed, epoch)`` alone, so resuming restores it from the loop position,
as for the loader path (:func:`common.checkpointing.position_loader` sets the epoch and the batches done;
the draws of the skipped batches are made and dropped).  The augmentation draws come from their own
generator, not torch's global one, so they differ from the loader path's (same distribution, tested in
``tests/ImageClassification/test_ic_device_data.py``); without augmentation the batches are the loader
path's bit for bit.

A :class:`DeviceLoader` has the attributes the pipeline reads from its ``DataLoader``\\ s
(``batch_size``, ``sampler``, ``drop_last``, ``len``, ``dataset``), so the epoch driver, ``EndlessLoader``,
evaluation and every ``--unlearn`` method use it unchanged; the one-shot baselines that rebuild loaders from
``loader.dataset`` (``wfisher``, ``fisher_new``) get the per-image dataset of the same samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Mapping, Optional, Tuple

import numpy as np
import torch

from common.checkpointing import ResumableSampler
from common.datasets import ArrayImageDataset
from common.errors import UsageError

FLAG = "--data_on_device"


@dataclass(frozen=True)
class BatchAugment:
    """Random crop with zero padding ``padding`` (None: no crop) and horizontal flip, on whole batches."""

    padding: Optional[int]
    flip: bool

    def draw(self, n: int, generator: torch.Generator) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``n`` crop offsets ``(n, 2)`` (row, column; each uniform on ``0..2 padding``) and ``n`` flips
        (``(n,)`` bool, each true with probability 1/2), on the generator's device."""
        device = generator.device
        offsets = (torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=device)
                   if self.padding is not None else None)
        flips = torch.rand(n, generator=generator, device=device) < 0.5 if self.flip else None
        return offsets, flips

    def apply(self, images: torch.Tensor, index: torch.Tensor, offsets: Optional[torch.Tensor],
              flips: Optional[torch.Tensor]) -> torch.Tensor:
        """Images ``index`` of ``images`` (uint8 ``(N, H, W, C)``), each cropped at its offset from the image
        zero-padded by ``padding`` and flipped where its flip is true: uint8 ``(len(index), H, W, C)``."""
        count, (_, height, width, channels) = len(index), images.shape
        rows = torch.arange(height, device=images.device).expand(count, height)
        cols = torch.arange(width, device=images.device).expand(count, width)
        if flips is not None:  # the flip acts on the crop: output column j reads crop column W - 1 - j
            cols = torch.where(flips[:, None], width - 1 - cols, cols)
        if offsets is not None:  # crop row i of the padded image is source row i + dy - padding
            rows = rows + (offsets[:, :1] - self.padding)
            cols = cols + (offsets[:, 1:] - self.padding)
        inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
        pixel = ((index[:, None, None] * height + rows.clamp(0, height - 1)[:, :, None]) * width
                 + cols.clamp(0, width - 1)[:, None, :])
        batch = images.view(-1, channels)[pixel]  # one gather: (count, H, W, C)
        return batch.mul_(inside[..., None])  # the zero padding


class DeviceImages:
    """Some samples of one split held on a device: the split's uint8 ``(N, H, W, C)`` images (one tensor,
    shared by every view of the split), which of them (``index``), their labels and, for a training view,
    the batch augmentation.  ``source`` is the whole split as the per-image path sees it (its transform)."""

    def __init__(self, images: torch.Tensor, index: torch.Tensor, labels: torch.Tensor,
                 augment: Optional[BatchAugment], source: ArrayImageDataset) -> None:
        if len(index) != len(labels):
            raise ValueError(f"{len(index)} samples but {len(labels)} labels")
        self.images, self.index, self.labels, self.augment, self.source = images, index, labels, augment, source

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return len(self.index)

    def relabelled(self, labels: torch.Tensor) -> "DeviceImages":
        """The same samples with ``labels`` (as :class:`ImageClassification.unlearn.rl.RelabelledDataset`)."""
        return DeviceImages(self.images, self.index, labels.to(self.device), self.augment, self.source)

    def concat(self, other: "DeviceImages") -> "DeviceImages":
        """These samples, then ``other``'s (views of the same split and augmentation, as a ``ConcatDataset``)."""
        if other.images is not self.images or other.augment != self.augment:
            raise ValueError("only views of the same resident split with the same augmentation concatenate")
        return DeviceImages(self.images, torch.cat([self.index, other.index]),
                            torch.cat([self.labels, other.labels]), self.augment, self.source)

    def per_image(self) -> ArrayImageDataset:
        """These samples as a per-image dataset (host memory, the split's transform)."""
        index = self.index.cpu().numpy()
        return ArrayImageDataset(self.source.data[index], self.labels.cpu().numpy(), self.source.transform)

    def batch(self, positions: torch.Tensor, offsets: Optional[torch.Tensor], flips: Optional[torch.Tensor],
              memory_format: torch.memory_format) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of the samples at ``positions``: float32 ``(B, C, H, W)`` in [0, 1] in
        ``memory_format``, augmented with the given draws when this view has augmentation."""
        index = self.index[positions]
        pixels = (self.augment.apply(self.images, index, offsets, flips) if self.augment is not None
                  else self.images[index])
        # ToTensor: (H, W, C) -> (C, H, W), then float / 255; conversion and layout are one copy
        images = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=memory_format).div_(255)
        return images, self.labels[positions]


class DeviceLoader:
    """Batches of :class:`DeviceImages`, built on the device; used where the pipeline uses a ``DataLoader``.

    ``sampler`` is a :class:`~common.checkpointing.ResumableSampler`: a shuffled loader's order of pass ``e``
    depends on ``(seed, e)`` only and :func:`~common.checkpointing.position_loader` can start a pass part-way
    through, so snapshots and ``--resume`` work as on the loader path.  The augmentation of a pass is drawn
    after its order by the same generator, for every position at once, so a resumed pass sees the draws
    the interrupted one would have.
    """

    drop_last = False

    def __init__(self, images: DeviceImages, batch_size: int, seed: int, shuffle: bool = True,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.images = images
        self.batch_size = batch_size
        self.memory_format = memory_format
        self.sampler = ResumableSampler(len(images), seed, shuffle)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order, start, generator = self.sampler.next_pass(self.images.device)
        offsets = flips = None
        if self.images.augment is not None:
            offsets, flips = self.images.augment.draw(len(order), generator)
        for first in range(start, len(order), self.batch_size):
            span = slice(first, first + self.batch_size)
            yield self.images.batch(order[span], None if offsets is None else offsets[span],
                                    None if flips is None else flips[span], self.memory_format)

    @cached_property
    def dataset(self) -> ArrayImageDataset:
        """The same samples for code that builds its own ``DataLoader`` (``wfisher``, ``fisher_new``)."""
        return self.images.per_image()


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes that can still be allocated on ``device`` (``None`` where that cannot be asked)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                fields = dict(line.split(":", 1) for line in meminfo)
            return int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def to_device(arrays: Mapping[str, np.ndarray], device: torch.device, what: str) -> dict:
    """``arrays`` as tensors on ``device``, after checking they fit: a one-line :class:`UsageError` naming
    ``--data_on_device`` and the memory they need otherwise (never a silent fallback to host memory)."""
    needed = sum(array.nbytes for array in arrays.values())
    free = free_memory(device)
    if free is not None and needed > free:
        raise UsageError(f"{FLAG}: {what} needs {needed / 2**20:.1f} MiB on {device}, but only "
                         f"{free / 2**20:.1f} MiB is free; drop {FLAG} to stream batches from host memory")
    # a read-only array (a memory-mapped cache entry) is copied; torch tensors must be writable
    return {name: torch.from_numpy(array if array.flags.writeable else np.array(array)).to(device)
            for name, array in arrays.items()}

