"""The typed, frozen settings of a DiT forgetting run (``DiT/main_forget.py``), built once from the parsed flags.

``run.json`` and the resume snapshots record :meth:`DiTForgetRunConfig.record`, the flags as parsed
(``--vb-loss`` as given; the run's resolved value is in the metrics).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from ImageGeneration.core.optim import forget_recipe
from ImageGeneration.core.run_config import ForgetFlags
from ImageGeneration.DiT.unlearn import validate_spec


@dataclass(frozen=True, kw_only=True)
class DiTForgetRunConfig(ForgetFlags):
    """One field per flag of ``DiT/main_forget.py`` (see ``--help``), in the parser's order."""

    data_path: str
    results_dir: str
    model: str
    ckpt: str
    vae: str
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
    optim: Optional[str]
    dual: bool
    forget_lr: float
    amp: bool
    amp_dtype: str
    vb_loss: Optional[bool]
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
    def from_args(cls, args: argparse.Namespace) -> "DiTForgetRunConfig":
        """Check the method flags (:func:`~ImageGeneration.DiT.unlearn.validate_spec`) and ``--optim`` and
        freeze the flags; a flag without a field (or a field without a flag) is a ``TypeError``."""
        run = cls(**vars(args))
        validate_spec(run)
        forget_recipe(run.optim, run.dual)
        return run
