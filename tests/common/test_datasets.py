"""common.datasets: digits arrays, ImageFolder trees and zips, the decoded-array cache, ArrayImageDataset."""
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from common import datasets
from common.datasets import ArrayImageDataset, load_digits_arrays, load_imagefolder_arrays
from common.errors import UsageError


def test_digits_arrays_are_deterministic_stratified_uint8():
    train_x, train_y, test_x, test_y = load_digits_arrays(image_size=16, channels=3)
    assert train_x.shape[1:] == (16, 16, 3) and train_x.dtype == np.uint8
    assert len(train_x) + len(test_x) == 1797
    assert np.array_equal(np.bincount(test_y), [36, 36, 35, 37, 36, 36, 36, 36, 35, 36])
    again = load_digits_arrays(image_size=16, channels=3)
    assert np.array_equal(again[0], train_x) and np.array_equal(again[3], test_y)
    assert np.array_equal(train_x[..., 0], train_x[..., 2])


def write_tree(root, split, images):
    for cls, index, color in images:
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), color, dtype=np.uint8)).save(folder / f"{index}.png")


def test_imagefolder_tree_and_zip_give_same_arrays(tmp_path):
    images = [("dog", 0, 10), ("cat", 0, 200), ("cat", 1, 100)]
    write_tree(tmp_path / "tree", "train", images)
    x, y, classes = load_imagefolder_arrays(tmp_path / "tree", "train")
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1]
    assert x.shape == (3, 4, 4, 3) and x[0, 0, 0, 0] == 200 and x[2, 0, 0, 0] == 10

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # one top-level folder, as many zips have
        for file in sorted((tmp_path / "tree").rglob("*.png")):
            zf.write(file, "cifar/" + str(file.relative_to(tmp_path / "tree")))
    zx, zy, zclasses = load_imagefolder_arrays(archive, "train")
    assert zclasses == classes and np.array_equal(zx, x) and np.array_equal(zy, y)


def test_imagefolder_errors_name_the_path(tmp_path):
    with pytest.raises(UsageError, match="--data .*nowhere: not found"):
        load_imagefolder_arrays(tmp_path / "nowhere", "train")
    write_tree(tmp_path, "train", [("a", 0, 1)])
    with pytest.raises(UsageError, match="no 'test' folder"):
        load_imagefolder_arrays(tmp_path, "test")
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(UsageError, match="not a zip file"):
        load_imagefolder_arrays(tmp_path / "notzip.zip", "train")


def test_array_image_dataset_items():
    data = np.arange(2 * 2 * 2 * 1, dtype=np.uint8).reshape(2, 2, 2, 1) * 30
    dataset = ArrayImageDataset(data, np.array([3, 4]))
    image, label = dataset[1]
    assert label == 4 and image.shape == (1, 2, 2)
    assert torch.allclose(image.flatten(), torch.tensor([120.0, 150.0, 180.0, 210.0]) / 255)
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        ArrayImageDataset(data, np.array([1]))


def zip_of(tmp_path, images, name="data.zip"):
    """A zip of a train tree of 4x4 one-colour PNGs."""
    tree = tmp_path / f"tree_{name}"
    write_tree(tree, "train", images)
    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(tree.rglob("*.png")):
            zf.write(file, str(file.relative_to(tree)))
    return archive


def test_a_zip_is_decoded_once_then_memory_mapped_from_its_cache(tmp_path, monkeypatch):
    archive = zip_of(tmp_path, [("dog", 0, 10), ("cat", 0, 200)])
    x, y, classes = load_imagefolder_arrays(archive, "train")
    entries = sorted(p.name for p in (tmp_path / ".data.zip.cache").iterdir())
    assert len(entries) == 3 and entries[0].startswith("train-") and entries[0].endswith(".images.npy")
    decoded = []
    monkeypatch.setattr(datasets.ImageTree, "imagefolder", lambda *a: decoded.append(a) or pytest.fail("decoded"))
    cx, cy, cclasses = load_imagefolder_arrays(archive, "train")
    assert isinstance(cx, np.memmap) and not cx.flags.writeable and not decoded
    assert np.array_equal(cx, x) and np.array_equal(cy, y) and cclasses == classes == ["cat", "dog"]
    item, label = ArrayImageDataset(cx, cy)[0]  # a read-only memory map gives ordinary tensors
    assert label == 0 and item[0, 0, 0] == pytest.approx(200 / 255)
    monkeypatch.setenv("DUALOPTIM_DATA_CACHE", "0")
    with pytest.raises(pytest.fail.Exception, match="decoded"):
        load_imagefolder_arrays(archive, "train")


def test_a_changed_zip_of_the_same_size_and_time_is_decoded_again(tmp_path):
    archive = zip_of(tmp_path, [("dog", 0, 10), ("cat", 0, 200)])
    first, _, _ = load_imagefolder_arrays(archive, "train")
    stat = archive.stat()
    changed = zip_of(tmp_path, [("dog", 0, 11), ("cat", 0, 200)], name="changed.zip")
    assert changed.stat().st_size == stat.st_size
    archive.write_bytes(changed.read_bytes())
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the content hash tells them apart
    second, _, _ = load_imagefolder_arrays(archive, "train")
    assert first[1, 0, 0, 0] == 10 and second[1, 0, 0, 0] == 11
    assert len(list((tmp_path / ".data.zip.cache").iterdir())) == 3  # the stale entry is gone


def test_the_cache_goes_to_the_user_cache_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    archive = zip_of(tmp_path, [("dog", 0, 10)])
    monkeypatch.setattr(datasets, "_writable", lambda folder: folder != tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))
    load_imagefolder_arrays(archive, "train")
    assert not (tmp_path / ".data.zip.cache").exists()
    cached, = (tmp_path / "home_cache" / "dualoptim" / "data").iterdir()
    assert len(list(cached.glob("train-*.images.npy"))) == 1
