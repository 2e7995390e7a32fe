"""Mixed precision, one way for every modality: float32 weights and optimizer state, low-precision compute.

A run's :class:`MixedPrecision` is the context its forward passes (model and loss) run under and the
loss scaler its backward passes and optimizer steps go through:

* ``float32``: autocast off, scaler off -- every call is the plain float32 one.
* ``bfloat16``: ``torch.autocast`` in bfloat16, no scaler. bfloat16 has float32's exponent range, so
  gradients do not underflow; this is what the original LLM code runs (Hugging Face ``Trainer`` with
  ``bf16=True``).
* ``float16``: ``torch.autocast`` in float16 plus a ``torch.amp.GradScaler``: each loss is multiplied by
  a scale ``S`` before its backward pass, the gradients are divided by ``S`` before clipping and the
  step (``unscale_``), a step whose gradients hold an inf/NaN is skipped and ``S`` halved, and ``S``
  doubles after 2000 clean steps.

The weights stay in float32 in every case.  Why it matters: an Adam update moves a weight ``w`` by
about ``lr`` (``m / sqrt(v)`` is of order one), and a ``p``-bit-mantissa float can only move ``w`` by
multiples of ``ulp(w) = 2**(floor(log2|w|) - p)``; a change below ``ulp(w) / 2`` rounds back to ``w``.
In bfloat16 (``p = 7``) a weight of size 0.02 has ``ulp = 2**-13 ~ 1.2e-4``, so an update of
``lr = 1e-5`` is lost.  Measured (``tests/LLM/test_precision.py``, 20 ``dual_adam`` steps at lr 1e-5 on a
2-layer Llama at init scale 0.02): 11.4% of the weight-matrix entries ever change with bfloat16 weights,
99.9% with float32 weights under bfloat16 autocast (``tests/common/test_mixed_precision.py`` checks the same
on one matrix).
Pure low-precision weights are therefore only behind a flag that says so (the LLM's
``--low_precision_weights``).

:func:`check_precision` validates a device/dtype pair up front and raises a one-line
:class:`~common.errors.UsageError` naming the flag, never falls back silently.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Union

import torch

from common.errors import UsageError

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_amp_args(parser: argparse.ArgumentParser) -> None:
    """``--amp`` and ``--amp_dtype`` (the image modalities' mixed precision flags; ``parser`` may be a group)."""
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: float32 weights and optimizer state, forward passes under "
                             "torch.autocast in --amp_dtype")
    parser.add_argument("--amp_dtype", default="bfloat16", choices=("bfloat16", "float16"),
                        help="--amp precision; float16 adds a GradScaler (loss scaling, overflowed steps skipped)")


def amp_precision(amp: bool, amp_dtype: str) -> str:
    """The :data:`PRECISIONS` name of ``--amp`` / ``--amp_dtype``: ``amp_dtype`` with ``--amp``, else float32."""
    return amp_dtype if amp else "float32"


def check_precision(device: Union[str, torch.device], dtype: str, flag: str) -> None:
    """Refuse a precision the device cannot compute in, naming ``flag`` (e.g. ``--amp_dtype``).

    bfloat16 on CUDA needs compute capability 8.0 (Ampere) or newer for its matmuls; float16 and
    bfloat16 autocast on CPU need a torch whose CPU autocast supports them.
    """
    if dtype not in PRECISIONS:
        raise UsageError(f"{flag} {dtype}: expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if dtype == "float32":
        return
    # (a CUDA device on a machine without one is refused where --device is resolved: common.device)
    if (device.type == "cuda" and dtype == "bfloat16" and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        name = torch.cuda.get_device_name(device)
        raise UsageError(f"{flag} bfloat16: {name} has no native bfloat16 (needs compute capability >= 8.0); "
                         f"use float16")
    if not torch.amp.is_autocast_available(device.type):
        raise UsageError(f"{flag} {dtype}: torch has no autocast on {device.type}; use float32")


class MixedPrecision:
    """The autocast context and loss scaler of one run (see the module docstring).

    Args:
        device: where the run computes.
        dtype: a :data:`PRECISIONS` name; ``float32`` turns both off.
        flag: the flag ``dtype`` came from, for the error of :func:`check_precision`.
        scaler: whether float16 gets this object's own ``GradScaler``; ``False`` when something else
            (``accelerate``'s mixed precision) already scales the loss.
    """

    def __init__(self, device: Union[str, torch.device], dtype: str = "float32", flag: str = "--amp_dtype",
                 scaler: bool = True) -> None:
        check_precision(device, dtype, flag)
        self.device = torch.device(device)
        self.name = dtype
        self.dtype = PRECISIONS[dtype]
        self.enabled = dtype != "float32"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaler and dtype == "float16")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of a forward pass: ``torch.autocast`` in this precision (a no-op under float32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current loss scale (``loss`` itself unless float16)."""
        return self.scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the loss scale (before clipping); once per step."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` unless the float16 gradients overflowed, then adjust the scale."""
        self.scaler.step(optimizer)
        self.scaler.update()
