"""Image-classification benchmark 3: images per second of one unlearning epoch per method, CIFAR-10 inputs.

    OMP_NUM_THREADS=2 python benchmarks/ic_throughput.py                     # resnet20s, CPU
    python benchmarks/ic_throughput.py --archs resnet18 --device cuda --amp --amp_dtype float16 \\
        --channels_last --subset 20000 --num_workers 8                       # GPU

A fixed subset of CIFAR-10 training images (``--subset``, the same number per class, read from the
ImageFolder zip ``--data``; ``--synthetic`` uses random 32x32 images instead, for a machine without the
zip: the cost of an epoch does not depend on the pixels) is split into 10% forget / 90% retain, and every
``--methods`` x ``--optims`` runs one unlearning epoch through ``get_unlearn_method(name)`` on a freshly
initialised ``--arch`` model, with the training augmentation (random crop + flip) of the pipeline.  SalUn
is RL with a 50% saliency mask; SFR-on runs one retain pass (``--sfron_iters`` = retain batches) with a
forget step every 5th, after its two Fisher passes, which are part of its epoch and counted.  Reported:
images forwarded through the model per second of the call (the SCRUB teacher's forwards are not
counted), median over ``--repeats``, after one untimed warm-up epoch per architecture.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Iterator, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.datasets import ArrayImageDataset, ImageTree  # noqa: E402
from common.device import get_device  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.saliency import top_fraction_masks  # noqa: E402
from common.seed import seed_everything  # noqa: E402
from ImageClassification.arg_parser import parse_config  # noqa: E402
from ImageClassification.data import (DATASETS, UnlearnData, batch_augment, test_transform,  # noqa: E402
                                      train_transform, unlearn_loaders)
from ImageClassification.models import build_model_from_config  # noqa: E402
from ImageClassification.unlearn import get_unlearn_method  # noqa: E402
from benchmarks.evidence.ic import SHARED_CIFAR10_ZIP  # noqa: E402

METHODS = ("retrain", "FT", "GA", "RL", "SalUn", "SFRon", "SCRUB")
LR = {"sgd": 0.01, "adam": 1e-4, "dual": 1e-4}


@contextlib.contextmanager
def images_forwarded(model: torch.nn.Module, device: torch.device) -> Iterator[List]:
    """Yields ``[images, seconds, cpu seconds]``, filled when the block ends: images through ``model``,
    wall time (CUDA work queued by the block included) and this process's CPU time (all threads)."""
    result = [0, 0.0, 0.0]

    def count(module, inputs):
        if module is model:  # not copies of it (SCRUB's teacher is a deepcopy, hooks included)
            result[0] += len(inputs[0])

    handle = model.register_forward_pre_hook(count)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result[1], result[2] = time.perf_counter() - start, time.process_time() - cpu_start
        handle.remove()


def subset_arrays(args: argparse.Namespace) -> Tuple[np.ndarray, np.ndarray]:
    """``--subset`` CIFAR-10 training images, the first ``subset / 10`` of each class in ImageFolder order."""
    per_class = args.subset // 10
    if args.synthetic:
        rng = np.random.RandomState(0)
        return rng.randint(0, 256, (per_class * 10, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), per_class)
    tree = ImageTree(args.data, "--data", expect="train")
    by_class = tree.files_by_class("train")
    names = [name for cls in sorted(by_class) for name in by_class[cls][:per_class]]
    return tree.decode(names, "train/"), np.repeat(np.arange(len(by_class)), per_class)


def pipeline_args(args: argparse.Namespace, arch: str, method: str, optim: str, retain_batches: int,
                  on_device: bool = False):
    argv = ["--dataset", "cifar10", "--arch", arch, "--unlearn", "RL" if method == "SalUn" else method,
            "--optim", optim, "--unlearn_lr", str(LR[optim]), "--retain_lr", "0.01", "--unlearn_epochs", "1",
            "--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers),
            "--sfron_iters", str(retain_batches), "--device", args.device, "--amp_dtype", args.amp_dtype]
    argv += ["--amp"] * args.amp + ["--channels_last"] * args.channels_last + ["--data_on_device"] * on_device
    run_config = parse_config(argv)
    return run_config, DATASETS.get(run_config.dataset)


def one_epoch(args: argparse.Namespace, arch: str, method: str, optim: str, images: np.ndarray,
              labels: np.ndarray, device: torch.device, on_device: bool = False) -> Tuple[int, float, float]:
    """(images forwarded, seconds, CPU seconds) of one unlearning epoch of ``method`` on a fresh ``arch``
    (``on_device``: ``--data_on_device``, the data placed on ``device`` before the clock starts)."""
    forget_index = np.arange(0, len(labels), 10)                   # every 10th image: 10%, all classes
    retain_batches = math.ceil((len(labels) - len(forget_index)) / args.batch_size)
    run_args, spec = pipeline_args(args, arch, method, optim, retain_batches, on_device)
    seed_everything(1)
    size = images.shape[1]
    evaluation = test_transform(run_args, size)
    held_out = ArrayImageDataset(images[:args.batch_size], labels[:args.batch_size], evaluation)
    data = UnlearnData(train=ArrayImageDataset(images, labels, train_transform(spec, run_args, size)),
                       forget_index=forget_index, val=held_out, test=held_out, num_classes=10,
                       eval_transform=evaluation)
    if on_device:
        data.place_on_device(device, batch_augment(spec, run_args, size))
    model = build_model_from_config(run_args).to(device)
    mask = None
    if method == "SalUn":
        scores = {name: torch.rand_like(p) for name, p in model.named_parameters()}
        mask = top_fraction_masks(scores, (0.5,))[0.5]
    with contextlib.redirect_stdout(io.StringIO()), images_forwarded(model, device) as seen:
        get_unlearn_method(run_args.unlearn)(unlearn_loaders(data, run_args), model, run_args, mask, device)
    return tuple(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10_ZIP), help="CIFAR-10 ImageFolder zip or tree")
    parser.add_argument("--synthetic", action="store_true", help="random 32x32 images instead of --data")
    parser.add_argument("--archs", nargs="+", default=["resnet20s"], help="e.g. resnet20s resnet18")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--optims", nargs="+", default=["sgd", "dual"], choices=sorted(LR))
    parser.add_argument("--subset", type=int, default=2000, help="training images (forget 10%%, retain 90%%)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--amp_dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--json", help="also write the table to this JSON file")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    device = get_device(args.device, None)
    images, labels = subset_arrays(args)
    precision = f"amp {args.amp_dtype}" if args.amp else "float32"
    print(f"{len(images)} CIFAR-10 {'synthetic ' if args.synthetic else ''}training images "
          f"({len(images) // 10} forget), batch {args.batch_size}, {device}, {precision}"
          f"{', channels_last' if args.channels_last else ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    rows = []
    print("| arch | method | optim | images / s | s / epoch | CPU s / epoch | images forwarded |\n"
          "|---|---|---|---:|---:|---:|---:|")
    for arch in args.archs:
        one_epoch(args, arch, "FT", "sgd", images, labels, device)   # warm-up: allocator, kernels, caches
        for method in args.methods:
            for optim in args.optims:
                runs = [one_epoch(args, arch, method, optim, images, labels, device) for _ in range(args.repeats)]
                rate = statistics.median(n / s for n, s, _ in runs)
                seconds = statistics.median(s for _, s, _ in runs)
                cpu = statistics.median(c for _, _, c in runs)
                rows.append({"arch": arch, "method": method, "optim": optim, "images_per_s": rate,
                             "seconds": seconds, "cpu_seconds": cpu, "images": runs[0][0]})
                print(f"| {arch} | {method} | {optim} | {rate:.0f} | {seconds:.1f} | {cpu:.1f} | {runs[0][0]} |",
                      flush=True)
    if args.json:
        atomic_write_json({"config": vars(args), "device": str(device), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
