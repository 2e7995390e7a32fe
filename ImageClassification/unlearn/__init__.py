"""Image-classification unlearning methods, looked up by their ``--unlearn`` name.

Every method is called as ``method(loaders, model, config, mask, device)`` and
updates ``model`` in place:

* ``loaders`` -- :class:`~ImageClassification.data.UnlearnLoaders`;
* ``config`` -- the run's frozen :class:`~ImageClassification.config.UnlearnConfig`,
  one typed field per flag (general ones from
  :mod:`ImageClassification.arg_parser`, method ones from
  :mod:`ImageClassification.unlearn.args`); a method reads the fields it uses;
* ``mask`` -- optional saliency mask (``--mask_path``) or ``None``;
* ``device`` -- where batches go.
"""
from __future__ import annotations

from typing import Callable

from ImageClassification.data import UnlearnLoaders
from .registry import UNLEARN_METHODS
from . import boundary, finetune, fisher, prune, rl, scrub, sfron  # noqa: F401  (register the methods)

__all__ = ["UNLEARN_METHODS", "UnlearnLoaders", "get_unlearn_method"]


def get_unlearn_method(name: str) -> Callable[..., None]:
    """The method registered as ``--unlearn name``; unknown names are a one-line ``UsageError``."""
    return UNLEARN_METHODS.get(name)
