"""In-memory image datasets shared by image classification and image generation.

Every loader returns uint8 arrays ``(N, H, W, C)`` and int64 labels, and
:class:`ArrayImageDataset` wraps them with the ``.data`` / ``.targets``
attributes of torchvision's CIFAR datasets, so forget-set marking and
subsetting work the same on every dataset.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.errors import UsageError
from common.io import PathLike

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ArrayImageDataset(Dataset):
    """Images held as a uint8 array, CIFAR-style.

    ``data`` is ``(N, H, W, C)`` uint8 and ``targets`` ``(N,)`` int64; items are
    ``(transform(PIL image), int label)`` (a ``(C, H, W)`` float tensor in
    [0, 1] when ``transform`` is None).
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform: Optional[Callable] = None) -> None:
        if data.ndim != 4 or data.dtype != np.uint8:
            raise ValueError(f"data must be uint8 (N, H, W, C), got {data.dtype} {data.shape}")
        if len(data) != len(targets):
            raise ValueError(f"{len(data)} images but {len(targets)} targets")
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        array = self.data[index]
        target = int(self.targets[index])
        if self.transform is None:
            return torch.from_numpy(array).permute(2, 0, 1).float().div(255.0), target
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return self.transform(image), target


def load_digits_arrays(image_size: int = 16, channels: int = 1, test_fraction: float = 0.2,
                       split_seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as small uint8 images.

    Pixel values 0..16 are scaled to 0..255 and upsampled bilinearly to
    ``image_size``; ``channels=3`` repeats the grey channel.  The train/test
    split is stratified and fixed by ``split_seed``, identical on every machine.
    """
    from sklearn.datasets import load_digits

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != 8:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if channels == 3:
        pixels = np.repeat(pixels, 3, axis=3)
    labels = digits.target.astype(np.int64)
    rng = np.random.RandomState(split_seed)
    test_index: List[int] = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        test_index.extend(rng.choice(members, int(round(len(members) * test_fraction)), replace=False))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    return pixels[~is_test], labels[~is_test], pixels[is_test], labels[is_test]


def _decode(raw: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        raise UsageError(f"{name}: not a readable image ({err})") from None


def load_imagefolder_arrays(path: PathLike, split: str, flag: str = "--data") -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read ``<split>/<class>/<image>`` from a folder or a zip of one into memory.

    Classes are sorted by name, as torchvision's ``ImageFolder`` does; a zip
    may hold the tree at its root or inside one top-level folder.  All images
    of a split must share one size.  Errors name ``flag``, the path and what is missing.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: not found (expected an ImageFolder tree or a .zip of one)")
    entries: List[Tuple[str, str, Callable[[], bytes]]] = []  # (class, name, reader)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UsageError(f"{flag} {path}: not a zip file or folder")
        archive = zipfile.ZipFile(path)
        for name in archive.namelist():
            parts = name.split("/")
            if name.endswith("/") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            # accept <split>/<class>/<file> and <top>/<split>/<class>/<file>
            if len(parts) >= 3 and parts[-3] == split:
                entries.append((parts[-2], name, lambda n=name: archive.read(n)))
    else:
        root = path / split
        if not root.is_dir():
            raise UsageError(f"{flag} {path}: no '{split}' folder (expected {split}/<class>/<image>)")
        for file in root.glob("*/*"):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((file.parent.name, str(file), file.read_bytes))
    if not entries:
        raise UsageError(f"{flag} {path}: no images under {split}/<class>/")
    classes = sorted({cls for cls, _, _ in entries})
    class_index = {cls: i for i, cls in enumerate(classes)}
    entries.sort(key=lambda entry: (class_index[entry[0]], entry[1]))
    images = [_decode(read(), name) for _, name, read in entries]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise UsageError(f"{flag} {path}: images of {split} have different sizes {sorted(shapes)[:3]}")
    labels = np.array([class_index[cls] for cls, _, _ in entries], dtype=np.int64)
    return np.stack(images), labels, classes
