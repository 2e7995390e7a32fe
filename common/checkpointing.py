"""Resumable runs: periodic atomic snapshots of everything a training loop needs to continue.

A snapshot holds the model, every optimizer and scheduler (both halves of a
:class:`~common.dualoptim.DualOptim` through its own ``state_dict``), the
Python/NumPy/torch RNG states and the loop position (epoch and batches done in
it).  Together with :class:`ResumableSampler`, whose order depends only on
``(seed, epoch)`` and which can start mid-epoch, a run killed at any point and
restarted with ``--resume`` finishes with bitwise the same weights on CPU as a
run that was never interrupted.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.errors import UsageError
from common.io import PathLike, atomic_torch_save, load_torch_file

SNAPSHOT_NAME = "resume_state.pt"


def add_resume_args(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """``--resume`` and ``--overwrite``."""
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the run already saved in --save_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow replacing finished results already in --save_dir")


def get_rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def refuse_overwrite(save_dir: PathLike, finished_files: Sequence[str], overwrite: bool,
                     flag: str = "--save_dir") -> None:
    """Stop before any work if ``save_dir`` already holds finished results, unless ``--overwrite``."""
    if overwrite:
        return
    existing = [name for name in finished_files if (Path(save_dir) / name).exists()]
    if existing:
        raise UsageError(f"{flag} {save_dir}: already holds finished results ({', '.join(existing)}); "
                         f"pass --overwrite to replace them or choose another folder")


class ResumableSampler(Sampler[int]):
    """Random order that depends only on ``(seed, epoch)`` and can start part-way through.

    ``set_epoch(e)`` selects the permutation of epoch ``e``; ``set_start(k)``
    skips the first ``k`` indices of it (``batches_done * batch_size``) without
    loading them.  The start resets to 0 after one full pass.
    """

    def __init__(self, data_source_len: int, seed: int, shuffle: bool = True) -> None:
        self.length = data_source_len
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        start, self.start = self.start, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.length - self.start


def resumable_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True,
                     **loader_kwargs: Any) -> DataLoader:
    """A DataLoader over a :class:`ResumableSampler` (reach it as ``loader.sampler``).

    The loader gets its own generator: otherwise every ``iter(loader)`` draws
    its worker base seed from the global RNG, and a resumed run, which creates
    its iterator at a different point, would see different dropout and
    augmentation draws afterwards.
    """
    from common.seed import seed_worker
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=ResumableSampler(len(dataset), seed, shuffle),
                      generator=generator, worker_init_fn=seed_worker, **loader_kwargs)


class Snapshotter:
    """Save and restore the state of a loop as ``<save_dir>/resume_state.pt``.

    ``objects`` maps names to anything with ``state_dict``/``load_state_dict``
    (models, optimizers, DualOptim, schedulers, GradScalers).
    """

    def __init__(self, save_dir: PathLike, objects: Mapping[str, Any], filename: str = SNAPSHOT_NAME) -> None:
        self.path = Path(save_dir) / filename
        self.objects = dict(objects)

    def save(self, epoch: int, batches_done: int, **extra: Any) -> Path:
        snapshot = {name: obj.state_dict() for name, obj in self.objects.items()}
        snapshot["_loop"] = {"epoch": epoch, "batches_done": batches_done, "rng": get_rng_state(), **extra}
        return atomic_torch_save(snapshot, self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> Dict[str, Any]:
        """Restore every object and the RNG state; return the loop record (epoch, batches_done, ...)."""
        snapshot = load_torch_file(self.path, "--resume")
        missing = [name for name in [*self.objects, "_loop"] if name not in snapshot]
        if missing:
            raise UsageError(f"--resume {self.path}: snapshot lacks {', '.join(missing)}; "
                             f"it was written by another script or configuration")
        for name, obj in self.objects.items():
            try:
                obj.load_state_dict(snapshot[name])
            except (RuntimeError, ValueError, KeyError) as err:
                reason = " ".join(str(err).split())[:160]
                raise UsageError(f"--resume {self.path}: {name} state does not match this run ({reason})") from None
        loop = dict(snapshot["_loop"])
        set_rng_state(loop.pop("rng"))
        return loop

    def remove(self) -> None:
        """Drop the snapshot once the run's final outputs are written."""
        if self.path.exists():
            self.path.unlink()


def maybe_resume(snapshotter: Snapshotter, resume: bool) -> Optional[Dict[str, Any]]:
    """Load the snapshot when ``--resume`` is given and one exists (else start fresh)."""
    if resume and snapshotter.exists():
        return snapshotter.load()
    return None
