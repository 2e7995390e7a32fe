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


# ----------------------------------------------------------------------------- a cache that cannot lie
# Each damage was reproduced against the unverified cache: an EOFError or IndexError traceback, a TypeError,
# or a run that trained silently on the damaged arrays (issue 25, item 1).

def flip_bytes(path):
    """Invert the last 40 bytes of a file, keeping its size (20 pixels of the last image, or labels)."""
    raw = bytearray(path.read_bytes())
    raw[-40:] = bytes(255 - b for b in raw[-40:])
    path.write_bytes(bytes(raw))


def save_npy(path, array):
    with open(path, "wb") as out:
        np.save(out, array)


CACHE_DAMAGE = {
    "empty images file": lambda e: e["images.npy"].write_bytes(b""),
    "empty labels file": lambda e: e["labels.npy"].write_bytes(b""),
    "bytes flipped in the images": lambda e: flip_bytes(e["images.npy"]),
    "bytes flipped in the labels": lambda e: flip_bytes(e["labels.npy"]),
    "10 labels for 3 images": lambda e: save_npy(e["labels.npy"], np.zeros(10, dtype=np.int64)),
    "a label of 255": lambda e: save_npy(e["labels.npy"], np.array([0, 0, 255])),
    "images of another dtype": lambda e: save_npy(e["images.npy"], np.load(e["images.npy"]).astype(np.int16)),
    "classes null": lambda e: e["json"].write_text('{"format": 2, "classes": null}'),
    "classes [1, 2]": lambda e: e["json"].write_text('{"format": 2, "classes": [1, 2]}'),
    "record not JSON": lambda e: e["json"].write_text("{"),
    "record of an earlier release": lambda e: e["json"].write_text('{"classes": ["cat", "dog"]}'),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=list(CACHE_DAMAGE))
def test_a_damaged_cache_entry_is_rebuilt_with_one_line_never_used(damage, tmp_path, monkeypatch, capsys):
    archive = zip_of(tmp_path, [("dog", 0, 10), ("cat", 0, 200), ("cat", 1, 100)])
    x, y, classes = load_imagefolder_arrays(archive, "train")
    assert capsys.readouterr().err == ""
    cache = tmp_path / ".data.zip.cache"
    entry = {path.name.split(".", 1)[1]: path for path in cache.iterdir()}
    assert sorted(entry) == ["images.npy", "json", "labels.npy"]
    CACHE_DAMAGE[damage](entry)
    decoded = []
    original = datasets.ImageTree.imagefolder
    monkeypatch.setattr(datasets.ImageTree, "imagefolder", lambda *a: decoded.append(1) or original(*a))
    rx, ry, rclasses = load_imagefolder_arrays(archive, "train")
    lines = capsys.readouterr().err.splitlines()
    assert decoded == [1] and len(lines) == 1, lines
    assert lines[0].startswith(f"warning: --data {archive}: the decoded-array cache in {cache} failed its check (")
    assert lines[0].endswith("); decoding the train split again")
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and rclasses == classes == ["cat", "dog"]
    # rewritten: the next load memory-maps it again, silently, without decoding
    again, _, _ = load_imagefolder_arrays(archive, "train")
    assert decoded == [1] and capsys.readouterr().err == "" and isinstance(again, np.memmap)
    assert np.array_equal(again, x)


def test_the_check_names_what_failed(tmp_path, capsys):
    archive = zip_of(tmp_path, [("dog", 0, 10), ("cat", 0, 200), ("cat", 1, 100)])
    load_imagefolder_arrays(archive, "train")
    labels, = (tmp_path / ".data.zip.cache").glob("*.labels.npy")
    save_npy(labels, np.array([0, 0, 255]))
    load_imagefolder_arrays(archive, "train")
    assert "labels in [0, 255], expected [0, 1]" in capsys.readouterr().err
    images, = (tmp_path / ".data.zip.cache").glob("*.images.npy")
    flip_bytes(images)
    load_imagefolder_arrays(archive, "train")
    assert "images.npy: content differs from its recorded checksum" in capsys.readouterr().err


def test_leftovers_of_a_killed_write_are_removed_but_not_a_live_write(tmp_path):
    import fcntl

    archive = zip_of(tmp_path, [("dog", 0, 10)])
    load_imagefolder_arrays(archive, "train")
    cache = tmp_path / ".data.zip.cache"
    killed = cache / ".train-x.images.npy.abc123.tmp"
    killed.write_bytes(b"\0" * 1000)
    live = cache / ".train-x.labels.npy.def456.tmp"
    with open(live, "wb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as _write_array holds it while writing
        load_imagefolder_arrays(archive, "train")
        assert not killed.exists() and live.exists()
    load_imagefolder_arrays(archive, "train")
    assert not live.exists()


def test_cache_files_follow_the_umask(tmp_path):
    archive = zip_of(tmp_path, [("dog", 0, 10)])
    old = os.umask(0o027)
    try:
        load_imagefolder_arrays(archive, "train")
    finally:
        os.umask(old)
    modes = {path.suffix: path.stat().st_mode & 0o777 for path in (tmp_path / ".data.zip.cache").iterdir()}
    assert modes == {".npy": 0o640, ".json": 0o640}
