"""Stop a training or unlearning run whose loss is no longer a finite number.

A NaN or infinite loss (a learning rate far too large, a diverging ascent
objective) poisons every weight at the next optimizer step, and every step
after it trains on garbage.  Every loop of the toolkit calls
:func:`check_finite_loss` on each loss before its backward pass and optimizer
step, so the run ends with one line naming the step, the objective and its
learning rate, before that step changes anything: its last resume snapshot
(written after an earlier step) stays as it was and no finished result is
written.  ``--allow_nonfinite`` skips the check (the loops then behave as the
research code's, which never checks).

The check costs one device-to-host synchronisation per loss.
"""
from __future__ import annotations

import argparse
from typing import Union

import torch

from common.errors import UsageError

ALLOW_FLAG = "--allow_nonfinite"


class NonFiniteLoss(UsageError):
    """A loss became NaN or infinite; the run stopped before the step that would have used it."""


def add_nonfinite_args(parser: argparse.ArgumentParser) -> None:
    """``--allow_nonfinite``: keep training through NaN/inf losses instead of stopping."""
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="keep going when a loss becomes NaN or inf (default: stop with one line naming the "
                             "step, objective and learning rate, keeping the last resume snapshot)")


def check_finite_loss(loss: Union[torch.Tensor, float], step: int, objective: str, lr: float,
                      allow: bool = False) -> None:
    """Raise :class:`NonFiniteLoss` if ``loss`` is NaN or infinite (unless ``allow``).

    Args:
        loss: the loss about to be backpropagated (any shape; every element is checked).
        step: the 1-based optimizer step it belongs to.
        objective: ``forget``, ``retain``, ``train``, ... -- the objective whose optimizer would step.
        lr: that optimizer's current learning rate.
        allow: ``--allow_nonfinite``: never raise.
    """
    if allow:
        return
    loss = torch.as_tensor(loss).detach()
    if bool(torch.isfinite(loss).all()):
        return
    value = loss.float().flatten()[~torch.isfinite(loss.float().flatten())][0].item()
    raise NonFiniteLoss(f"the {objective} loss is {value} at step {step} (lr {float(lr):g}): the run stopped "
                        f"before that step; its last resume snapshot is kept and no result was written (lower "
                        f"the learning rate, resume with --resume, or pass {ALLOW_FLAG} to keep going)")
