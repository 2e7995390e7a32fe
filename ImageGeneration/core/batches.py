"""The endless batch stream of every diffusion training and forgetting loop."""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Tuple

import torch

Batch = Tuple[torch.Tensor, torch.Tensor]


class BatchStream:
    """Endless ``(inputs, labels)`` batches: those of ``batches`` put into model space by ``prepare``.

    ``prepare(x, c)`` moves a loader batch to the device and transforms it (the DDPM's
    ``[-1, 1]`` images with optional flips, the DiT's VAE latents).  The stream's position
    is that of ``batches`` (an :class:`~common.checkpointing.EndlessLoader`), so it can be
    registered with resume snapshots.
    """

    def __init__(self, batches: Iterator[Batch], prepare: Callable[[torch.Tensor, torch.Tensor], Batch]) -> None:
        self.batches, self.prepare = batches, prepare

    def next(self) -> Batch:
        return self.prepare(*next(self.batches))

    def state_dict(self) -> Dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.batches.load_state_dict(state)
