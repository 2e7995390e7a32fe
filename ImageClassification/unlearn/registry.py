"""The ``--unlearn`` registry every method module registers into."""
from __future__ import annotations

from dualoptim.registry import Registry

#: ``--unlearn`` name -> ``method(loaders, model, config, mask, device) -> None``.
UNLEARN_METHODS = Registry("--unlearn")

#: The methods that train the model as constructed and read no ``--model_path`` (LoRA and saliency masks,
#: which start from an original model, refuse or replace them).
RETRAIN_METHODS = ("retrain", "retrain_sam")
