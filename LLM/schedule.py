"""Which data each optimizer step sees: joint steps or alternating forget/retain steps.

DualOptim's LLM recipe alternates objectives: ``forget_freq`` optimizer steps
on forget batches, then ``retain_freq`` steps on retain batches, and so on.
Under gradient accumulation every micro-batch of a step comes from the same
objective (the original sampler draws ``forget_freq * accumulation`` forget
micro-batches, then ``retain_freq * accumulation`` retain ones), so the
optimizer can be told the objective of each step before it happens.

Data-parallel runs share one global stream of micro-batches per objective:
global micro-batch ``g`` goes to process ``g % world_size``.  One optimizer
step consumes ``accumulation * world_size`` global micro-batches, so ``N``
processes with accumulation ``A`` see exactly the samples one process sees
with accumulation ``N * A``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, List, Tuple

import torch

FORGET, RETAIN, JOINT = "forget", "retain", "joint"
#: ``--schedule`` values: alternating steps, or joint steps (split by objective for a dual optimizer)
SCHEDULES = ("alternate", "joint")
#: the one stream of plain fine-tuning (``main_train.py``): no objective to tell the optimizer
TRAIN = "train"


class BatchStream:
    """An endless, seeded, reshuffling stream of this process's micro-batches of a dataset.

    Indices come from successive seeded permutations (pass ``k`` uses seed
    ``seed + k``); a batch that runs past a permutation's end continues into
    the next one, so every batch is full.  Each call reads one round of
    ``world_size`` global micro-batches and keeps this process's, so the
    position (global micro-batches read, :meth:`state_dict`) is the same on
    every process and a resumed stream continues without replaying the data.
    """

    def __init__(self, dataset, batch_size: int, collate: Callable, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if len(dataset) == 0:
            raise ValueError("BatchStream needs a non-empty dataset")
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.load_state_dict({"global_batch": 0})

    def _index_stream(self, start: int) -> Iterator[int]:
        passes, offset = divmod(start, len(self.dataset))
        while True:
            generator = torch.Generator().manual_seed(self.seed + passes)
            yield from torch.randperm(len(self.dataset), generator=generator).tolist()[offset:]
            passes, offset = passes + 1, 0

    def next_indices(self) -> List[int]:
        """Dataset indices of this process's next micro-batch."""
        round_indices = [next(self._indices) for _ in range(self.batch_size * self.world_size)]
        self._global_batch += self.world_size
        return round_indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state_dict(self) -> Dict[str, int]:
        return {"global_batch": self._global_batch}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self._global_batch = int(state["global_batch"])
        self._indices = self._index_stream(self._global_batch * self.batch_size)

    def __next__(self):
        return self.collate([self.dataset[i] for i in self.next_indices()])

    def __iter__(self) -> "BatchStream":
        return self


def objective_at(step: int, forget_freq: int, retain_freq: int) -> str:
    """Objective of optimizer step ``step`` (0-based) under the alternating schedule."""
    return FORGET if step % (forget_freq + retain_freq) < forget_freq else RETAIN


def steps_per_epoch(num_forget: int, num_retain: int, batch_size: int, accumulation: int, world_size: int,
                    alternate: bool, forget_freq: int = 1, retain_freq: int = 1) -> int:
    """Optimizer steps per epoch, as the original computes them.

    Joint: one pass over the forget set.  Alternating: a pass over whichever set
    runs out first at its frequency, plus the interleaved steps of the other.
    """
    per_step = batch_size * accumulation * world_size
    if not alternate:
        return math.ceil(num_forget / per_step)
    if math.ceil(num_forget / forget_freq) <= math.ceil(num_retain / retain_freq):
        return int((1 + retain_freq / forget_freq) * math.ceil(num_forget / per_step))
    return int((1 + forget_freq / retain_freq) * math.ceil(num_retain / per_step))


class Schedule:
    """Yields ``(step, objective, micro_batches)`` for every optimizer step.

    ``streams`` maps objectives to :class:`BatchStream`; with one stream named
    ``joint`` (or ``train`` for plain fine-tuning) every step uses it, with
    ``forget`` and ``retain`` streams steps alternate by frequency.
    """

    def __init__(self, streams: Dict[str, BatchStream], max_steps: int, accumulation: int,
                 forget_freq: int = 1, retain_freq: int = 1) -> None:
        if accumulation < 1 or forget_freq < 1 or retain_freq < 1:
            raise ValueError("accumulation and frequencies must be >= 1")
        self.streams, self.max_steps, self.accumulation = streams, max_steps, accumulation
        self.forget_freq, self.retain_freq = forget_freq, retain_freq
        self.alternate = set(streams) == {FORGET, RETAIN}
        if not self.alternate and len(streams) != 1:
            raise ValueError("streams must be one stream or exactly 'forget' and 'retain'")

    def objective(self, step: int) -> str:
        if self.alternate:
            return objective_at(step, self.forget_freq, self.retain_freq)
        return next(iter(self.streams))

    def __len__(self) -> int:
        return self.max_steps

    def __iter__(self) -> Iterator[Tuple[int, str, list]]:
        return self.steps(0)

    def steps(self, start: int) -> Iterator[Tuple[int, str, list]]:
        """Steps ``start, ..., max_steps - 1``; the streams must be where step ``start`` reads
        (their :meth:`state_dict` is part of this schedule's)."""
        for step in range(start, self.max_steps):
            objective = self.objective(step)
            stream = self.streams[objective]
            yield step, objective, [next(stream) for _ in range(self.accumulation)]

    def state_dict(self) -> Dict[str, Dict[str, int]]:
        return {name: stream.state_dict() for name, stream in self.streams.items()}

    def load_state_dict(self, state: Dict[str, Dict[str, int]]) -> None:
        if set(state) != set(self.streams):
            raise ValueError(f"schedule streams {sorted(state)} differ from this run's {sorted(self.streams)}")
        for name, stream in self.streams.items():
            stream.load_state_dict(state[name])
