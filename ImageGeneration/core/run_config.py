"""What the frozen run configs of the image-generation scripts share (``DDPM/run_config.py``, ``DiT/run_config.py``).

Each script's config is a ``@dataclass(frozen=True, kw_only=True)`` subclass of :class:`ForgetFlags` with one
field per flag in the parser's order, built once by the entry script.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from ImageGeneration.core.optim import forget_recipe


class ForgetFlags:
    """The record and the optimizer recipe of a forgetting run's frozen flags (``optim`` and ``dual`` fields)."""

    optim: Any
    dual: bool

    @property
    def recipe(self) -> str:
        """The optimizer recipe ``--optim`` / ``--dual`` name (:func:`~ImageGeneration.core.optim.forget_recipe`)."""
        return forget_recipe(self.optim, self.dual)

    def record(self) -> Dict[str, Any]:
        """The settings as ``run.json``, the tracker and the resume snapshots record them, in the parser's order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
