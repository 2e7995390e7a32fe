"""In-memory image datasets shared by image classification and image generation.

Every loader returns uint8 arrays ``(N, H, W, C)`` and int64 labels, and
:class:`ArrayImageDataset` wraps them with the ``.data`` / ``.targets``
attributes of torchvision's CIFAR datasets, so forget-set marking and
subsetting work the same on every dataset.

Decoding every JPEG of a zip takes seconds (CIFAR-10: about 8) before a run's first step, and a sweep pays it
in every run, so :func:`load_imagefolder_arrays` caches a zip's decoded arrays as ``.npy`` files
(:func:`cached_imagefolder_arrays`) and memory-maps them on the next load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.errors import UsageError
from common.io import PathLike, atomic_path, atomic_write_json, one_line

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
        array = np.array(self.data[index])  # a writable copy: ``data`` may be a read-only memory map
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


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


class ImageTree:
    """The files of a folder, or of a zip of one, addressed by posix paths relative to the tree's root.

    A zip may hold the tree at its root or inside one top-level folder
    (``cifar10/train/...``, ``tiny-imagenet-200/train/...``): ``expect`` names
    a folder the root holds (``train``), which tells the two apart.  Errors are
    one line naming ``flag`` and the path.
    """

    def __init__(self, path: PathLike, flag: str = "--data", expect: str = "train") -> None:
        self.path, self.flag = Path(path), flag
        if not self.path.exists():
            raise UsageError(f"{flag} {self.path}: not found (expected an ImageFolder tree or a .zip of one)")
        self._archive: Optional[zipfile.ZipFile] = None
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise UsageError(f"{flag} {self.path}: not a zip file or folder")
            self._archive = zipfile.ZipFile(self.path)
            names = [name for name in self._archive.namelist() if not name.endswith("/")]
            tops = {name.split("/", 1)[0] for name in names if "/" in name}
            prefix = ""
            if not any(name.startswith(expect + "/") for name in names) and len(tops) == 1:
                prefix = tops.pop() + "/"
            self._members = {name[len(prefix):]: name for name in names if name.startswith(prefix)}

    def files(self, folder: str) -> List[str]:
        """Every file under ``folder`` (recursively), as paths relative to the root."""
        if self._archive is not None:
            return [name for name in self._members if name.startswith(folder + "/")]
        root = self.path / folder
        return [file.relative_to(self.path).as_posix() for file in root.rglob("*") if file.is_file()]

    def files_by_class(self, split: str) -> Dict[str, List[str]]:
        """The image files under ``<split>/<class>/``, by class folder name, in sorted order."""
        by_class: Dict[str, List[str]] = {}
        for name in sorted(self.files(split)):
            if name.count("/") >= 2 and is_image_file(name):
                by_class.setdefault(name.split("/")[1], []).append(name)
        return by_class

    def is_dir(self, folder: str) -> bool:
        if self._archive is not None:
            return any(name.startswith(folder + "/") for name in self._members)
        return (self.path / folder).is_dir()

    def is_file(self, name: str) -> bool:
        return name in self._members if self._archive is not None else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.is_file(name):
            raise UsageError(f"{self.flag} {self.path}: {name} not found")
        if self._archive is not None:
            return self._archive.read(self._members[name])
        return (self.path / name).read_bytes()

    def decode(self, names: Sequence[str], what: str) -> np.ndarray:
        """The images ``names`` as one uint8 ``(N, H, W, 3)`` array; they must share one size."""
        images = [_decode(self.read(name), f"{self.flag} {self.path}: {name}") for name in names]
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise UsageError(f"{self.flag} {self.path}: images of {what} have different sizes {sorted(shapes)[:3]}")
        return np.stack(images)

    def imagefolder(self, split: str, classes: Optional[Sequence[str]] = None
                    ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        """``<split>/<class>/**/<image>`` as torchvision's ``ImageFolder`` reads it.

        Classes are the sorted folder names (or ``classes``, e.g. the train
        split's, which every folder of this split must be one of); images are
        in ImageFolder order: by class, then folder, then file name.
        """
        if not self.is_dir(split):
            raise UsageError(f"{self.flag} {self.path}: no '{split}' folder (expected {split}/<class>/<image>)")
        entries = [(name.split("/")[1], name) for name in self.files(split)
                   if name.count("/") >= 2 and is_image_file(name)]
        if not entries:
            raise UsageError(f"{self.flag} {self.path}: no images under {split}/<class>/")
        classes = list(classes) if classes is not None else sorted({cls for cls, _ in entries})
        class_index = {cls: i for i, cls in enumerate(classes)}
        unknown = sorted({cls for cls, _ in entries if cls not in class_index})
        if unknown:
            raise UsageError(f"{self.flag} {self.path}: {split}/{unknown[0]}/ is not one of the "
                             f"{len(classes)} training classes")
        entries.sort(key=lambda entry: (class_index[entry[0]],) + tuple(entry[1].rsplit("/", 1)))
        labels = np.array([class_index[cls] for cls, _ in entries], dtype=np.int64)
        return self.decode([name for _, name in entries], f"{split}/"), labels, classes


def load_imagefolder_arrays(path: PathLike, split: str, flag: str = "--data") -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read ``<split>/<class>/<image>`` from a folder or a zip of one into memory (see :class:`ImageTree`).

    Classes are sorted by name, as torchvision's ``ImageFolder`` does; images
    may sit in sub-folders of their class folder.  All images of a split must
    share one size.  Errors name ``flag``, the path and what is missing.  A
    zip's arrays come from its cache when it has one (:func:`cached_imagefolder_arrays`;
    ``DUALOPTIM_DATA_CACHE=0`` decodes every time).
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path) and os.environ.get(CACHE_ENV, "1") != "0":
        return cached_imagefolder_arrays(path, split, flag)
    return ImageTree(path, flag, expect=split).imagefolder(split)


#: ``0`` turns the decoded-array cache off
CACHE_ENV = "DUALOPTIM_DATA_CACHE"


def cache_folder(zip_path: Path) -> Path:
    """Where a zip's decoded arrays go: ``.<zip name>.cache/`` beside it, or under ``$XDG_CACHE_HOME`` (default
    ``~/.cache``) ``/dualoptim/data/`` when the zip's folder is not writable."""
    beside = zip_path.parent / f".{zip_path.name}.cache"
    if _writable(zip_path.parent):
        return beside
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "dualoptim" / "data" / hashlib.blake2b(str(zip_path.resolve()).encode(), digest_size=8).hexdigest()


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permission bits do not bind root)."""
    probe = folder / f".dualoptim-probe-{uuid.uuid4().hex}"
    try:
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


#: What a cache entry's JSON must say; an entry of another layout (an earlier release's) is rebuilt.
CACHE_FORMAT = 2


def _checksum(array: np.ndarray) -> int:
    """The CRC-32 of an array's bytes, read through its memory map (no copy).

    A check against damage, not against an adversary (who could rewrite the record too): CRC-32
    catches every error burst up to 32 bits and any other change with probability 1 - 2^-32, and runs
    three to four times as fast as BLAKE2b here, which keeps a warm load of CIFAR-10 (a 63 MB zip
    checksummed per split, 184 MB of arrays verified) under the unverified cache's (benchmarks/README.md).
    """
    return zlib.crc32(np.ascontiguousarray(array).data)


def _file_crc32(path: Path, chunk: int = 1 << 22) -> int:
    """The CRC-32 of a file's bytes, read in chunks into one buffer."""
    crc, buffer = 0, bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            crc = zlib.crc32(view[:size], crc)
    return crc


def _array_record(array: np.ndarray) -> Dict[str, object]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": _checksum(array)}


def _verified_entry(images: Path, labels: Path, classes_file: Path) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """A cache entry's arrays and classes, after checking them against the record its JSON holds.

    Raises ``ValueError`` naming the first thing that does not match: a classes list that is not
    a non-empty list of distinct names, arrays of another shape or dtype than recorded, labels
    outside ``[0, len(classes))``, or bytes whose checksum differs (a flipped byte, a truncated or
    swapped file).
    """
    record = json.loads(classes_file.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
        raise ValueError(f"{classes_file.name}: not a cache record of format {CACHE_FORMAT}")
    classes = record.get("classes")
    if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes)):
        raise ValueError(f"{classes_file.name}: 'classes' is not a list of distinct class names")
    x, y = np.load(images, mmap_mode="r"), np.load(labels)
    for array, path, name in ((x, images, "images"), (y, labels, "labels")):
        expected = record.get(name)
        if not isinstance(expected, dict):
            raise ValueError(f"{classes_file.name}: no record of the {name}")
        if [list(array.shape), str(array.dtype)] != [expected.get("shape"), expected.get("dtype")]:
            raise ValueError(f"{path.name}: {str(array.dtype)} {tuple(array.shape)}, recorded "
                             f"{expected.get('dtype')} {tuple(expected.get('shape') or ())}")
    if x.ndim != 4 or x.dtype != np.uint8 or y.dtype != np.int64 or y.shape != (len(x),):
        raise ValueError(f"{images.name}: expected uint8 (N, H, W, C) images and N int64 labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise ValueError(f"{labels.name}: labels in [{int(y.min())}, {int(y.max())}], expected [0, {len(classes) - 1}]")
    for array, path, name in ((x, images, "images"), (y, labels, "labels")):
        if _checksum(array) != record[name].get("crc32"):
            raise ValueError(f"{path.name}: content differs from its recorded checksum")
    return x, y, classes


def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of cache writes that were killed (``.<name>.*.tmp``, see
    :func:`common.io.atomic_path`).  A write in progress holds a lock on its file, so only
    files no living process is writing are removed."""
    import fcntl

    for leftover in folder.glob(".*.tmp"):
        try:
            with open(leftover, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
                leftover.unlink()
        except OSError:
            continue


def _write_array(array: np.ndarray, target: Path) -> None:
    """``np.save`` through :func:`common.io.atomic_path`, holding a lock on the temporary file while
    writing so that :func:`_remove_leftovers` of another process leaves it alone."""
    import fcntl

    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        np.save(out, array)


def cached_imagefolder_arrays(zip_path: Path, split: str, flag: str = "--data"
                              ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """:meth:`ImageTree.imagefolder` of a zip's ``split``, decoded once.

    The arrays are saved as ``.npy`` files in :func:`cache_folder` under a key of the zip's size, modification
    time and CRC-32 content checksum, each written atomically, the JSON record last (a cache entry exists once
    it does); later loads memory-map the images (read-only) instead of decoding.  The record holds the
    classes and each array's shape, dtype and CRC-32 checksum, and every load checks them and the label
    range (:func:`_verified_entry`): an entry that fails is decoded and written again, with one
    ``warning:`` line on stderr, never used.  Temporary files of killed writes are removed.  A changed zip
    gets a new key and its split's older entries are removed. Where nothing can be written the arrays are
    decoded each time.
    """
    stat = zip_path.stat()
    digest = f"{_file_crc32(zip_path):08x}"
    key = f"{split}-{stat.st_size}-{stat.st_mtime_ns}-{digest}"
    folder = cache_folder(zip_path)
    if folder.is_dir():
        _remove_leftovers(folder)
    images, labels, classes_file = (folder / f"{key}.{part}" for part in ("images.npy", "labels.npy", "json"))
    if classes_file.is_file():
        try:
            return _verified_entry(images, labels, classes_file)
        except Exception as err:  # noqa: BLE001 -- np.load raises many types for damaged files; all mean rebuild
            print(f"warning: {flag} {zip_path}: the decoded-array cache in {folder} failed its check "
                  f"({one_line(err)}); decoding the {split} split again", file=sys.stderr)
    x, y, classes = ImageTree(zip_path, flag, expect=split).imagefolder(split)
    try:
        for stale in folder.glob(f"{split}-*"):
            if not stale.name.startswith(key + "."):  # another process may be writing this key's files
                stale.unlink()
        classes_file.unlink(missing_ok=True)  # the entry stops existing before its arrays change
        _write_array(x, images)
        _write_array(y, labels)
        atomic_write_json({"format": CACHE_FORMAT, "classes": classes, "images": _array_record(x),
                           "labels": _array_record(y), "zip": str(zip_path.resolve()), "size": stat.st_size,
                           "mtime_ns": stat.st_mtime_ns, "crc32": digest}, classes_file)
    except OSError:
        pass  # an unwritable cache only costs the decoding next time
    return x, y, classes
