"""SFR-on's forget/remain Fisher-ratio masks (SalUn's top-fraction masks live in :mod:`common.saliency`)."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping

import torch


def fisher_ratio_masks(forget_fisher: Mapping[str, torch.Tensor], remain_fisher: Mapping[str, torch.Tensor],
                       thresholds: Iterable[float]) -> Dict[float, Dict[str, torch.Tensor]]:
    """SFR-on's masks: keep a weight where ``(F_forget + 1e-15) / (F_remain + 1e-15) >= threshold``."""
    ratios = {name: (forget_fisher[name] + 1e-15) / (remain_fisher[name] + 1e-15) for name in forget_fisher}
    return {threshold: {name: (ratio >= threshold).float() for name, ratio in ratios.items()}
            for threshold in thresholds}
