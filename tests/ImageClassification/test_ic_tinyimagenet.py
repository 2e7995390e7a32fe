"""--dataset TinyImagenet on a small fake tree: the three layouts, the research code's split and transforms."""
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from common.errors import UsageError
from ImageClassification import main_train
from ImageClassification.arg_parser import parse_config
from ImageClassification.data import load_unlearn_data

WNIDS = ["n02", "n01", "n03"]          # written unsorted: labels follow the sorted names
TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 4


def write_jpeg(path, red, green):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), (red, green, 0), dtype=np.uint8)).save(path, quality=95)


def class_of(wnid):
    return sorted(WNIDS).index(wnid)


def pixel_ids(images):
    """(class, image number) encoded in the red and green channel of each flat-colour JPEG."""
    return [(int(round(image[0, 0, 0] / 60)), int(round(image[0, 0, 1] / 20))) for image in images]


@pytest.fixture
def standard_tree(tmp_path):
    """tiny-imagenet-200 as distributed: train/<wnid>/images, val/images + val_annotations.txt, test/images."""
    root = tmp_path / "tiny-imagenet-200"
    for wnid in WNIDS:
        for i in range(TRAIN_PER_CLASS):
            write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 60 * class_of(wnid), 20 * i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("not an image\n")
    lines = []
    # classes interleaved; within a class the annotation order is not the name order (images 2, 3 sort first)
    for k, (wnid, i) in enumerate((w, i) for i in range(VAL_PER_CLASS) for w in WNIDS):
        name = f"val_{(300, 400, 100, 200)[i] + k}.JPEG"
        write_jpeg(root / "val" / "images" / name, 60 * class_of(wnid), 20 * (5 + i))
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    write_jpeg(root / "test" / "images" / "test_0.JPEG", 250, 250)   # unlabelled: never read
    return root


def tiny_args(data_dir, *extra):
    return parse_config(["--dataset", "TinyImagenet", "--data_dir", str(data_dir), "--num_indexes_to_replace", "2",
                       *extra])


def test_standard_layout_split_as_the_research_code(standard_tree):
    data = load_unlearn_data(tiny_args(standard_tree, "--input_size", "64"))
    # no validation hold-out: every train image is in the train split, boxes files skipped, ImageFolder order
    assert len(data.train) == 3 * TRAIN_PER_CLASS
    assert pixel_ids(data.train.data) == [(c, i) for c in range(3) for i in range(TRAIN_PER_CLASS)]
    assert data.train.targets.tolist() == [c for c in range(3) for _ in range(TRAIN_PER_CLASS)]
    # test: the second half (in annotation order) of each class's validation images, i.e. images 2 and 3
    assert pixel_ids(data.test.data) == [(c, 5 + i) for c in range(3) for i in (2, 3)]
    assert data.test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.val is data.test          # the research code validates on its test set
    assert data.num_classes == 200 and data.test[0][0].shape == (3, 64, 64)


def test_research_code_layout_and_zip_read_the_same(standard_tree, tmp_path):
    expected = load_unlearn_data(tiny_args(standard_tree, "--input_size", "64"))
    # the tree as the research code leaves it: half of val/ in val/<wnid>/images, the other half in test/
    moved = tmp_path / "moved"
    shutil.copytree(standard_tree / "train", moved / "train")
    lines = (standard_tree / "val" / "val_annotations.txt").read_text().splitlines()
    seen = {}
    for line in lines:
        name, wnid = line.split("\t")[:2]
        seen[wnid] = seen.get(wnid, 0) + 1
        split = "val" if seen[wnid] <= VAL_PER_CLASS // 2 else "test"
        target = moved / split / wnid / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(standard_tree / "val" / "images" / name, target)
    from_moved = load_unlearn_data(tiny_args(moved, "--input_size", "64"))
    assert np.array_equal(from_moved.test.data, expected.test.data)
    assert np.array_equal(from_moved.test.targets, expected.test.targets)

    archive = tmp_path / "tiny-imagenet-200.zip"   # the distributed zip: one top-level folder
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(standard_tree.rglob("*")):
            if file.is_file():
                zf.write(file, "tiny-imagenet-200/" + file.relative_to(standard_tree).as_posix())
    from_zip = load_unlearn_data(tiny_args(archive, "--input_size", "64"))
    assert np.array_equal(from_zip.train.data, expected.train.data)
    assert np.array_equal(from_zip.test.data, expected.test.data)
    assert np.array_equal(from_zip.forget_index, expected.forget_index)


def test_transforms_resize_to_224_and_randaugment_only_for_retrain(standard_tree):
    data = load_unlearn_data(tiny_args(standard_tree, "--unlearn", "retrain"))
    steps = [type(step) for step in data.train.transform.transforms]
    assert steps == [transforms.RandomCrop, transforms.RandomHorizontalFlip, transforms.Resize,
                     transforms.RandAugment, transforms.ToTensor]
    crop = data.train.transform.transforms[0]
    assert crop.size == (64, 64) and crop.padding == 4
    assert data.train[0][0].shape == (3, 224, 224) and data.test[0][0].shape == (3, 224, 224)
    rl = load_unlearn_data(tiny_args(standard_tree, "--unlearn", "RL"))
    assert transforms.RandAugment not in [type(step) for step in rl.train.transform.transforms]
    # a class forgotten as a whole stays in the research code's TinyImagenet test set
    whole = load_unlearn_data(parse_config(["--dataset", "TinyImagenet", "--data_dir", str(standard_tree),
                                          "--class_to_replace", "1"]))
    assert 1 in set(whole.test.targets) and set(whole.train.targets[whole.forget_index]) == {1}


def test_bad_trees_fail_with_one_line(standard_tree, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_train.main(["--dataset", "TinyImagenet", "--data_dir", str(tmp_path / "missing"),
                         "--save_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --data_dir {tmp_path / 'missing'}: not found "
                   f"(expected an ImageFolder tree or a .zip of one)"]
    assert not (tmp_path / "out").exists()
    shutil.rmtree(standard_tree / "test")
    shutil.rmtree(standard_tree / "val")
    with pytest.raises(UsageError, match="no test/ or val/ folder"):
        load_unlearn_data(tiny_args(standard_tree))
    (standard_tree / "test" / "n99").mkdir(parents=True)
    write_jpeg(standard_tree / "test" / "n99" / "a.JPEG", 0, 0)
    with pytest.raises(UsageError, match=r"test/n99/ is not one of the 3 training classes"):
        load_unlearn_data(tiny_args(standard_tree))
