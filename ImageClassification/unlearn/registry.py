"""The ``--unlearn`` registry every method module registers into."""
from __future__ import annotations

from dualoptim.registry import Registry

#: ``--unlearn`` name -> ``method(loaders, model, config, mask, device) -> None``.
UNLEARN_METHODS = Registry("--unlearn")
