"""Datasets, the train/validation split and forget-set selection of the image-classification scripts.

The split and selection follow the research code exactly:

* validation: 10% of every class of the training set, drawn with
  ``np.random.RandomState(seed)``; the rest (in index order) is the train set;
* forget set: ``--class_to_replace k`` takes the train samples of class ``k``
  (``-1``: all samples), and ``--num_indexes_to_replace n`` draws ``n`` of them
  with ``np.random.RandomState(seed - 1)`` without replacement;
  ``--indexes_to_replace`` names them explicitly;
* forgetting a whole class also removes it from the test set.

Every draw uses its own seeded ``RandomState``, so the same ``--seed`` selects
the same forget set on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from common.checkpointing import resumable_loader
from common.datasets import ArrayImageDataset, ImageTree, load_digits_arrays, load_imagefolder_arrays
from common.errors import UsageError
from dualoptim.registry import Registry
from common.seed import seed_worker
from ImageClassification.device_data import FLAG as DEVICE_FLAG
from ImageClassification.device_data import BatchAugment, DeviceImages, DeviceLoader, ResidentImages, to_device

if TYPE_CHECKING:
    from ImageClassification.config import UnlearnConfig

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y


@dataclass(frozen=True)
class DatasetSpec:
    """What a ``--dataset`` name provides: loader of uint8 NHWC arrays and its constants (as the research code)."""

    load: Callable[["UnlearnConfig"], Arrays]
    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]
    input_size: int                       # model input; images of another size are resized (bicubic) to it
    crop_padding: Optional[int] = 4       # RandomCrop(image size, padding) in training; None: no crop
    flip: bool = True                     # horizontal flips are label-preserving (not for digits or house numbers)
    val_fraction: float = 0.1             # of each class, held out of the train split for validation
    # TinyImagenet: RandAugment(2, 2) in training when "retrain" is in --unlearn (main_train's default too)
    randaugment_for_retrain: bool = False
    # whether forgetting a whole class also removes it from the test set
    drop_forgotten_class_from_test: bool = True


DATASETS: Registry[DatasetSpec] = Registry("--dataset")


def _torchvision_arrays(name: str, config: UnlearnConfig) -> Arrays:
    import torchvision.datasets as tvd

    root = Path(config.data)
    try:
        if name == "svhn":
            train = tvd.SVHN(root, split="train", download=config.download)
            test = tvd.SVHN(root, split="test", download=config.download)
            # SVHN stores NCHW; bring it to the NHWC layout of the other datasets
            return (train.data.transpose(0, 2, 3, 1), np.asarray(train.labels),
                    test.data.transpose(0, 2, 3, 1), np.asarray(test.labels))
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        train = cls(root, train=True, download=config.download)
        test = cls(root, train=False, download=config.download)
    except RuntimeError as err:
        raise UsageError(f"--data {root}: {name} not found there ({' '.join(str(err).split())}); "
                         f"pass --download to fetch it, or point --data at it") from None
    return train.data, np.asarray(train.targets), test.data, np.asarray(test.targets)


def _load_cifar10(config: UnlearnConfig) -> Arrays:
    """torchvision's CIFAR-10 under ``--data``, or an ImageFolder tree / zip of it."""
    path = Path(config.data)
    if path.suffix == ".zip" or (path / "train").is_dir() and not (path / "cifar-10-batches-py").exists():
        train_x, train_y, classes = load_imagefolder_arrays(path, "train")
        test_x, test_y, test_classes = load_imagefolder_arrays(path, "test")
        if classes != test_classes:
            raise UsageError(f"--data {path}: train and test folders have different classes")
        return train_x, train_y, test_x, test_y
    return _torchvision_arrays("cifar10", config)


def _load_tiny_imagenet(config: UnlearnConfig) -> Arrays:
    """TinyImagenet at ``--data_dir`` (a folder or a zip of one), in any of three layouts.

    1. As distributed (``tiny-imagenet-200``): ``train/<wnid>/images/*.JPEG``,
       ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``; ``test/``
       has no labels and is not read.  The research code moves the validation
       images on its first run: the first 25 of each class into
       ``val/<wnid>/images/`` (which it never reads) and the other 25 into
       ``test/<wnid>/images/``, its test set.  We read the tree as it is and
       take the same test set, the second half of each class's validation
       images (in annotation-file order: the research code's split follows the
       directory listing, which differs between file systems).
    2. As the research code leaves it: ``train/``, ``test/<wnid>/images/``.
    3. Any ImageFolder: ``train/<class>/``, ``test/<class>/`` (or ``val/<class>/``).
    """
    tree = ImageTree(config.data_dir, "--data_dir", expect="train")
    train_x, train_y, classes = tree.imagefolder("train")
    if tree.is_file("val/val_annotations.txt") and tree.is_dir("val/images"):
        files, labels = _tiny_imagenet_test_half(tree, classes)
        return train_x, train_y, tree.decode(files, "val/images/"), labels
    if not (tree.is_dir("test") or tree.is_dir("val")):
        raise UsageError(f"--data_dir {config.data_dir}: no test/ or val/ folder (expected TinyImageNet's "
                         f"val/images/ with val/val_annotations.txt, or test/<class>/)")
    test_x, test_y, _ = tree.imagefolder("test" if tree.is_dir("test") else "val", classes)
    return train_x, train_y, test_x, test_y


def _tiny_imagenet_test_half(tree: ImageTree, classes: Sequence[str]) -> Tuple[list, np.ndarray]:
    """The research code's TinyImagenet test set: of each class's validation images, the second half."""
    class_index = {wnid: i for i, wnid in enumerate(classes)}
    by_class: Dict[str, list] = {}
    for number, line in enumerate(tree.read("val/val_annotations.txt").decode().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in class_index:
            raise UsageError(f"--data_dir {tree.path}: val/val_annotations.txt line {number}: expected "
                             f"'<file>\\t<wnid of a train/ class>...', got {line[:60]!r}")
        by_class.setdefault(fields[1], []).append(fields[0])
    files, labels = [], []
    for wnid in classes:  # ImageFolder order of the research code's test/ folder: class, then file name
        members = by_class.get(wnid, [])
        test_half = sorted(members[len(members) // 2:])
        files += [f"val/images/{name}" for name in test_half]
        labels += [class_index[wnid]] * len(test_half)
    if not files:
        raise UsageError(f"--data_dir {tree.path}: val/val_annotations.txt lists no validation images")
    return files, np.array(labels, dtype=np.int64)


def _load_digits(config: UnlearnConfig) -> Arrays:
    return load_digits_arrays(image_size=config.input_size, channels=3)


DATASETS.register("cifar10")(DatasetSpec(_load_cifar10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32))
DATASETS.register("cifar100")(DatasetSpec(lambda a: _torchvision_arrays("cifar100", a), 100,
                                          (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), 32))
# The research code trains SVHN without augmentation.
DATASETS.register("svhn")(DatasetSpec(lambda a: _torchvision_arrays("svhn", a), 10,
                                      (0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052), 32,
                                      crop_padding=None, flip=False))
# TinyImagenet as the research code reads it: 64x64 images cropped and flipped at 64, then resized to 224
# (for every --arch; --input_size 64 keeps them at 64), no validation hold-out (its validation loader is
# the test set), and a class forgotten as a whole stays in the test set.  The research code normalises
# these images twice for its ResNets (in the dataset and in the model); we normalise once.
DATASETS.register("TinyImagenet")(DatasetSpec(_load_tiny_imagenet, 200, (0.485, 0.456, 0.406),
                                              (0.229, 0.224, 0.225), 224, val_fraction=0.0,
                                              randaugment_for_retrain=True, drop_forgotten_class_from_test=False))
DATASETS.register("digits")(DatasetSpec(_load_digits, 10, (0.1, 0.1, 0.1), (0.25, 0.25, 0.25), 16,
                                        crop_padding=2, flip=False))


def dataset_settings(dataset: str, input_size: Optional[int]) -> Dict[str, Any]:
    """The settings ``--dataset`` fixes: its classes, its normalisation and, unless ``--input_size`` is
    given, the model input size (:meth:`ImageClassification.config.UnlearnConfig.from_args` freezes them)."""
    spec = DATASETS.get(dataset)
    return {"num_classes": spec.num_classes, "input_size": spec.input_size if input_size is None else input_size,
            "data_mean": list(spec.mean), "data_std": list(spec.std)}


def train_transform(spec: DatasetSpec, config: UnlearnConfig, image_size: int) -> Callable:
    """Random crop with padding and horizontal flip where the dataset has them (none with ``--no-aug``),
    resizing to ``--input_size``, and TinyImagenet's RandAugment for retraining."""
    augment = not config.no_aug
    steps = []
    if augment and spec.crop_padding is not None:
        steps.append(transforms.RandomCrop(image_size, padding=spec.crop_padding))
    if augment and spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += _resize(config, image_size)
    if augment and spec.randaugment_for_retrain and "retrain" in config.unlearn:
        steps.append(transforms.RandAugment(num_ops=2, magnitude=2))
    return transforms.Compose(steps + [transforms.ToTensor()])


def test_transform(config: UnlearnConfig, image_size: int) -> Callable:
    return transforms.Compose(_resize(config, image_size) + [transforms.ToTensor()])


def _resize(config: UnlearnConfig, image_size: int) -> list:
    if config.input_size == image_size:
        return []
    return [transforms.Resize(config.input_size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)]


def split_validation(targets: np.ndarray, seed: int, fraction: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """``(train_index, val_index)``: ``fraction`` of each class drawn with ``RandomState(seed)``."""
    rng = np.random.RandomState(seed)
    val_index = np.hstack([rng.choice(np.flatnonzero(targets == label),
                                      int(fraction * np.sum(targets == label)), replace=False)
                           for label in range(int(targets.max()) + 1)]).astype(np.int64)
    return np.setdiff1d(np.arange(len(targets)), val_index), np.sort(val_index)


def parse_indexes(text: Optional[str]) -> Optional[np.ndarray]:
    if text is None:
        return None
    try:
        return np.array([int(part) for part in str(text).replace(" ", "").split(",") if part], dtype=np.int64)
    except ValueError:
        raise UsageError(f"--indexes_to_replace: expected comma-separated integers, got {text!r}") from None


def select_forget_indexes(targets: np.ndarray, seed: int, class_to_replace: int = -1,
                          num_indexes_to_replace: Optional[int] = None,
                          indexes_to_replace: Optional[np.ndarray] = None, num_classes: Optional[int] = None) -> np.ndarray:
    """Indexes (into the train set) of the samples to forget, as the research code selects them."""
    n = len(targets)
    if indexes_to_replace is not None:
        if num_indexes_to_replace is not None or class_to_replace != -1:
            raise UsageError("--indexes_to_replace: cannot be combined with --class_to_replace or "
                             "--num_indexes_to_replace")
        bad = indexes_to_replace[(indexes_to_replace < 0) | (indexes_to_replace >= n)]
        if len(bad):
            raise UsageError(f"--indexes_to_replace: index {int(bad[0])} is outside the train set (0..{n - 1})")
        return np.unique(indexes_to_replace)
    num_classes = num_classes or int(targets.max()) + 1
    if not -1 <= class_to_replace < num_classes:
        raise UsageError(f"--class_to_replace: must be -1 (any class) or 0..{num_classes - 1}, "
                         f"got {class_to_replace}")
    candidates = np.flatnonzero(targets == class_to_replace) if class_to_replace >= 0 else np.arange(n)
    if num_indexes_to_replace is None:
        if class_to_replace < 0:
            raise UsageError("--num_indexes_to_replace: required unless --class_to_replace or "
                             "--indexes_to_replace selects the forget set")
        return candidates
    if num_indexes_to_replace > len(candidates):
        what = f"class {class_to_replace}" if class_to_replace >= 0 else "the train set"
        raise UsageError(f"--num_indexes_to_replace: {num_indexes_to_replace} is larger than {what} "
                         f"({len(candidates)} samples)")
    rng = np.random.RandomState(seed - 1)
    return rng.choice(candidates, size=num_indexes_to_replace, replace=False)


#: what :func:`make_loader` takes: a split on the host, or a view of one resident on the device
Samples = Union[ArrayImageDataset, DeviceImages]
#: what it returns: the per-image DataLoader, or batches built on the device (``--data_on_device``)
Loader = Union[DataLoader, DeviceLoader]


@dataclass
class UnlearnData:
    """Every split of one run, as arrays, with the transforms to view them.

    After :meth:`place_on_device` (``--data_on_device``) the splits are also resident on the device, and
    :meth:`split`, :meth:`subset`, :attr:`forget` and :attr:`retain` give views of those instead.
    """

    train: ArrayImageDataset            # the whole train split (forget + retain), train transform
    forget_index: np.ndarray            # indexes into ``train``
    val: ArrayImageDataset
    test: ArrayImageDataset
    num_classes: int
    eval_transform: Callable
    retain_index: np.ndarray = field(init=False)
    resident: Optional[Dict[str, Tuple[ResidentImages, torch.Tensor]]] = field(default=None, init=False)
    augment: Optional[BatchAugment] = field(default=None, init=False)  # of the resident train split

    def __post_init__(self) -> None:
        keep = np.ones(len(self.train), dtype=bool)
        keep[self.forget_index] = False
        self.retain_index = np.flatnonzero(keep)

    def place_on_device(self, device: torch.device, augment: Optional[BatchAugment], what: str = "the data") -> None:
        """Copy every split's images and labels to ``device`` once (the validation split is the test split
        when there is no hold-out); training views of the train split get ``augment``, for which the train
        split is stored padded and mirrored (:class:`~ImageClassification.device_data.ResidentImages`)."""
        splits = {"train": self.train, "test": self.test, **({"val": self.val} if self.val is not self.test else {})}
        padding = (augment.padding or 0) if augment is not None else 0
        mirrored = augment is not None and augment.flip
        stored = {name: ResidentImages.nbytes(dataset.data.shape, *((padding, mirrored) if name == "train" else ()))
                  for name, dataset in splits.items()}
        # the train images travel as they are and are padded there: both are held while the store is built
        needed = sum(stored.values()) + self.train.data.nbytes + sum(d.targets.nbytes for d in splits.values())
        arrays = {f"{name}/{part}": getattr(dataset, part) for name, dataset in splits.items()
                  for part in ("data", "targets")}
        tensors = to_device(arrays, device, what, needed)
        self.resident = {name: (ResidentImages(tensors.pop(f"{name}/data"), *((padding, mirrored) if name == "train"
                                                                               else ())), tensors[f"{name}/targets"])
                         for name in splits}
        self.augment = augment

    def _view(self, split: str, index: Optional[np.ndarray], train: bool) -> DeviceImages:
        split = "test" if split == "val" and self.val is self.test else split
        images, labels = self.resident[split]
        source = getattr(self, split)
        if split == "train" and not train:  # the train split's images with the evaluation transform
            source = ArrayImageDataset(source.data, source.targets, self.eval_transform)
        positions = (torch.arange(len(labels), device=labels.device) if index is None
                     else torch.as_tensor(index, dtype=torch.int64).to(labels.device))
        return DeviceImages(images, positions, labels[positions], self.augment if train else None, source)

    def split(self, name: str) -> Samples:
        """``"train"`` (train transform), ``"val"`` or ``"test"``: the whole split."""
        if self.resident is not None:
            return self._view(name, None, train=name == "train")
        return getattr(self, name)

    def subset(self, index: np.ndarray, train: bool = True) -> Samples:
        if self.resident is not None:
            return self._view("train", index, train)
        transform = self.train.transform if train else self.eval_transform
        return ArrayImageDataset(self.train.data[index], self.train.targets[index], transform)

    @property
    def forget(self) -> Samples:
        return self.subset(self.forget_index)

    @property
    def retain(self) -> Samples:
        return self.subset(self.retain_index)


def load_unlearn_data(config: UnlearnConfig, split_seed: Optional[int] = None,
                      device: Optional[torch.device] = None) -> UnlearnData:
    """Load ``--dataset``, split off validation and select the forget set.

    ``split_seed`` defaults to ``--seed`` (the research code's marked loader);
    ``main_train`` passes 1, the seed of the research code's unmarked loader.
    With ``--data_on_device`` the splits are then placed on ``device``, the run's device
    (:mod:`ImageClassification.device_data`).
    """
    spec = DATASETS.get(config.dataset)
    train_x, train_y, test_x, test_y = spec.load(config)
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    train_index, val_index = split_validation(train_y, config.seed if split_seed is None else split_seed,
                                              spec.val_fraction)
    has_forget = (config.num_indexes_to_replace is not None or config.class_to_replace != -1
                  or config.indexes_to_replace is not None)
    targets = train_y[train_index]
    forget_index = (select_forget_indexes(targets, config.seed, config.class_to_replace, config.num_indexes_to_replace,
                                          parse_indexes(config.indexes_to_replace), spec.num_classes)
                    if has_forget else np.array([], dtype=np.int64))
    if spec.drop_forgotten_class_from_test and config.class_to_replace >= 0 and (
            config.num_indexes_to_replace is None
            or config.num_indexes_to_replace == np.sum(targets == config.class_to_replace)):
        keep = test_y != config.class_to_replace  # the whole class is forgotten: drop it from the test set too
        test_x, test_y = test_x[keep], test_y[keep]
    image_size = train_x.shape[1]
    evaluation = test_transform(config, image_size)
    test = ArrayImageDataset(test_x, test_y, evaluation)
    # without a validation hold-out the research code validates on the test set
    val = ArrayImageDataset(train_x[val_index], train_y[val_index], evaluation) if len(val_index) else test
    train = ArrayImageDataset(train_x[train_index], targets, train_transform(spec, config, image_size))
    data = UnlearnData(train=train, forget_index=np.sort(forget_index), val=val, test=test,
                       num_classes=spec.num_classes, eval_transform=evaluation)
    if config.data_on_device:
        if device is None:
            raise ValueError(f"{DEVICE_FLAG}: load_unlearn_data needs the run's device")
        data.place_on_device(device, batch_augment(spec, config, image_size), f"--dataset {config.dataset}")
    return data


def batch_augment(spec: DatasetSpec, config: UnlearnConfig, image_size: int) -> Optional[BatchAugment]:
    """The device path's version of :func:`train_transform`: crop and flip as the dataset has them (none
    with ``--no-aug``).  Resizing and RandAugment have no batched version: a one-line error asks for the
    loader path where :func:`train_transform` would use them."""
    if config.input_size != image_size:
        raise UsageError(f"{DEVICE_FLAG}: --dataset {config.dataset} images are {image_size}x{image_size} and "
                         f"would be resized to --input_size {config.input_size}, which the device path does not "
                         f"do; pass --input_size {image_size} or drop {DEVICE_FLAG}")
    augment = not config.no_aug
    if augment and spec.randaugment_for_retrain and "retrain" in config.unlearn:
        raise UsageError(f"{DEVICE_FLAG}: --dataset {config.dataset} retraining uses RandAugment, which the "
                         f"device path does not do; pass --no-aug or drop {DEVICE_FLAG}")
    padding = spec.crop_padding if augment else None
    flip = augment and spec.flip
    return BatchAugment(padding, flip) if padding is not None or flip else None


def make_loader(dataset: Samples, config: UnlearnConfig, shuffle: bool,
                seed: Optional[int] = None) -> Loader:
    """A DataLoader with the run's batch size and workers (a :class:`DeviceLoader` for resident samples).

    Shuffled loaders come from :func:`~common.checkpointing.resumable_loader`: the
    order of epoch ``e`` depends on ``(seed, e)`` only (``seed`` defaults to
    ``--seed``), so a resumed run sees the same batches.
    """
    if isinstance(dataset, DeviceImages):
        return DeviceLoader(dataset, config.batch_size, config.seed if seed is None else seed, shuffle,
                            torch.channels_last if config.channels_last else torch.contiguous_format)
    if shuffle:
        return resumable_loader(dataset, config.batch_size, config.seed if seed is None else seed,
                                num_workers=config.num_workers, pin_memory=torch.cuda.is_available())
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
                      worker_init_fn=seed_worker, pin_memory=torch.cuda.is_available())


@dataclass
class UnlearnLoaders:
    """The loaders of one unlearning run, what every ``--unlearn`` method receives.

    ``forget_loader`` and ``retain_loader`` partition the training set and
    yield ``(image, true_label)`` with training-time augmentation; the forget
    labels are the original ones (methods that relabel, such as RL, do so
    themselves).  ``val_loader`` and ``test_loader`` are evaluation loaders.
    """

    forget_loader: Loader
    retain_loader: Loader
    test_loader: Loader
    num_classes: int
    val_loader: Optional[Loader] = None


def unlearn_loaders(data: UnlearnData, config: UnlearnConfig) -> UnlearnLoaders:
    """Shuffled train-transform loaders of the forget and retain sets, plus val/test loaders."""
    if len(data.forget_index) == 0:
        raise UsageError("--num_indexes_to_replace/--class_to_replace/--indexes_to_replace: "
                         "the forget set is empty")
    return UnlearnLoaders(forget_loader=make_loader(data.forget, config, shuffle=True),
                          retain_loader=make_loader(data.retain, config, shuffle=True),
                          test_loader=make_loader(data.split("test"), config, shuffle=False),
                          num_classes=data.num_classes,
                          val_loader=make_loader(data.split("val"), config, shuffle=False))


def evaluation_loaders(data: UnlearnData, config: UnlearnConfig) -> Dict[str, Loader]:
    """Test-transform loaders of retain, forget, val and test, in the research code's order."""
    return {"retain": make_loader(data.subset(data.retain_index, train=False), config, shuffle=False),
            "forget": make_loader(data.subset(data.forget_index, train=False), config, shuffle=False),
            "val": make_loader(data.split("val"), config, shuffle=False),
            "test": make_loader(data.split("test"), config, shuffle=False)}
