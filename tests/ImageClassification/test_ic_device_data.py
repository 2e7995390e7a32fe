"""``--data_on_device`` (ImageClassification/device_data.py): the same batches as the per-image loader path
without augmentation, crop/flip draws of the right distribution with it, resume, errors, the entry scripts."""
import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from common.checkpointing import EndlessLoader, pass_generator, position_loader
from common.datasets import ArrayImageDataset
from common.errors import UsageError
from benchmarks.evidence.design import MethodGrid
from ImageClassification import device_data, main_random
from ImageClassification.arg_parser import parse_config
from ImageClassification.data import (DATASETS, UnlearnData, batch_augment, evaluation_loaders, load_unlearn_data,
                                      make_loader, unlearn_loaders)
from ImageClassification.device_data import BatchAugment, DeviceLoader
from benchmarks.evidence.ic import PRESETS
from ImageClassification.models import build_model_from_config
from ImageClassification.unlearn.rl import mixed_relabel_loader

CPU = torch.device("cpu")
DIGITS = ["--dataset", "digits", "--num_indexes_to_replace", "100", "--batch_size", "64"]


def both_paths(*flags):
    """The loader path's and the device path's data of the same digits run."""
    loader_config = parse_config(DIGITS + list(flags))
    device_config = parse_config(DIGITS + list(flags) + ["--data_on_device"])
    return ((loader_config, load_unlearn_data(loader_config)),
            (device_config, load_unlearn_data(device_config, device=CPU)))


def assert_same_batches(loader_a, loader_b):
    pairs = list(zip(loader_a, loader_b, strict=True))
    assert pairs
    for (images_a, labels_a), (images_b, labels_b) in pairs:
        assert images_a.dtype == images_b.dtype == torch.float32
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


@pytest.mark.parametrize("flags", [[], ["--channels_last"]])
def test_without_augmentation_every_loader_gives_the_loader_paths_batches_bit_for_bit(flags):
    (loader_config, loader_data), (device_config, device_data_) = both_paths("--no-aug", *flags)
    loaders, device_loaders = unlearn_loaders(loader_data, loader_config), unlearn_loaders(device_data_, device_config)
    assert isinstance(device_loaders.retain_loader, DeviceLoader)
    for name in ("forget_loader", "retain_loader", "test_loader", "val_loader"):
        for epoch in (0, 3):  # shuffled loaders: the same permutation of each epoch (CPU generator)
            position_loader(getattr(loaders, name), epoch)
            position_loader(getattr(device_loaders, name), epoch)
            assert_same_batches(getattr(loaders, name), getattr(device_loaders, name))
    evaluation, device_evaluation = evaluation_loaders(loader_data, loader_config), evaluation_loaders(
        device_data_, device_config)
    for name in evaluation:
        assert_same_batches(evaluation[name], device_evaluation[name])
    # main_train's loader over the whole train split, and RL's relabelled forget + retain mix
    assert_same_batches(make_loader(loader_data.split("train"), loader_config, True, seed=5),
                        make_loader(device_data_.split("train"), device_config, True, seed=5))
    assert_same_batches(mixed_relabel_loader(loaders, 64, 3, epoch=2), mixed_relabel_loader(device_loaders, 64, 3, 2))
    images, _ = next(iter(device_loaders.retain_loader))
    layout = torch.channels_last if flags else torch.contiguous_format
    assert images.is_contiguous(memory_format=layout)


def test_dataset_attribute_is_the_same_samples_per_image():
    """``wfisher`` and ``fisher_new`` rebuild loaders from ``loader.dataset``."""
    (config, data), (device_config, resident) = both_paths("--no-aug")
    loader_dataset = unlearn_loaders(data, config).forget_loader.dataset
    device_dataset = unlearn_loaders(resident, device_config).forget_loader.dataset
    assert len(loader_dataset) == len(device_dataset) == 100
    for i in (0, 57, 99):
        assert torch.equal(loader_dataset[i][0], device_dataset[i][0]) and loader_dataset[i][1] == device_dataset[i][1]


def explicit_crops(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Every crop/flip of each of ``images`` (N, H, W, C): ``(N, 2, 2p + 1, 2p + 1, H * W * C)`` [flip, dy,
    dx], windows of the zero-padded images, flipped after cropping, as RandomCrop + RandomHorizontalFlip do."""
    count, height, width, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2), (padding,) * 4)           # (N, C, H + 2p, W + 2p)
    crops = padded.unfold(2, height, 1).unfold(3, width, 1)               # (N, C, dy, dx, H, W)
    crops = crops.permute(0, 2, 3, 4, 5, 1)                               # (N, dy, dx, H, W, C)
    return torch.stack([crops, crops.flip(-2)], 1).flatten(4)


def random_image_data(count: int = 500, size: int = 12, augment: BatchAugment = BatchAugment(4, True),
                      device: torch.device = CPU) -> UnlearnData:
    """Random images (pixels 1..255, so every crop/flip of an image is distinct), resident on ``device``
    with ``augment``."""
    rng = np.random.RandomState(0)
    images = rng.randint(1, 256, (count, size, size, 3), dtype=np.uint8)
    dataset = ArrayImageDataset(images, np.arange(count) % 10)
    data = UnlearnData(train=dataset, forget_index=np.arange(0, count, 10), val=dataset, test=dataset,
                       num_classes=10, eval_transform=None)
    data.place_on_device(device, augment)
    return data


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """A float batch in [0, 1] back to uint8 ``(B, H * W * C)`` (exact: the values are k / 255)."""
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).flatten(1)


ON_EVERY_DEVICE = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("device", ON_EVERY_DEVICE)
def test_with_augmentation_every_output_is_a_crop_flip_of_its_input_with_uniform_offsets_and_fair_flips(device):
    device = torch.device(device)
    padding, data = 4, random_image_data(device=device)
    config = parse_config(["--batch_size", "100"])
    loader = make_loader(data.split("train"), config, shuffle=True, seed=11)
    source = torch.from_numpy(data.train.data)
    candidates = explicit_crops(source, padding)
    cells, flips = np.zeros((9, 9), dtype=int), 0
    for epoch in range(10):  # 5,000 draws: about 62 per offset cell
        position_loader(loader, epoch)
        order = torch.randperm(len(source), generator=pass_generator(11, epoch, device), device=device).cpu()
        seen = 0
        for images, labels in loader:
            index = order[seen:seen + len(labels)]
            seen += len(labels)
            assert images.device.type == labels.device.type == device.type
            assert torch.equal(labels.cpu(), torch.from_numpy(data.train.targets)[index])
            matches = (candidates[index].view(len(index), 2 * 81, -1) == as_pixels(images.cpu())[:, None]).all(-1)
            assert torch.equal(matches.sum(1), torch.ones(len(index), dtype=torch.long))  # exactly one each
            found = matches.int().argmax(1)
            flip, cell = found // 81, found % 81
            np.add.at(cells, (cell // 9, cell % 9), 1)
            flips += int(flip.sum())
    total = cells.sum()
    assert total == 5000 and cells.min() > 0
    assert chisquare(cells.ravel()).pvalue > 1e-3   # uniform over the 9 x 9 positions (fixed seed)
    assert chisquare([flips, total - flips]).pvalue > 1e-3   # flip rate 1/2
    assert abs(flips / total - 0.5) < 0.03


def test_store_without_flips_and_without_crop():
    for padding, flip in ((2, False), (None, True)):
        data = random_image_data(count=40, size=8, augment=BatchAugment(padding, flip))
        images, _ = next(iter(make_loader(data.split("train"), parse_config(["--batch_size", "40"]), False)))
        flipped = []
        crops = explicit_crops(torch.from_numpy(data.train.data), padding or 0)
        for output, candidates in zip(as_pixels(images), crops):
            found = (candidates == output).all(-1).nonzero()
            assert len(found) == 1
            flipped.append(int(found[0, 0]))
        assert any(flipped) == flip  # flips only where the dataset has them


def test_a_resumed_pass_continues_with_the_same_batches_and_draws():
    data = random_image_data(count=300)
    config = parse_config(["--batch_size", "32"])
    whole = make_loader(data.split("train"), config, shuffle=True)
    position_loader(whole, 4)
    expected = list(whole)
    resumed = make_loader(data.split("train"), config, shuffle=True)
    position_loader(resumed, 4, batches_done=3)
    assert len(resumed) == len(expected) - 3
    assert_same_batches(expected[3:], resumed)
    stream = EndlessLoader(make_loader(data.split("train"), config, shuffle=True))
    first = [next(stream) for _ in range(12)]  # 10 batches per pass: into the second pass
    restarted = EndlessLoader(make_loader(data.split("train"), config, shuffle=True))
    restarted.load_state_dict({"batches_done": 7})
    assert_same_batches(first[7:], [next(restarted) for _ in range(5)])


def test_data_that_does_not_fit_or_needs_resizing_is_one_line_naming_the_flag(monkeypatch):
    monkeypatch.setattr(device_data, "free_memory", lambda device: 1000)
    with pytest.raises(UsageError, match=r"^--data_on_device: --dataset digits needs [0-9.]+ MiB on cpu, but only "
                                         r"0\.0 MiB is free; drop --data_on_device"):
        load_unlearn_data(parse_config(DIGITS + ["--data_on_device"]), device=CPU)
    # resizing (TinyImagenet's 64 -> 224) and RandAugment have no batched version
    resized = parse_config(["--dataset", "cifar10", "--input_size", "64", "--data_on_device"])
    with pytest.raises(UsageError, match="^--data_on_device: --dataset cifar10 images are 32x32 and would be "
                                         "resized to --input_size 64"):
        batch_augment(DATASETS.get("cifar10"), resized, 32)
    retrain = parse_config(["--dataset", "TinyImagenet", "--input_size", "64", "--unlearn", "retrain"])
    with pytest.raises(UsageError, match="^--data_on_device: --dataset TinyImagenet retraining uses RandAugment"):
        batch_augment(DATASETS.get("TinyImagenet"), retrain, 64)
    assert batch_augment(DATASETS.get("TinyImagenet"), retrain.replace(unlearn="RL"), 64) == BatchAugment(4, True)
    assert batch_augment(DATASETS.get("svhn"), parse_config(["--dataset", "svhn"]), 32) is None


def test_an_entry_script_runs_on_the_device_path(tmp_path, capsys):
    """main_random (the pipeline: unlearning loaders, RL, evaluation) on 8x8 digits from an untrained model."""
    common = ["--dataset", "digits", "--input_size", "8", "--arch", "resnet20s", "--batch_size", "256",
              "--device", "cpu", "--num_indexes_to_replace", "60", "--data_on_device", "--channels_last"]
    config = parse_config(common)
    torch.save({"state_dict": build_model_from_config(config).state_dict()}, tmp_path / "original.pth.tar")
    metrics = main_random.main(common + ["--unlearn", "RL", "--unlearn_epochs", "1", "--model_path",
                                         str(tmp_path / "original.pth.tar"), "--save_dir", str(tmp_path / "rl")])
    assert 0 <= metrics["UA"] <= 100 and "forget acc:" in capsys.readouterr().out
    assert json.loads((tmp_path / "rl" / "run.json").read_text())["config"]["data_on_device"] is True


def test_paper_scale_projection_from_a_short_runs_results():
    """benchmarks/paper_scale_projection.py: the full protocol's runs at the short run's speeds, by hand."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_scale_projection.py"
    spec = importlib.util.spec_from_file_location("paper_scale_projection", path)
    projection = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(projection)
    short = {"config": {"train_epochs": 10},
             "step_budget": {"forget_set": 100, "retain_set": 900},
             "seconds": {"original": 100.0, "retrain_sgd_lr0.1/seed1": 90.0, "mask/seed1": 6.0},
             "images_per_second": {"SalUn/sgd": 500.0, "SFRon/dual": 250.0}}
    full = replace(PRESETS["paper_gpu"], train_epochs=20, unlearn_epochs=5, sfron_iters=100, batch_size=10,
                   seeds=(1, 2, 3), max_extensions=1,
                   grids=(MethodGrid("SalUn", "sgd", (1e-3, 1e-2), (1e-2, 3e-3)),
                          MethodGrid("SFRon", "dual", (1e-4,), None)))
    result = projection.project(short, full)
    assert result["train_images_per_s"] == 100.0 and result["retrain_images_per_s"] == 100.0
    assert result["fixed_seconds"] == {"original": 200.0, "retrain": 3 * 20 * 900 / 100.0, "masks": 18.0}
    salun, sfron = result["rows"]
    assert salun["runs"] == 4 + 2 and salun["seconds_per_run"] == 5 * 1000 / 500.0
    sfron_freq = parse_config(["--unlearn", "SFRon"]).sfron_freq
    assert sfron["runs"] == 1 + 2 and sfron["seconds_per_run"] == (100 + math.ceil(100 / sfron_freq)) * 10 / 250.0
    low = 200 + 540 + 18 + 6 * 10.0 + 3 * sfron["seconds_per_run"]
    assert result["table_hours"] == pytest.approx([low / 3600, (low + 2 * 10.0 + 2 * sfron["seconds_per_run"]) / 3600])
    assert "projected wall time of the whole table" in projection.render(result)
