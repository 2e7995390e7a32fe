"""Resumable runs: periodic atomic snapshots of everything a training loop needs to continue.

One mechanism serves every long-running loop of the toolkit:

* the entry script builds a :class:`Snapshotter` for its output folder (how
  often to save, whether ``--resume`` was given, the run's settings, the
  processes of an ``accelerate launch``);
* the loop registers what it owns (:meth:`Snapshotter.register`: model,
  optimizer -- both halves of a :class:`~dualoptim.optimizers.DualOptim` through
  its own ``state_dict`` --, schedulers, EMA, data streams, ``torch.Generator``
  objects), calls :meth:`~Snapshotter.restore` once before its first step and
  :meth:`~Snapshotter.step` after every step with its loop values (counters,
  histories);
* the script calls :meth:`~Snapshotter.remove` once the run's final outputs
  are written.

A snapshot (``<save_dir>/resume_state.pt``) holds every registered object's
state, the loop values, the Python/NumPy/torch(/CUDA) RNG states of every
process and the run's settings; it is written atomically (a kill leaves the
previous complete snapshot).  Data order is part of the loop position:
:class:`ResumableSampler` draws the order of pass ``p`` from ``(seed, p)``
alone and can start part-way through a pass, :func:`position_loader` puts an
epoch loop's loader at ``(epoch, batch)`` and :class:`EndlessLoader` is an
endless stream of batches whose position is the number of batches handed out.
With these a run killed at any point and restarted with ``--resume`` finishes
with bitwise the same weights on CPU as a run that was never interrupted (with
``num_workers=0``: worker processes draw augmentation randomness from
per-worker seeds that depend on where a pass started).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.errors import UsageError, non_negative_int
from common.io import PathLike, atomic_torch_save, load_torch_file, one_line, to_jsonable

SNAPSHOT_NAME = "resume_state.pt"
#: Test hook: a process whose environment sets this to ``k`` SIGKILLs itself right after its
#: ``k``-th :meth:`Snapshotter.step` call (counted over every loop it runs; after any snapshot due then).
KILL_AT_STEP_ENV = "DUALOPTIM_KILL_AT_STEP"
_steps_in_process = itertools.count(1)
#: Settings that may change between a run and its ``--resume`` without changing its results.
RESUME_NEUTRAL_SETTINGS = frozenset({"resume", "overwrite", "save_every", "device", "gpu", "trust_checkpoint",
                                     "allow_nonfinite"})


def add_resume_args(parser: argparse.ArgumentParser, resume: bool = True, overwrite: bool = True,
                    save_every: Optional[str] = None) -> None:
    """``--resume``, ``--overwrite`` and, with a ``save_every`` help text, ``--save_every N``."""
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the last complete snapshot in the output folder "
                                 "(start afresh when there is none)")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="allow replacing finished results already in the output folder")
    if save_every is not None:
        parser.add_argument("--save_every", type=non_negative_int, default=0,
                            help=f"write a resume snapshot every N optimizer steps ({save_every})")


def refuse_overwrite(save_dir: PathLike, finished_files: Sequence[str], overwrite: bool,
                     flag: str = "--save_dir") -> None:
    """Stop before any work if ``save_dir`` already holds finished results, unless ``--overwrite``."""
    if overwrite:
        return
    existing = [name for name in finished_files if (Path(save_dir) / name).exists()]
    if existing:
        raise UsageError(f"{flag} {save_dir}: already holds finished results ({', '.join(existing)}); "
                         f"pass --overwrite to replace them or choose another folder")


# --------------------------------------------------------------------------- RNG and processes

def get_rng_state() -> Dict[str, Any]:
    """Every global RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class ProcessGroup:
    """The processes of a run: rank 0 writes snapshots, every process contributes its RNG state.

    ``gather(obj)`` returns every process's ``obj`` in rank order (a collective:
    all processes call it together).
    """

    rank: int = 0
    world: int = 1
    gather: Callable[[Any], List[Any]] = field(default=lambda obj: [obj], repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def of(cls, accelerator: Any) -> "ProcessGroup":
        """The processes of an ``accelerate.Accelerator`` (``None``: this process alone)."""
        if accelerator is None or accelerator.num_processes == 1:
            return cls()
        from accelerate.utils import gather_object

        return cls(accelerator.process_index, accelerator.num_processes, lambda obj: gather_object([obj]))


# --------------------------------------------------------------------------- data order

def pass_generator(seed: int, epoch: int, device: Optional[torch.device] = None) -> torch.Generator:
    """A generator (on ``device``, default the CPU) whose draws depend on ``(seed, epoch)`` alone: the
    randomness of one pass."""
    return torch.Generator(device=device or "cpu").manual_seed(seed * 100_003 + epoch)


class ResumableSampler(Sampler[int]):
    """Random order that depends only on ``(seed, epoch)`` and can start part-way through.

    ``set_epoch(e)`` selects the permutation of epoch ``e``; ``set_start(k)``
    skips the first ``k`` indices of it (``batches_done * batch_size``) without
    loading them.  Every pass moves on to the next epoch and starts at 0, so
    a loop that never positions the sampler sees a new order every pass.
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

    def next_pass(self, device: Optional[torch.device] = None) -> Tuple[torch.Tensor, int, torch.Generator]:
        """The next pass: its whole order as a tensor on ``device``, the position it starts at, and its
        :func:`pass_generator` after the order was drawn (for the pass's other draws, which then depend on
        ``(seed, epoch)`` alone too); moves on to the next epoch, from its start."""
        generator = pass_generator(self.seed, self.epoch, device)
        if self.shuffle:
            order = torch.randperm(self.length, generator=generator, device=device)
        else:
            order = torch.arange(self.length, device=device)
        start, self.start, self.epoch = self.start, 0, self.epoch + 1
        return order, start, generator

    def __iter__(self) -> Iterator[int]:
        order, start, _ = self.next_pass()
        return iter(order[start:].tolist())

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


def batches_per_pass(loader: DataLoader) -> int:
    """Batches in one full pass of a :func:`resumable_loader`, wherever its next pass starts."""
    samples = loader.sampler.length
    return samples // loader.batch_size if loader.drop_last else math.ceil(samples / loader.batch_size)


def position_loader(loader: Iterable, epoch: int, batches_done: int = 0) -> None:
    """Make the next pass over ``loader`` epoch ``epoch``'s order, skipping its first ``batches_done`` batches.

    Loaders without a :class:`ResumableSampler` are left as they are; they can
    only start a pass at its beginning.
    """
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, ResumableSampler):
        sampler.set_epoch(epoch)
        sampler.set_start(batches_done * loader.batch_size)
    elif batches_done:
        raise ValueError("only a loader over a ResumableSampler can start part-way through a pass")


class EndlessLoader:
    """Batches of a loader, pass after pass, without end.

    Over a :func:`resumable_loader`, pass ``p`` uses the sampler's epoch-``p``
    order and the position is the number of batches handed out so far, so
    :meth:`load_state_dict` continues mid-pass without loading the skipped
    batches.  Any other loader streams too, but cannot be resumed.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.resumable = isinstance(getattr(loader, "sampler", None), ResumableSampler)
        self.batches_done = 0
        self._iterator: Optional[Iterator] = None

    def __iter__(self) -> "EndlessLoader":
        return self

    def __next__(self):
        while True:
            if self._iterator is None:
                if self.resumable:
                    position_loader(self.loader, *divmod(self.batches_done, batches_per_pass(self.loader)))
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                continue
            self.batches_done += 1
            return batch

    def state_dict(self) -> Dict[str, int]:
        return {"batches_done": self.batches_done}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if state["batches_done"] and not self.resumable:
            raise ValueError("only a loader over a ResumableSampler can continue where a snapshot left it")
        self.batches_done = int(state["batches_done"])
        self._iterator = None


# --------------------------------------------------------------------------- snapshots

def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


class Snapshotter:
    """Save and restore the state of a loop as ``<save_dir>/resume_state.pt``.

    Args:
        save_dir: the run's output folder; ``None`` disables snapshots (every
            method is then a no-op and :meth:`restore` returns ``None``).
        every: :meth:`step` saves when ``steps_done`` is a multiple of it (0: never;
            loops may still :meth:`save` at their own boundaries, e.g. epoch ends).
        resume: whether :meth:`restore` loads an existing snapshot (``--resume``).
        config: the run's settings; a snapshot written under other settings
            (apart from :data:`RESUME_NEUTRAL_SETTINGS`) is refused on restore.
        processes: who writes (rank 0) and whose RNG states are saved (all).
        objects: initial registrations (see :meth:`register`).
    """

    def __init__(self, save_dir: Optional[PathLike], every: int = 0, resume: bool = False,
                 config: Optional[Mapping[str, Any]] = None, processes: ProcessGroup = ProcessGroup(),
                 filename: str = SNAPSHOT_NAME, objects: Optional[Mapping[str, Any]] = None) -> None:
        if every < 0:
            raise ValueError(f"the snapshot interval must be >= 0, got {every}")
        self.path = Path(save_dir) / filename if save_dir is not None else None
        self.every = every
        self.resume = resume
        # plain values (paths as strings, tuples as lists): a snapshot holds no pickled objects
        self.config = to_jsonable(dict(config)) if config is not None else None
        self.processes = processes
        self.objects: Dict[str, Any] = dict(objects or {})
        self.restored: Optional[Dict[str, Any]] = None  # the loop values restore() loaded, if any
        self._verified: Optional[Dict[str, Any]] = None  # the snapshot verify() read, until load() uses it

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def register(self, **objects: Any) -> "Snapshotter":
        """Add objects with ``state_dict``/``load_state_dict`` (or ``torch.Generator`` objects) to every snapshot."""
        self.objects.update(objects)
        return self

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def save(self, **loop: Any) -> None:
        """Write a snapshot of every registered object, ``loop`` and the RNG states (rank 0 writes)."""
        if not self.enabled:
            return
        rng = self.processes.gather(get_rng_state())
        if not self.processes.is_main:
            return
        atomic_torch_save({"objects": {name: _state_of(obj) for name, obj in self.objects.items()},
                           "loop": loop, "rng": rng, "config": self.config}, self.path)

    def step(self, steps_done: int, total_steps: Optional[int] = None, **loop: Any) -> None:
        """Call after every step: saves when ``steps_done`` is a multiple of ``every``.

        Not after the loop's last step (``steps_done == total_steps``): the run's final outputs
        follow at once and :meth:`remove` would drop that snapshot again -- for a large model a
        full copy of weights and optimizer state written for nothing.
        """
        if self.every and steps_done % self.every == 0 and steps_done != total_steps:
            self.save(**loop)
        if next(_steps_in_process) == int(os.environ.get(KILL_AT_STEP_ENV) or 0):
            os.kill(os.getpid(), signal.SIGKILL)

    def verify(self) -> "Snapshotter":
        """With ``resume`` and an existing snapshot: read it and check its layout and settings now, before
        the run writes anything into its folder (a refused ``--resume`` then leaves the folder as it was);
        :meth:`restore` uses what was read.  Returns ``self``."""
        if self.resume and self.exists():
            self._verified = self._read()
        return self

    def _read(self) -> Dict[str, Any]:
        """The snapshot file, refused in one line unless it has the snapshot layout and this run's settings."""
        snapshot = load_torch_file(self.path, "--resume")
        shapes = {"objects": dict, "loop": dict, "rng": list}
        if not isinstance(snapshot, dict) or not all(isinstance(snapshot.get(key), kind)
                                                     for key, kind in shapes.items()) \
                or not isinstance(snapshot.get("config"), (dict, type(None))):
            raise UsageError(f"--resume {self.path}: not a resume snapshot of this toolkit (expected a dict of "
                             f"objects, loop values, RNG states and settings); remove it to start afresh")
        self._check_config(snapshot.get("config"))
        return snapshot

    def load(self) -> Dict[str, Any]:
        """Restore every registered object and this process's RNG state; return the loop values."""
        snapshot, self._verified = self._verified or self._read(), None
        missing = [name for name in self.objects if name not in snapshot["objects"]]
        if missing:
            raise UsageError(f"--resume {self.path}: snapshot lacks {', '.join(missing)}; "
                             f"it was written by another script or configuration")
        if len(snapshot["rng"]) != self.processes.world:
            raise UsageError(f"--resume {self.path}: written by {len(snapshot['rng'])} process(es), "
                             f"this run has {self.processes.world}; resume with the same number")
        for name, obj in self.objects.items():
            try:
                _load_state(obj, snapshot["objects"][name])
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
                raise UsageError(f"--resume {self.path}: {name} state does not match this run "
                                 f"({one_line(err, 160)})") from None
        try:
            set_rng_state(snapshot["rng"][self.processes.rank])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"--resume {self.path}: the RNG states are not those of a snapshot of this toolkit "
                             f"({one_line(err, 160)})") from None
        return dict(snapshot["loop"])

    def _check_config(self, saved: Optional[Mapping[str, Any]]) -> None:
        if self.config is None or saved is None:
            return
        changed = [key for key in sorted((set(saved) | set(self.config)) - RESUME_NEUTRAL_SETTINGS)
                   if saved.get(key) != self.config.get(key)]
        if changed:
            details = ", ".join(f"{key}: {saved.get(key)!r} -> {self.config.get(key)!r}" for key in changed[:4])
            raise UsageError(f"--resume {self.path}: the snapshot was written with other settings ({details}); "
                             f"resume with the original flags, or start afresh without --resume")

    def restore(self) -> Optional[Dict[str, Any]]:
        """With ``resume`` and an existing snapshot: :meth:`load` it and return the loop values; else ``None``."""
        if not (self.resume and self.exists()):
            return None
        self.restored = self.load()
        if self.processes.is_main:
            print(f"resuming from {self.path}")
        return dict(self.restored)

    def remove(self) -> None:
        """Drop the snapshot once the run's final outputs are written (rank 0)."""
        if self.processes.is_main and self.exists():
            self.path.unlink()


def latest_snapshot_folder(folders: Iterable[PathLike], filename: str = SNAPSHOT_NAME) -> Optional[Path]:
    """Of ``folders``, the one whose snapshot was written last (``None`` if none holds one).

    For scripts that write every run into a new folder: ``--resume`` continues
    the most recent unfinished one.
    """
    candidates = [Path(folder) for folder in folders if (Path(folder) / filename).is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda folder: (folder / filename).stat().st_mtime_ns)
