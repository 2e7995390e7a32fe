"""The typed, frozen settings of the DiT scripts, each built once from the parsed flags by its entry script.

``run.json`` (and the forgetting run's resume snapshots) record each config's
:meth:`~ImageGeneration.core.run_config.FlagRecord.record`, the flags as parsed (``--vb-loss`` as given;
the run's resolved value is in the metrics).  The flag groups they share are in
:mod:`ImageGeneration.core.run_config`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Tuple

from ImageGeneration.core.optim import forget_recipe
from ImageGeneration.core.run_config import (AmpFlags, FlagRecord, OptimFlags, RunControlFlags, SeedDeviceFlags,
                                              in_flag_order)
from ImageGeneration.DiT.unlearn import validate_spec


@dataclass(frozen=True, kw_only=True)
class DiTModelFlags(FlagRecord):
    """:func:`~ImageGeneration.DiT.dit.add_model_args` (without ``--transformer-path``)."""

    model: str
    ckpt: str
    vae: str


@dataclass(frozen=True, kw_only=True)
class VbFlags(FlagRecord):
    """:func:`~ImageGeneration.DiT.unlearn.add_vb_arg`."""

    vb_loss: Optional[bool]


@dataclass(frozen=True, kw_only=True)
class ForgetPathFlags(FlagRecord):
    """``main_forget.py``'s flags before the model's."""

    data_path: str
    results_dir: str


@dataclass(frozen=True, kw_only=True)
class ForgetFlags(FlagRecord):
    """``main_forget.py``'s own flags after the model's."""

    n_iters: int
    batch_size: int
    lr: float
    num_workers: int
    log_every: int
    ckpt_every: int
    snapshot_every: int
    forget_class: int
    mode: str
    method: str
    unlearn_loss: str
    grad_clip: float
    forget_alpha: float
    decay_forget_alpha: bool
    remain_alpha: float
    mask_path: Optional[str]


@dataclass(frozen=True, kw_only=True)
class DiTForgetRunConfig(*in_flag_order(ForgetPathFlags, DiTModelFlags, ForgetFlags, OptimFlags, AmpFlags, VbFlags,
                                        RunControlFlags, SeedDeviceFlags)):
    """One field per flag of ``DiT/main_forget.py`` (see ``--help``), in the parser's order."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DiTForgetRunConfig":
        """Check the method flags (:func:`~ImageGeneration.DiT.unlearn.validate_spec`) and ``--optim`` and
        freeze the flags; a flag without a field (or a field without a flag) is a ``TypeError``."""
        run = super().from_args(args)
        validate_spec(run)
        forget_recipe(run.optim, run.dual)
        return run


@dataclass(frozen=True, kw_only=True)
class MaskFlags(FlagRecord):
    """``generate_mask.py``'s flags before the model's."""

    method: str
    mask_path: str
    forget_class: Tuple[int, ...]
    thresholds: Tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class MaskDataFlags(FlagRecord):
    """``generate_mask.py``'s flags after the model's."""

    data_path: Optional[str]
    n_iters: int
    batch_size: int
    num_workers: int
    recompute: bool


@dataclass(frozen=True, kw_only=True)
class DiTMaskRunConfig(*in_flag_order(MaskFlags, DiTModelFlags, MaskDataFlags, VbFlags, SeedDeviceFlags)):
    """One field per flag of ``DiT/generate_mask.py``, in the parser's order."""


@dataclass(frozen=True, kw_only=True)
class SampleFlags(FlagRecord):
    """``sample.py``'s own flags, with :func:`~ImageGeneration.DiT.dit.add_model_args`' (``--transformer-path``
    falls between ``--ckpt`` and ``--vae`` there) and :meth:`~ImageGeneration.DiT.dit.DiTSampling.add_args`'."""

    model: str
    ckpt: str
    transformer_path: Optional[str]
    vae: str
    class_labels: Tuple[int, ...]
    n_samples_per_class: int
    batch_size: int
    cfg_scale: float
    num_sampling_steps: int
    sample_type: str
    cfg_channels: int
    eta: float
    sample_dir: str


@dataclass(frozen=True, kw_only=True)
class DiTSampleRunConfig(*in_flag_order(SampleFlags, SeedDeviceFlags)):
    """One field per flag of ``DiT/sample.py``, in the parser's order."""
