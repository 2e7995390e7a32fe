"""Image files in and out: class-list parsing, atomic PNG writes, sample folders."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torchvision
from PIL import Image

from common.errors import UsageError
from common.io import PathLike, atomic_path

IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


def parse_class_list(spec: str, n_classes: int, flag: str = "--classes_to_generate") -> Tuple[List[int], List[int]]:
    """``"0,3"`` -> classes 0 and 3; ``"x0"`` or ``"x0,x1"`` -> every class but those.

    Returns ``(classes, excluded)``.  Labels outside ``[0, n_classes)`` or a
    mix of the two forms are one-line :class:`UsageError`s.
    """
    items = [item.strip() for item in str(spec).split(",") if item.strip()]
    if not items:
        raise UsageError(f"{flag}: expected class labels like '0,3' or 'x0', got {spec!r}")
    excluded_form = [item.startswith("x") for item in items]
    if any(excluded_form) and not all(excluded_form):
        raise UsageError(f"{flag} {spec!r}: use either labels ('1,2') or exclusions ('x0,x1'), not both")
    try:
        labels = [int(item[1:] if item.startswith("x") else item) for item in items]
    except ValueError:
        raise UsageError(f"{flag} {spec!r}: expected integers, optionally prefixed with 'x'") from None
    for label in labels:
        if not 0 <= label < n_classes:
            raise UsageError(f"{flag}: class {label} is out of range for a model of {n_classes} classes")
    if all(excluded_form):
        return [c for c in range(n_classes) if c not in labels], labels
    return labels, []


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """Model-space images in ``[-1, 1]``, ``(N, C, H, W)`` -> uint8 ``(N, H, W, C)``."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_png(image: np.ndarray, path: PathLike) -> None:
    """Write one uint8 ``(H, W, C)`` image as PNG, atomically."""
    array = image[..., 0] if image.shape[-1] == 1 else image
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_pngs(images: np.ndarray, folder: PathLike, start_id: int) -> int:
    """Save ``images`` as ``<folder>/<id>.png`` from ``start_id``; returns the next id."""
    folder = Path(folder)
    for offset, image in enumerate(images):
        save_png(image, folder / f"{start_id + offset}.png")
    return start_id + len(images)


def save_grid_png(images: torch.Tensor, n_per_row: int, path: PathLike) -> Path:
    """Model-space images ``(N, C, H, W)`` tiled ``n_per_row`` to a row without padding, as one PNG."""
    grid = torchvision.utils.make_grid(images.detach().float().cpu(), nrow=n_per_row, padding=0)
    image = to_uint8_images(grid.unsqueeze(0))[0]
    save_png(image[..., :1] if images.shape[1] == 1 else image, path)
    return Path(path)


def list_images(folder: PathLike, flag: str) -> List[Path]:
    """Image files directly in ``folder``, sorted; a missing or empty folder is a :class:`UsageError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UsageError(f"{flag} {folder}: contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def image_format(folder: PathLike, flag: str) -> Tuple[int, int]:
    """``(channels, size)`` of the first image in ``folder`` (1 for grayscale, else 3)."""
    with Image.open(list_images(folder, flag)[0]) as img:
        return (1 if img.mode in ("L", "1", "I;16") else 3), img.size[0]


def load_image_folder(folder: PathLike, flag: str, channels: int, image_size: int) -> np.ndarray:
    """All images of a folder as uint8 ``(N, image_size, image_size, channels)``."""
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path in list_images(folder, flag):
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
        images.append(array[..., None] if channels == 1 else array)
    return np.stack(images)


def uint8_to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def check_label(label: int, n_classes: int, flag: str) -> int:
    """A class label in ``[0, n_classes)``, or a :class:`UsageError` naming ``flag``."""
    if not 0 <= label < n_classes:
        raise UsageError(f"{flag} {label}: expected a class in [0, {n_classes - 1}]")
    return label

