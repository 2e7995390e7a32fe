"""Data parallelism over the samples of each batch, for ``accelerate launch`` (or torchrun).

Every process reads the *same* global batch (same loader, same seed) and makes
the same random draws (augmentation, random labels, diffusion timesteps and
noise) -- every random draw of the loss happens on the global batch, exactly as
in a single process.  Only the network runs sharded: :meth:`SampleSharding.forward`
feeds each process its slice of the batch and all-gathers the outputs, keeping
the autograd graph of the local slice only.  Every process then evaluates the
loss on the full gathered output (so logged losses, batch-normalised weights
such as SFR-on's and every metric are global), backpropagates into its own
slice, and :meth:`SampleSharding.sync_gradients` sums the slices' gradients.
The summed gradient is the single-process gradient, so optimizer states (both
of DualOptim's) and weights stay identical on every process and equal to a
one-process run up to float summation order.

Batch norm.  A training-mode batch-norm layer run on a slice would normalise
with that slice's statistics.  With ``forward(..., global_batch_norm=True)``
every such layer normalises with the mean and variance of the whole global
batch instead (the statistics ``torch.nn.SyncBatchNorm`` computes, on any
device): one differentiable all-reduce per layer gathers the slices'
statistics, and its backward routes every slice's share of the gradient
back, so outputs, gradients and running statistics are those of one process.

Models.  :func:`shard_forward` makes a model's own ``forward`` sharded, so code
that just calls ``model(x)`` -- the image-classification methods -- runs
data-parallel unchanged (see there for which calls are split).

With one process every method is the identity: the single-process code path
and its random stream are untouched.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import types
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: A seed offset for the per-process generator of dropout inside the sharded network.
_FORWARD_SEED = 7919
#: The attribute under which :func:`shard_forward` keeps a model's sharding.
_SHARDING_ATTRIBUTE = "sample_sharding"
_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)


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

    def __deepcopy__(self, memo: dict) -> "SampleSharding":
        # The processes of a launch, not data: a copied model (SCRUB's teacher) runs under the same ones.
        return self

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

    def print_on_main_only(self) -> None:
        """Send the stdout of every process but the main one to ``os.devnull``, so printed logs and
        result lines appear once; stderr stays, so an error on any process shows."""
        if not self.is_main:
            sys.stdout = open(os.devnull, "w")

    def forward(self, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor,
                global_batch_norm: bool = False) -> torch.Tensor:
        """``fn(*inputs)`` on the whole batch, computed as this process's slice plus the others' outputs.

        Gradients flow into the local slice only; :meth:`sync_gradients` adds the rest.
        ``global_batch_norm``: training-mode batch norm inside ``fn`` normalises over the
        whole batch (see the module docstring); without it, over the local slice.
        A batch of fewer samples than processes is computed whole on every process,
        its gradient scaled to count once in the sum (:meth:`replicated`).
        """
        if not self.active:
            return fn(*inputs)
        n = inputs[0].shape[0]
        if n < self.world:
            return self.replicated(fn(*inputs))
        sizes = [len(part) for part in torch.arange(n).tensor_split(self.world)]
        start = sum(sizes[:self.rank])
        local_inputs = [x[start:start + sizes[self.rank]] for x in inputs]
        devices = [inputs[0].device] if inputs[0].device.type == "cuda" else []
        statistics = GlobalBatchStatistics(self.world, self.rank) if global_batch_norm else contextlib.nullcontext()
        with torch.random.fork_rng(devices=devices), statistics:
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
        if not self.active or not term.requires_grad:
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


#: The sharding of a model :func:`shard_forward` was not applied to.
ONE_PROCESS = SampleSharding()


class SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over the processes the same way:
    every process then holds the gradient that all processes' uses of the sum send back."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total)
        return total


class GlobalBatchStatistics(TorchFunctionMode):
    """While active, training-mode ``F.batch_norm`` (every ``nn.BatchNorm*d`` layer) normalises this
    process's slice with the mean and (biased) variance of all processes' slices together, and
    updates the running statistics with them as one process would (unbiased variance).

    Each process contributes one row ``(count, mean, variance)`` of its slice to a summed
    all-reduce (the other rows zero); the rows combine exactly into the statistics of the
    whole batch.  The all-reduce is differentiable -- its backward sums the rows' gradients
    over the processes -- so each slice receives the gradient through the statistics that
    every slice's outputs send back, as in one process.
    """

    def __init__(self, world: int, rank: int) -> None:
        super().__init__()
        self.world, self.rank = world, rank

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            call = _BATCH_NORM_SIGNATURE.bind(*args, **kwargs)
            call.apply_defaults()
            if call.arguments["training"]:
                return self.batch_norm(**call.arguments)
        return func(*args, **kwargs)

    def batch_norm(self, input: torch.Tensor, running_mean, running_var, weight, bias, training: bool,
                   momentum: float, eps: float) -> torch.Tensor:
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        variance, mean = torch.var_mean(input, dim=dims, correction=0)
        count = torch.full_like(mean[:1], input.numel() // channels)
        row = torch.cat([count, mean, variance])[None]
        rows = SumOverProcesses.apply(F.pad(row, (0, 0, self.rank, self.world - self.rank - 1)))
        counts, means, variances = rows.split([1, channels, channels], dim=1)
        total = counts.sum()
        batch_mean = (counts * means).sum(0) / total
        batch_var = (counts * (variances + (means - batch_mean) ** 2)).sum(0) / total
        with torch.no_grad():
            if running_mean is not None:
                running_mean.lerp_(batch_mean, momentum)
            if running_var is not None:
                running_var.lerp_(batch_var * total / (total - 1), momentum)
        scale = torch.rsqrt(batch_var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -batch_mean * scale
        if bias is not None:
            shift = shift + bias
        shape = [1, channels] + [1] * (input.dim() - 2)
        return torch.addcmul(shift.view(shape), input, scale.view(shape))


def shard_forward(model: nn.Module, sharding: SampleSharding) -> nn.Module:
    """Make ``model(x)`` run data-parallel under ``sharding``, in place; returns ``model``.

    Which calls are split over the processes (:meth:`SampleSharding.forward`, batch norm over
    the global batch when the model has any):

    * training mode -- training steps: the caller backpropagates a loss of the gathered output and
      sums the gradients with :meth:`SampleSharding.sync_gradients`;
    * under ``torch.no_grad()`` -- evaluation and teacher outputs: pure functions of the batch.

    An eval-mode call with autograd on (saliency and Fisher passes, FGSM steps) may
    differentiate single samples or the inputs, so every process computes it whole and gets
    the one-process result, gradients included, without any communication.

    Copies of the model (``copy.deepcopy``) run under the same sharding; the state dict is
    unchanged.  With one process the model is left as it is.
    """
    if not sharding.active:
        return model
    setattr(model, _SHARDING_ATTRIBUTE, sharding)
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # An instance attribute bound to the model: a deep copy rebinds it to the copy.
    model.forward = types.MethodType(functools.partial(_forward_over_samples, global_batch_norm=has_batch_norm),
                                     model)
    return model


def _forward_over_samples(model: nn.Module, *inputs: torch.Tensor, global_batch_norm: bool) -> torch.Tensor:
    forward = type(model).forward.__get__(model)
    if not model.training and torch.is_grad_enabled():
        return forward(*inputs)
    return sharding_of(model).forward(forward, *inputs, global_batch_norm=global_batch_norm)


def sharding_of(model: nn.Module) -> SampleSharding:
    """The sharding ``model`` runs under (:func:`shard_forward`); :data:`ONE_PROCESS` if none."""
    return getattr(model, _SHARDING_ATTRIBUTE, ONE_PROCESS)
