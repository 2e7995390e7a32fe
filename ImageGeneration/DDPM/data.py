"""Training data of the DDPM pipeline: digits (embedded) or CIFAR-10 (ImageFolder tree or zip)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.checkpointing import resumable_loader
from common.datasets import load_digits_arrays, load_imagefolder_arrays
from common.errors import UsageError
from ImageGeneration.core.images import load_image_folder

DATASETS = ("digits", "cifar10")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=str, default=None, choices=DATASETS,
                        help="digits: scikit-learn digits at 16x16 (embedded, CPU-sized); cifar10: --data_path "
                             "(default: the checkpoint's dataset; for training the config's, else digits)")
    parser.add_argument("--data_path", type=str, default=None,
                        help="CIFAR-10 as an ImageFolder tree or zip (train/<class>/*.jpg)")


def load_arrays(dataset: str, data_path: Optional[str], split: str, image_size: int,
                channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, H, W, C)`` and int64 labels of one split."""
    if dataset == "digits":
        train_x, train_y, test_x, test_y = load_digits_arrays(image_size=image_size, channels=channels)
        return (train_x, train_y) if split == "train" else (test_x, test_y)
    if dataset == "cifar10":
        if not data_path:
            raise UsageError("--data_path: required for --dataset cifar10, an ImageFolder tree or zip "
                             "(train/<class>/*.jpg)")
        x, y, _ = load_imagefolder_arrays(data_path, split, flag="--data_path")
        if x.shape[1] != image_size or x.shape[3] != channels:
            raise UsageError(f"--data_path {data_path}: images are {x.shape[1]}x{x.shape[2]}x{x.shape[3]}, "
                             f"the config expects {image_size}x{image_size}x{channels}")
        return x, y
    raise UsageError(f"--dataset {dataset!r}: expected digits or cifar10")


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                shuffle: bool = True) -> DataLoader:
    """An in-memory loader of ``(images in [0, 1], labels)``.

    A :func:`~common.checkpointing.resumable_loader`: the order of pass ``p``
    depends on ``(seed, p)`` only, so an :class:`~common.checkpointing.EndlessLoader`
    over it can resume mid-pass.
    """
    dataset = TensorDataset(to_unit_tensor(images), torch.as_tensor(labels, dtype=torch.long))
    return resumable_loader(dataset, min(batch_size, len(dataset)), seed, shuffle=shuffle)


def split_forget(images: np.ndarray, labels: np.ndarray, label_to_forget: int):
    """``(remain_x, remain_y), (forget_x, forget_y)`` for one class to forget."""
    forget = labels == label_to_forget
    if not forget.any():
        raise UsageError(f"--label_to_forget {label_to_forget}: the training data has no image of this class")
    return (images[~forget], labels[~forget]), (images[forget], labels[forget])


def random_flip(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 (the configs' ``random_flip``)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def load_class_samples(ckpt_folder: Path, ckpt_config, missing: str, exclude: Optional[int] = None):
    """The model's own samples ``<ckpt_folder>/class_samples/<label>/`` of every class but ``exclude``.

    Returns ``(images, labels)`` arrays; with no such folder, fails with ``--ckpt_folder <folder>: <missing>``.
    """
    images, labels = [], []
    for label in range(ckpt_config.data.n_classes):
        folder = ckpt_folder / "class_samples" / str(label)
        if label != exclude and folder.is_dir():
            x = load_image_folder(folder, "--ckpt_folder", ckpt_config.data.channels, ckpt_config.data.image_size)
            images.append(x)
            labels.append(np.full(len(x), label, dtype=np.int64))
    if not images:
        raise UsageError(f"--ckpt_folder {ckpt_folder}: {missing}")
    return np.concatenate(images), np.concatenate(labels)
