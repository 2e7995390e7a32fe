"""Image-classification benchmarks 1 and 2: random 10% forgetting, each method at its best learning rate.

    OMP_NUM_THREADS=2 python benchmarks/ic_unlearning.py --preset digits --search_seeds 1   # benchmark 1
    OMP_NUM_THREADS=2 python benchmarks/ic_unlearning.py --preset cifar10                   # benchmark 2

The protocol, on CPU by default:

0. (``--train_subset``) a fixed class-balanced subset of an ImageFolder zip/tree is written to
   ``<out>/data/`` (raw image bytes, nothing re-encoded) and every run reads it;
1. one original model (``--train_epochs`` SGD epochs at lr 0.1, MultiStepLR at 1/2 and 3/4);
   Retrain (the reference, same schedule from scratch) and a SalUn mask on every seed;
2. the learning-rate search: every method x optimizer at each ``--unlearn_lr`` of its grid (``--grid_sgd``
   for sgd, ``--grid_adam`` for adam and dual), on ``--search_seeds``; ``retain_lr`` fixed at 0.01
   (sgd, dual) or 1e-4 (adam) as in the paper;
3. every (method, optimizer) at its lowest-average-gap learning rate on all ``--seeds``.

Prints the parse_result table of the best settings (UA, RA, TA, MIA mean +- std over seeds, average gap
to Retrain, average std), the search table, and unlearning throughput (images forwarded through the
model per second of each unlearning call), and draws the average-gap-vs-lr curves into
``<out>/avg_gap_vs_lr.png``.  Each run calls the entry script's ``main(argv)`` in-process with its printed
log in ``<run folder>/log.txt`` (a folder whose ``run.json`` exists is skipped and an unfinished one
continues from its last ``--resume`` snapshot, so an interrupted benchmark resumes); the folders follow scripts/ImageClassification (``<out>/<method>_<optim>_lr<lr>/seed<k>``),
so ``parse_result.py --log_paths <out>`` works on them.  ``<out>/timings.json`` holds every run's seconds and
``<out>/throughput.json`` every unlearning call's images and seconds, over all invocations.

Presets (``--preset``; any flag given overrides its value):

* ``digits``: scikit-learn's digits (1,294 train / 144 validation / 360 test images at 16x16, no
  download), ResNet-20s, FT/GA/RL/SalUn/SFR-on/SCRUB x sgd/adam/dual, 130 forgotten, 8 training epochs.
* ``cifar10``: ``../shared/data/cifar10-jpeg.zip``, ResNet-20s, SalUn/SFR-on/SCRUB x sgd/dual, sized for
  about an hour on 2 CPU cores; see benchmarks/README.md for the sizing.

Research-code behaviour the grid has to respect (see ImageClassification/unlearn/*.py):
* FT and GA are single-objective; under ``dual`` they step the retain-side SGD at ``--retain_lr``,
  so ``--unlearn_lr`` has no effect there and dual is run at one grid point only.
* SFR-on with ``sgd``/``adam`` runs one optimizer at ``--retain_lr`` for both objectives; the search
  therefore sets ``--retain_lr`` to the swept value for those two (dual keeps retain_lr fixed).
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, Iterator, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from common.datasets import ImageTree  # noqa: E402
from common.io import atomic_path, atomic_write_json, read_json  # noqa: E402
from ImageClassification import (data, generate_mask, main_forget, main_random, main_random_sfron,  # noqa: E402
                                 main_train, parse_result, pipeline)

REPO = Path(__file__).resolve().parents[1]
METHODS = ("FT", "GA", "RL", "SalUn", "SFRon", "SCRUB")
OPTIMS = ("sgd", "adam", "dual")
RETAIN_LR = {"sgd": 0.01, "adam": 1e-4, "dual": 0.01}
ENTRY = {"FT": main_forget, "GA": main_forget, "RL": main_random, "SalUn": main_random,
         "SFRon": main_random_sfron, "SCRUB": main_forget}
UNLEARN = {"FT": "FT", "GA": "GA", "RL": "RL", "SalUn": "RL", "SFRon": "SFRon", "SCRUB": "SCRUB"}

SHARED_CIFAR10_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"
PRESETS = {
    "digits": dict(out="runs/ic_digits", dataset="digits", data=None, arch="resnet20s", batch_size=64,
                   train_epochs=8, unlearn_epochs=1, sfron_iters=20, num_forget=130, mask_ratio="0.5",
                   methods=list(METHODS), optims=list(OPTIMS), seeds=[1, 2, 3, 4, 5], search_seeds=[1, 2],
                   grid_sgd=[5e-3, 1e-2, 2e-2], grid_adam=[5e-5, 1e-4, 2e-4], train_subset=None, test_subset=None),
    # sized for about an hour on 2 CPU cores (benchmarks/README.md): 5,000 of the 50,000 training images
    # (4,500 train + 500 validation after the 10% hold-out), 450 forgotten, the full 10,000-image test set;
    # SFR-on's 126 iterations are 2 epochs of the 4,050 retain images at batch 64
    "cifar10": dict(out="runs/ic_cifar10", dataset="cifar10", data=str(SHARED_CIFAR10_ZIP), arch="resnet20s",
                    batch_size=64, train_epochs=10, unlearn_epochs=2, sfron_iters=126, num_forget=450,
                    mask_ratio="0.5", methods=["SalUn", "SFRon", "SCRUB"], optims=["sgd", "dual"],
                    seeds=[1, 2, 3, 4, 5], search_seeds=[1], grid_sgd=[1e-2, 2e-2, 4e-2],
                    grid_adam=[1e-4, 2e-4, 5e-4], train_subset=5000, test_subset=None),
}

# Per run folder: seconds of the entry call, and (method, optim, images forwarded, seconds) of its
# unlearning call. main() merges in the files of an earlier, interrupted invocation.
TIMINGS: Dict[str, float] = {}
THROUGHPUT: Dict[str, Tuple[str, str, int, float]] = {}
CURRENT = [("", "")]               # (method, optim) of the run being called
MEASURED: List[Tuple[int, float]] = []  # what the timer saw of the current call's unlearning


@contextlib.contextmanager
def images_forwarded(model: nn.Module, device: torch.device) -> Iterator[List]:
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


def install_timer() -> None:
    """Wrap pipeline.get_unlearn_method: count images forwarded through the model and time the call."""
    original = pipeline.get_unlearn_method

    def get(name):
        method = original(name)

        def wrapped(loaders, model, args, mask, device):
            with images_forwarded(model, device) as seen:
                result = method(loaders, model, args, mask, device)
            MEASURED.append(tuple(seen[:2]))
            return result
        return wrapped

    pipeline.get_unlearn_method = get


def cache_image_folders() -> None:
    """Decode each ImageFolder split once per process: every run of the benchmark reads the same files."""
    data.load_imagefolder_arrays = functools.lru_cache(maxsize=None)(data.load_imagefolder_arrays)


def write_subset(source: str, out: Path, train_images: int, test_images: int = None) -> Path:
    """A zip of ``train_images`` training images (the same number per class, ``RandomState(0)``) and
    ``test_images`` test images (all when None) of the ImageFolder zip/tree ``source``; file bytes copied."""
    target = out / "data" / f"{Path(source).stem}_train{train_images}_test{test_images or 'all'}.zip"
    if target.exists():
        return target
    tree = ImageTree(source, "--data", expect="train")
    rng = np.random.RandomState(0)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for split, count in (("train", train_images), ("test", test_images)):
            by_class = tree.files_by_class(split)
            for cls in sorted(by_class):
                names = by_class[cls]
                if count is not None:
                    names = sorted(rng.choice(names, count // len(by_class), replace=False))
                for name in names:
                    archive.writestr(name, tree.read(name))
    return target


def lr_name(lr: float) -> str:
    return f"{lr:g}"


def call(entry, argv: List[str], save_dir: Path) -> None:
    """Run one entry point in-process with its stdout in save_dir/log.txt.

    Skipped when already done (``run.json`` is the last file every entry script writes); an
    interrupted run continues from its last resume snapshot.
    """
    if (save_dir / "run.json").exists():
        return
    save_dir.mkdir(parents=True, exist_ok=True)
    MEASURED.clear()
    start = time.time()
    with open(save_dir / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        entry.main(argv + ["--save_dir", str(save_dir), "--overwrite", "--resume"])
    TIMINGS[str(save_dir)] = round(time.time() - start, 1)
    if MEASURED:
        THROUGHPUT[str(save_dir)] = (*CURRENT[0], *MEASURED[-1])


def unlearn_run(out: Path, common: List[str], method: str, optim: str, lr: float, seed: int,
                args: argparse.Namespace) -> Path:
    save_dir = out / f"{method.lower()}_{optim}_lr{lr_name(lr)}" / f"seed{seed}"
    retain_lr = RETAIN_LR[optim]
    if method == "SFRon" and optim != "dual":
        retain_lr = lr  # one optimizer at --retain_lr for both objectives (research code)
    argv = common + ["--seed", str(seed), "--unlearn", UNLEARN[method], "--optim", optim,
                     "--unlearn_lr", str(lr), "--retain_lr", str(retain_lr),
                     "--model_path", str(out / "original" / "0model_SA_best.pth.tar")]
    if method == "SFRon":
        argv += ["--sfron_iters", str(args.sfron_iters)]
    else:
        argv += ["--unlearn_epochs", str(args.unlearn_epochs)]
    if method == "SalUn":
        argv += ["--mask_path", str(out / "mask" / f"seed{seed}" / f"with_{args.mask_ratio}.pt")]
    CURRENT[0] = (method, optim)
    call(ENTRY[method], argv, save_dir)
    return save_dir


def grid(method: str, optim: str, args: argparse.Namespace) -> Tuple[float, ...]:
    values = tuple(args.grid_sgd if optim == "sgd" else args.grid_adam)
    if method in ("FT", "GA") and optim == "dual":
        return (values[len(values) // 2],)  # --unlearn_lr unused: retain-side SGD at --retain_lr
    return values


def table(paths: List[Path], plot: str = None) -> Tuple[str, list]:
    argv = ["--log_paths", *map(str, paths), "--format", "markdown"] + (["--plot", plot] if plot else [])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rows = parse_result.main(argv)
    return buffer.getvalue().strip(), rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--out", help="work folder")
    parser.add_argument("--dataset", help="--dataset of the entry scripts")
    parser.add_argument("--data", help="--data of the entry scripts (the cifar10 zip)")
    parser.add_argument("--arch")
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--search_seeds", type=int, nargs="+")
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--optims", nargs="+", choices=OPTIMS)
    parser.add_argument("--grid_sgd", type=float, nargs="+", help="--unlearn_lr values searched with sgd")
    parser.add_argument("--grid_adam", type=float, nargs="+", help="--unlearn_lr values searched with adam, dual")
    parser.add_argument("--train_epochs", type=int, help="original model and Retrain")
    parser.add_argument("--unlearn_epochs", type=int)
    parser.add_argument("--sfron_iters", type=int, help="retain steps of SFR-on (one forget step per 5)")
    parser.add_argument("--num_forget", type=int, help="--num_indexes_to_replace")
    parser.add_argument("--mask_ratio", help="SalUn mask with_<ratio>.pt")
    parser.add_argument("--train_subset", type=int, help="training images kept from the --data zip/tree")
    parser.add_argument("--test_subset", type=int, help="test images kept (default: all)")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    started = time.time()
    log = lambda text: print(f"[{time.time() - started:7.1f}s] {text}", flush=True)  # noqa: E731
    common = ["--dataset", args.dataset, "--arch", args.arch, "--batch_size", str(args.batch_size),
              "--device", args.device, "--num_indexes_to_replace", str(args.num_forget)]
    if args.data:
        data_path = args.data
        if args.train_subset:
            data_path = write_subset(args.data, out, args.train_subset, args.test_subset)
        common += ["--data", str(data_path)]
        log(f"data: {data_path}")
    schedule = ["--decreasing_lr", f"{args.train_epochs // 2},{args.train_epochs * 3 // 4}"]
    install_timer()
    cache_image_folders()
    for name, store in (("timings.json", TIMINGS), ("throughput.json", THROUGHPUT)):
        if (out / name).is_file():
            store.update(read_json(out / name))

    call(main_train, common + ["--epochs", str(args.train_epochs), "--lr", "0.1"] + schedule, out / "original")
    log("original model trained")
    model_path = str(out / "original" / "0model_SA_best.pth.tar")
    for seed in args.seeds:
        mask_dir = out / "mask" / f"seed{seed}"  # the mask depends on the seed's forget set
        if not (mask_dir / f"with_{args.mask_ratio}.pt").exists() and "SalUn" in args.methods:
            mask_dir.mkdir(parents=True, exist_ok=True)
            with open(mask_dir / "log.txt", "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
                generate_mask.main(common + ["--seed", str(seed), "--model_path", model_path,
                                             "--save_dir", str(mask_dir)])
        CURRENT[0] = ("Retrain", "sgd")
        call(main_forget, common + ["--seed", str(seed), "--unlearn", "retrain", "--unlearn_epochs",
                                    str(args.train_epochs), "--unlearn_lr", "0.1"] + schedule,
             out / "retrain_sgd_lr0.1" / f"seed{seed}")
        log(f"mask and Retrain seed {seed} done")
    retrain = [out / "retrain_sgd_lr0.1" / f"seed{seed}" / "eval_result.json" for seed in args.seeds]

    search: List[Path] = []
    for method in args.methods:
        for optim in args.optims:
            for lr in grid(method, optim, args):
                for seed in args.search_seeds:
                    search.append(unlearn_run(out, common, method, optim, lr, seed, args) / "eval_result.json")
        log(f"search {method} done")
    search_text, search_rows = table(retrain + search, plot=str(out / "avg_gap_vs_lr.png"))

    best: Dict[Tuple[str, str], Tuple[float, float]] = {}
    for row in search_rows:
        key = (row["method"], row["optim"])
        if row["method"] != "retrain" and (key not in best or row["avg_gap"] < best[key][1]):
            best[key] = (row["unlearn_lr"], row["avg_gap"])
    final: List[Path] = []
    for method in args.methods:
        for optim in args.optims:
            lr = best[(method, optim)][0]
            for seed in args.seeds:
                final.append(unlearn_run(out, common, method, optim, lr, seed, args) / "eval_result.json")
        log(f"final {method} done")
    final_text, _ = table(retrain + final)

    speeds: Dict[Tuple[str, str], List[float]] = {}
    for method, optim, images, seconds in THROUGHPUT.values():
        speeds.setdefault((method, optim), []).append(images / seconds)
    lines = ["| method | optim | images / s (median over runs) | runs |", "|---|---|---:|---:|"]
    for (method, optim), runs in speeds.items():
        lines.append(f"| {method} | {optim} | {statistics.median(runs):.0f} | {len(runs)} |")
    atomic_write_json(THROUGHPUT, out / "throughput.json")
    atomic_write_json(TIMINGS, out / "timings.json")
    print(f"\n## Best learning rate per method and optimizer, seeds {args.seeds}\n\n{final_text}")
    print(f"\n## Learning-rate search, seeds {args.search_seeds}\n\n{search_text}")
    print(f"\n## Unlearning throughput ({args.device}, images forwarded through the model per second)\n")
    print("\n".join(lines))
    log(f"done; curves in {out / 'avg_gap_vs_lr.png'}")


if __name__ == "__main__":
    main()
