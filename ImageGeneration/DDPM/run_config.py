"""The typed, frozen settings of the DDPM scripts, each built once from the parsed flags by its entry script.

The YAML config (``--config``, :mod:`ImageGeneration.DDPM.config`) holds the network, diffusion and
optimizer settings; these hold the flags (:mod:`ImageGeneration.core.run_config`).  ``run.json`` (and the
resume snapshots) record each config's :meth:`~ImageGeneration.core.run_config.FlagRecord.record`: the flags
as parsed, with the values the script settles in place of those given (``--dataset`` settled on the
checkpoint's or the YAML config's, ``generate_mask.py``'s ``--mode`` on the statistics it computes,
``main_forget.py``'s ``--unlearn_loss`` completed from the method table).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Tuple

from common.errors import UsageError
from ImageGeneration.core.diffusion import FORGET_LOSSES
from ImageGeneration.core.methods import METHODS, MethodEntry
from ImageGeneration.core.optim import forget_recipe
from ImageGeneration.core.run_config import (AmpFlags, FlagRecord, OptimFlags, RunControlFlags, SeedDeviceFlags,
                                              in_flag_order)


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
class DataFlags(FlagRecord):
    """:func:`~ImageGeneration.DDPM.data.add_data_args`."""

    dataset: Optional[str]        # resolved by the scripts that read a checkpoint or a training config
    data_path: Optional[str]


@dataclass(frozen=True, kw_only=True)
class ForgetFlags(FlagRecord):
    """``main_forget.py``'s own flags."""

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


@dataclass(frozen=True, kw_only=True)
class ForgetRunConfig(*in_flag_order(ForgetFlags, OptimFlags, AmpFlags, DataFlags, RunControlFlags,
                                     SeedDeviceFlags)):
    """One field per flag of ``main_forget.py`` (see ``--help``), in the parser's order; ``dataset`` is the
    checkpoint's."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, dataset: str) -> "ForgetRunConfig":
        """Check (:func:`check_method_flags`), complete and freeze the flags; ``dataset`` is the checkpoint's.

        A flag without a field (or a field without a flag) is a ``TypeError``: a new flag gets its field here.
        """
        check_method_flags(args)
        return super().from_args(args, dataset=dataset,
                                 unlearn_loss=args.unlearn_loss or METHODS.get(args.mode).loss)

    @property
    def method_entry(self) -> MethodEntry:
        """The ``--mode`` method's table entry."""
        return METHODS.get(self.mode)


@dataclass(frozen=True, kw_only=True)
class TrainFlags(FlagRecord):
    """``main_train.py``'s own flags."""

    exp_root: str
    config: Optional[str]
    mode: str
    label_to_forget: int


@dataclass(frozen=True, kw_only=True)
class TrainRunConfig(*in_flag_order(TrainFlags, DataFlags, RunControlFlags, SeedDeviceFlags)):
    """One field per flag of ``main_train.py``, in the parser's order; ``dataset`` is the YAML config's
    (``--dataset`` when given)."""


@dataclass(frozen=True, kw_only=True)
class MaskFlags(FlagRecord):
    """``generate_mask.py``'s own flags."""

    mode: str                     # resolved: the default for --ckpt_folder, the research code's names mapped
    ckpt_folder: str
    config: Optional[str]
    label_to_forget: int
    threshold: Optional[Tuple[float, ...]]
    cond_scale: float
    fim_timesteps: Optional[int]
    n_chunks: int
    save_dir: Optional[str]


@dataclass(frozen=True, kw_only=True)
class MaskRunConfig(*in_flag_order(MaskFlags, DataFlags, SeedDeviceFlags)):
    """One field per flag of ``generate_mask.py``, in the parser's order; ``dataset`` is the checkpoint's when
    one is read (as given when stored Fisher diagonals are thresholded again)."""


@dataclass(frozen=True, kw_only=True)
class SampleFlags(FlagRecord):
    """``sample.py``'s own flags."""

    config: Optional[str]
    dataset: str                  # resolved: the checkpoint's
    ckpt_folder: str
    mode: str
    classes_to_generate: Optional[str]
    n_samples_per_class: int
    cond_scale: float
    sample_type: str
    timesteps: int
    eta: float


@dataclass(frozen=True, kw_only=True)
class SampleRunConfig(*in_flag_order(SampleFlags, SeedDeviceFlags)):
    """One field per flag of ``sample.py``, in the parser's order; ``dataset`` is the checkpoint's."""


@dataclass(frozen=True, kw_only=True)
class JudgeFlags(FlagRecord):
    """``train_classifier.py``'s own flags."""

    arch: Optional[str]
    image_size: Optional[int]
    pretrained_weights: Optional[str]
    from_scratch: bool
    lr: Optional[float]
    batch_size: int
    n_epochs: int
    save_dir: str
    allow_nonfinite: bool


@dataclass(frozen=True, kw_only=True)
class JudgeRunConfig(*in_flag_order(DataFlags, JudgeFlags, SeedDeviceFlags)):
    """One field per flag of ``train_classifier.py``, in the parser's order; ``dataset`` defaults to digits."""
