"""The typed, frozen settings of a DDPM forgetting run (``main_forget.py``), built once from the parsed flags.

The YAML config (``--config``, :mod:`ImageGeneration.DDPM.config`) holds the network, diffusion and
optimizer settings; this holds the flags.  ``run.json`` and the resume snapshots record
:meth:`ForgetRunConfig.record`, the flags as parsed with ``--unlearn_loss`` completed from the method
table and ``--dataset`` settled on the checkpoint's.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from common.errors import UsageError
from ImageGeneration.core.diffusion import FORGET_LOSSES
from ImageGeneration.core.methods import METHODS, MethodEntry
from ImageGeneration.core.optim import forget_recipe
from ImageGeneration.core.run_config import ForgetFlags


def check_method_flags(args: argparse.Namespace) -> None:
    """``--mode``, ``--unlearn_loss``, ``--method`` and ``--optim`` against the method table and the recipes,
    before anything is loaded."""
    if args.mode not in METHODS:
        raise UsageError(f"--mode {args.mode!r}: expected one of {', '.join(METHODS)}")
    method = METHODS.get(args.mode)
    if method.reads_loss:
        FORGET_LOSSES.get(args.unlearn_loss or method.loss)
    if method.update_methods and args.method not in method.update_methods:
        raise UsageError(f"--method {args.method!r}: expected one of {', '.join(method.update_methods)}")
    forget_recipe(args.optim, args.dual)


@dataclass(frozen=True, kw_only=True)
class ForgetRunConfig(ForgetFlags):
    """One field per flag of ``main_forget.py`` (see ``--help``), in the parser's order."""

    exp_root: str
    config: Optional[str]
    ckpt_folder: str
    mode: str
    label_to_forget: int
    forget_alpha: float
    decay_forget_alpha: bool
    remain_alpha: float
    unlearn_loss: str             # resolved: the method's loss unless given
    method: str
    mask_path: Optional[str]
    keep_snapshots: bool
    optim: Optional[str]
    dual: bool
    forget_lr: float
    amp: bool
    amp_dtype: str
    dataset: str                  # resolved: the checkpoint's
    data_path: Optional[str]
    resume: bool
    allow_nonfinite: bool
    report_to: str
    logging_steps: int
    seed: int
    deterministic: bool
    device: Optional[str]
    gpu: int
    trust_checkpoint: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, dataset: str) -> "ForgetRunConfig":
        """Check (:func:`check_method_flags`), complete and freeze the flags; ``dataset`` is the checkpoint's.

        A flag without a field (or a field without a flag) is a ``TypeError``: a new flag gets its field here.
        """
        check_method_flags(args)
        return cls(**{**vars(args), "dataset": dataset,
                      "unlearn_loss": args.unlearn_loss or METHODS.get(args.mode).loss})

    @property
    def method_entry(self) -> MethodEntry:
        """The ``--mode`` method's table entry."""
        return METHODS.get(self.mode)
