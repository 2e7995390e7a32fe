"""Learning-rate and loss-weight schedules shared by the modalities."""
from __future__ import annotations

import math

__all__ = ["cosine_decay"]


def cosine_decay(value: float, step: int, total: int) -> float:
    """``value * (1 + cos(pi * step / total)) / 2``: from ``value`` at step 0 to 0 at ``total``.

    SFR-on's decay of its forget-loss weight, in image classification
    (``--sfron_alpha``) and generation (``--decay_forget_alpha``).
    """
    return value * (1.0 + math.cos(math.pi * step / total)) / 2.0
