"""Multi-process (``accelerate launch``) training and unlearning of the pixel diffusion models.

Every process reads the *same* global batch (same loader, same seed) and draws
the same timesteps, noise and label drops -- every random draw of the loss
happens on the global batch, exactly as in a single process.  Only the
network runs sharded: :meth:`SampleSharding.forward` feeds each process its
slice of the batch and all-gathers the outputs, keeping the autograd graph
of the local slice only.  Every process then evaluates the loss on the full
gathered output (so logged losses, SFR-on's batch-normalised adaptive
weights and every metric are global), backpropagates into its own slice,
and :meth:`SampleSharding.sync_gradients` sums the slices' gradients.  The
summed gradient is the single-process gradient, so optimizer states (both
of DualOptim's) and weights stay identical on every process and equal to a
one-process run up to float summation order.

With one process every method is the identity: the single-process code path
and its random stream are untouched.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

#: A seed offset for the per-process generator of dropout inside the sharded network.
_FORWARD_SEED = 7919


def launched_processes() -> int:
    """How many processes ``accelerate launch`` (or torchrun) started; 1 for a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class SampleSharding:
    """Data parallelism over the samples of each batch; see the module docstring.

    ``accelerator`` is an ``accelerate.Accelerator`` (``None``: one process).
    """

    def __init__(self, accelerator: Any = None, seed: int = 0) -> None:
        self.accelerator = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        # Random draws inside the network (dropout) differ in size per slice; they come from a
        # generator of their own so that the shared stream stays in step on every process.
        self.forward_generator = torch.Generator().manual_seed(seed * _FORWARD_SEED + self.rank)

    @classmethod
    def from_launch(cls, device: torch.device, seed: int) -> "SampleSharding":
        """One process: the trivial sharding.  Under ``accelerate launch``: an ``Accelerator``
        on ``device``'s kind (``--device cpu`` gives gloo processes on the CPU)."""
        if launched_processes() <= 1:
            return cls(None, seed)
        from accelerate import Accelerator

        return cls(Accelerator(cpu=device.type == "cpu"), seed)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files, logs and shows progress bars."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device of this process: ``requested`` alone, the accelerator's under a launch."""
        return self.accelerator.device if self.active else requested

    def _sizes(self, n: int) -> list:
        if n < self.world:
            raise ValueError(f"a batch of {n} samples cannot be split over {self.world} processes; "
                             "use a batch size of at least the number of processes")
        return [len(part) for part in torch.arange(n).tensor_split(self.world)]

    def forward(self, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        """``fn(*inputs)`` on the whole batch, computed as this process's slice plus the others' outputs.

        Gradients flow into the local slice only; :meth:`sync_gradients` adds the rest.
        """
        if not self.active:
            return fn(*inputs)
        sizes = self._sizes(inputs[0].shape[0])
        start = sum(sizes[:self.rank])
        local_inputs = [x[start:start + sizes[self.rank]] for x in inputs]
        devices = [inputs[0].device] if inputs[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=self.forward_generator)))
            local = fn(*local_inputs)
        longest = max(sizes)
        padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[:len(local)] = local.detach()
        gathered = self.accelerator.gather(padded).split(longest)
        parts = [local if i == self.rank else gathered[i][:size] for i, size in enumerate(sizes)]
        return torch.cat(parts)

    def sync_gradients(self, model: nn.Module) -> None:
        """Sum every parameter's gradient over the processes (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        total = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
        for grad, summed in zip(grads, total.split([g.numel() for g in grads])):
            grad.copy_(summed.view_as(grad))

    def replicated(self, term: torch.Tensor) -> torch.Tensor:
        """A loss term every process computes in full (e.g. a penalty on the weights alone): same value,
        gradient divided by the number of processes so that :meth:`sync_gradients` counts it once."""
        if not self.active:
            return term
        return term / self.world + (term - term / self.world).detach()

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every process (e.g. the run folder it created)."""
        if not self.active:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def barrier(self) -> None:
        if self.active:
            self.accelerator.wait_for_everyone()
