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
3. a batch is one gather: output pixel ``(i, j)`` of image ``k`` is pixel ``(i + dy, j' + dx)`` of image
   ``index[k]`` zero-padded by ``p``, with ``j' = W - 1 - j`` when flipped, else ``j`` --
   ``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip``, for every image at once.  The
   train split is stored padded and mirrored so that the gather copies whole rows
   (:class:`ResidentImages`);
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
path's bit for bit on the CPU (on CUDA the permutation comes from the CUDA generator, another order).

A :class:`DeviceLoader` has the attributes the pipeline reads from its ``DataLoader``\\ s
(``batch_size``, ``sampler``, ``drop_last``, ``len``, ``dataset``), so the epoch driver, ``EndlessLoader``,
evaluation and every ``--unlearn`` method use it unchanged (RL's relabelled forget + retain mix is built
from the resident views: :meth:`DeviceImages.relabelled`, :meth:`DeviceImages.concat`); the one-shot
baselines that rebuild loaders from ``loader.dataset`` (``wfisher``, ``fisher_new``) get the per-image
dataset of the same samples.
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the block's torch ops on one thread when ``device`` is the CPU.

    A batch step is about 2 ms of copying on one core: a second thread gains little, while each of its
    OpenMP fork/joins waits for the other thread, a whole time slice when the cores are busy (measured on
    the 2-core machine at load 8: 85 ms per batch of 256 with 2 threads against 3 ms with one).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class BatchAugment:
    """Random crop with zero padding ``padding`` (None: no crop) and horizontal flip, drawn for whole passes."""

    padding: Optional[int]
    flip: bool

    def draw(self, n: int, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` crop offsets ``(n, 2)`` (row, column; each uniform on ``0..2 padding``, all ``0`` without a
        crop) and ``n`` flips (``(n,)`` bool, each true with probability 1/2; all false without flips),
        on the generator's device."""
        device = generator.device
        offsets = (torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=device)
                   if self.padding is not None else torch.zeros(n, 2, dtype=torch.int64, device=device))
        flips = (torch.rand(n, generator=generator, device=device) < 0.5 if self.flip
                 else torch.zeros(n, dtype=torch.bool, device=device))
        return offsets, flips


class ResidentImages:
    """One split's uint8 ``(N, H, W, C)`` images on a device, stored so that any crop/flip is one row gather.

    The store is ``(M, N, H + 2p, W + 2p, C)``: the images zero-padded by ``padding`` ``p`` and, with
    ``mirrored``, a second copy of them flipped left-right (``M = 2``; ``2 (1 + 2p / H)^2`` times the images'
    size, 3.1x for CIFAR).  Seen as one run of pixels, every output row of a crop -- ``W`` pixels
    starting at padded row ``dy + i``, column ``dx`` (flipped: column ``2p - dx`` of the mirrored copy) --
    is one overlapping row of a strided view, so a batch is a single ``index_select`` of ``B * H`` rows
    (:meth:`crops`), the one kernel both CPU and GPU do fast.
    """

    def __init__(self, images: torch.Tensor, padding: int = 0, mirrored: bool = False) -> None:
        count, self.height, self.width, self.channels = images.shape
        self.count, self.padding = count, padding
        height, width = self.height + 2 * padding, self.width + 2 * padding
        self.store = images.new_zeros((2 if mirrored else 1, count, height, width, self.channels))
        self.store[0, :, padding:padding + self.height, padding:padding + self.width] = images
        if mirrored:
            self.store[1] = self.store[0].flip(2)
        pixels = self.store.numel() // self.channels
        self.rows = self.store.view(-1).as_strided((pixels - self.width + 1, self.width * self.channels),
                                                   (self.channels, 1))

    @staticmethod
    def nbytes(shape: Tuple[int, ...], padding: int = 0, mirrored: bool = False) -> int:
        """Bytes of the store of uint8 images of ``shape``."""
        count, height, width, channels = shape
        return (2 if mirrored else 1) * count * (height + 2 * padding) * (width + 2 * padding) * channels

    @property
    def device(self) -> torch.device:
        return self.store.device

    def crops(self, index: torch.Tensor, offsets: Optional[torch.Tensor] = None,
              flips: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images ``index``, each cropped at its ``(dy, dx)`` from the image zero-padded by ``padding`` (default:
        the centre, the image itself) and flipped left-right where ``flips``: uint8 ``(B, H, W, C)``.
        ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip`` with these draws."""
        padded_height, padded_width = self.store.shape[2:4]
        if offsets is None:
            dy = dx = torch.full_like(index, self.padding)
        else:
            dy, dx = offsets[:, 0], offsets[:, 1]
        if flips is None:
            copy, first_column = torch.zeros_like(index), dx
        else:  # output column j of a flipped crop is padded column dx + W - 1 - j: mirrored column 2p - dx + j
            copy, first_column = flips.long(), torch.where(flips, 2 * self.padding - dx, dx)
        top = (copy * self.count + index) * padded_height + dy
        row = ((top[:, None] + torch.arange(self.height, device=index.device)) * padded_width
               + first_column[:, None])
        return self.rows.index_select(0, row.view(-1)).view(len(index), self.height, self.width, self.channels)


class DeviceImages:
    """Some samples of one split held on a device: the split's :class:`ResidentImages` (shared by every view
    of the split), which of them (``index``), their labels and, for a training view, the batch augmentation.
    ``source`` is the whole split as the per-image path sees it (its transform)."""

    def __init__(self, images: ResidentImages, index: torch.Tensor, labels: torch.Tensor,
                 augment: Optional[BatchAugment], source: ArrayImageDataset) -> None:
        if len(index) != len(labels):
            raise ValueError(f"{len(index)} samples but {len(labels)} labels")
        if augment is not None and ((augment.padding or 0) != images.padding or
                                    (augment.flip and images.store.shape[0] != 2)):
            raise ValueError(f"{augment} needs a store padded by its padding and mirrored for flips")
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
        ``memory_format``, cropped and flipped with the given draws (none: the images as they are)."""
        with single_thread_on_cpu(self.device):
            pixels = self.images.crops(self.index[positions], offsets, flips)
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
        with single_thread_on_cpu(self.images.device):
            order, start, generator = self.sampler.next_pass(self.images.device)
            offsets = flips = None
            if self.images.augment is not None:  # one draw per position of the pass, then sliced per batch
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


def to_device(arrays: Mapping[str, np.ndarray], device: torch.device, what: str, needed: int) -> dict:
    """``arrays`` as tensors on ``device``, after checking that ``needed`` bytes fit there: a one-line
    :class:`UsageError` naming ``--data_on_device`` and the memory needed otherwise (never a silent fallback
    to host memory)."""
    free = free_memory(device)
    if free is not None and needed > free:
        raise UsageError(f"{FLAG}: {what} needs {needed / 2**20:.1f} MiB on {device}, but only "
                         f"{free / 2**20:.1f} MiB is free; drop {FLAG} to stream batches from host memory")
    # a read-only array (a memory-mapped cache entry) is copied; torch tensors must be writable
    return {name: torch.from_numpy(array if array.flags.writeable else np.array(array)).to(device)
            for name, array in arrays.items()}

