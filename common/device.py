"""Device selection: CUDA when present, CPU otherwise, overridable from the command line."""
from __future__ import annotations

import argparse
from typing import Optional, Union

import torch

from common.errors import UsageError


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) and the research code's ``--gpu`` index."""
    parser.add_argument("--device", type=str, default=None,
                        help="torch device to run on (default: cuda if available, else cpu)")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device index when --device is not given")


def get_device(device: Optional[Union[str, torch.device]] = None, gpu: Optional[int] = 0) -> torch.device:
    """Resolve the device for a run.

    ``device`` wins when given; otherwise ``cuda:<gpu>`` if CUDA is available, else ``cpu``.
    Asking for CUDA on a machine without it is a :class:`UsageError`, not a late crash.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", gpu or 0)
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"--device {device!r}: not a torch device ({err})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        index = resolved.index if resolved.index is not None else (gpu or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    if resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {device}: MPS is not available on this machine")
    return resolved
