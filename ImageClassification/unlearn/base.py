"""Types shared by the unlearning methods and the pipeline that calls them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch.utils.data import DataLoader


@dataclass
class UnlearnLoaders:
    """The loaders of one unlearning run.

    ``forget_loader`` and ``retain_loader`` partition the training set and
    yield ``(image, true_label)`` with training-time augmentation; the forget
    labels are the original ones (methods that relabel, such as RL, do so
    themselves).  ``val_loader`` and ``test_loader`` are evaluation loaders.
    """

    forget_loader: DataLoader
    retain_loader: DataLoader
    test_loader: DataLoader
    num_classes: int
    val_loader: Optional[DataLoader] = None
