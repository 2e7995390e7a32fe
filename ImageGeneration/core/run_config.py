"""The frozen run configs of the image-generation scripts, and the flag groups they share.

Every entry script (``DDPM/run_config.py``, ``DiT/run_config.py``) freezes its parsed flags once, with
:meth:`FlagRecord.from_args`, into a ``@dataclass(frozen=True, kw_only=True)`` holding one field per flag in
the parser's order; the script reads that object from then on, and ``run.json``, the tracker and the resume
snapshots record :meth:`FlagRecord.record`.

The fields of a flag helper several scripts call (:func:`~ImageGeneration.core.runs.parse_run_args`,
:func:`~ImageGeneration.core.optim.add_optim_args`, ...) are declared once, in a flag group: a frozen
dataclass of those fields alone.  A script's config inherits its groups, and its own flags as groups of their
own, listed with :func:`in_flag_order`: a dataclass lays out its bases' fields in reverse method resolution
order, so the bases are given reversed for the fields -- and the record's keys -- to follow the parser.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ImageGeneration.core.optim import forget_recipe


@dataclass(frozen=True, kw_only=True)
class FlagRecord:
    """What every run config and flag group does: freeze parsed flags, and record them."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, **resolved: Any):
        """Freeze the parsed flags, with the values the script ``resolved`` in place of those given
        (``dataset=`` the checkpoint's, ...); a list-valued flag (``nargs``) becomes a tuple.

        A flag without a field (or a field without a flag) is a ``TypeError``: a new flag gets its field.
        """
        values = {**vars(args), **resolved}
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})

    def record(self) -> Dict[str, Any]:
        """The settings as ``run.json``, the tracker and the resume snapshots record them, in the parser's
        order (a list-valued flag as the list argparse gave)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


def in_flag_order(*groups: type) -> Tuple[type, ...]:
    """The bases of a run config whose fields are ``groups``' in the order given (the parser's)."""
    return tuple(reversed(groups))


@dataclass(frozen=True, kw_only=True)
class SeedDeviceFlags(FlagRecord):
    """:func:`~ImageGeneration.core.runs.parse_run_args`: every script's last flags."""

    seed: int
    deterministic: bool
    device: Optional[str]
    gpu: int
    trust_checkpoint: bool


@dataclass(frozen=True, kw_only=True)
class RunControlFlags(FlagRecord):
    """``add_resume_args(overwrite=False)``, ``add_nonfinite_args`` and ``add_report_args``, in this order: the
    training and forgetting scripts' ``--resume``, non-finite loss policy and tracker."""

    resume: bool
    allow_nonfinite: bool
    report_to: str
    logging_steps: int


@dataclass(frozen=True, kw_only=True)
class OptimFlags(FlagRecord):
    """:func:`~ImageGeneration.core.optim.add_optim_args`: the optimizer recipe of a forgetting run."""

    optim: Optional[str]
    dual: bool
    forget_lr: float

    @property
    def recipe(self) -> str:
        """The optimizer recipe ``--optim`` / ``--dual`` name (:func:`~ImageGeneration.core.optim.forget_recipe`)."""
        return forget_recipe(self.optim, self.dual)


@dataclass(frozen=True, kw_only=True)
class AmpFlags(FlagRecord):
    """:func:`common.precision.add_amp_args`."""

    amp: bool
    amp_dtype: str
