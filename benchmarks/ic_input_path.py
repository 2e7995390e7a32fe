"""Image-classification input paths side by side: the per-image DataLoader against ``--data_on_device``.

    OMP_NUM_THREADS=1 python benchmarks/ic_input_path.py --json benchmarks/results/ic_input_path_cpu.json
    OMP_NUM_THREADS=1 python benchmarks/ic_input_path.py --accuracy --dataset digits --input_size 8
    (commands and results: benchmarks/README.md, "Input paths")

Throughput (default): for every ``--archs`` x precision (float32; bfloat16 autocast + channels-last), one
training epoch (FT: the retain set, 90% of a CIFAR-10 subset, with the pipeline's crop + flip; sgd) on a fresh
model through each path, after one untimed warm-up epoch of each. The paths alternate within every round
(loader first in even rounds, device first in odd ones), so a machine shared with other jobs slows both
alike; reported are the medians over ``--repeats`` rounds of images/s and epoch seconds per path, the
median over rounds of the device/loader epoch-time ratio (each ratio from two adjacent epochs), and a full
CIFAR-10 epoch (45,000 images) projected from the median rate.

``--data_only``: images/s of building one epoch's batches of the first ``--subsets`` images alone, no model,
per path and memory layout, interleaved.

``--accuracy``: ``main_train.py`` on a CIFAR-10 subset (``--train_images``, ``--test_images``; or on
``--dataset digits``: crop padding 2, no flips) for
``--epochs`` epochs with each path and each of ``--seeds`` (``--train_seed``), interleaved; reported are the
test accuracies, their mean and std per path, and the difference of the means against the seeds' spread.
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ic_throughput import one_epoch, subset_arrays  # noqa: E402

from common.datasets import ArrayImageDataset  # noqa: E402
from common.device import get_device  # noqa: E402
from common.io import atomic_write_json, read_json  # noqa: E402
from ImageClassification import main_train  # noqa: E402
from benchmarks.evidence.ic import SHARED_CIFAR10_ZIP, write_subset  # noqa: E402

PRECISIONS = {"float32": {"amp": False, "channels_last": False},
              "bf16+channels_last": {"amp": True, "channels_last": True}}
CIFAR10_TRAIN_IMAGES = 45_000  # after the pipeline's 10% validation hold-out


def throughput(args: argparse.Namespace, device: torch.device) -> list:
    rows = []
    print("| arch | precision | path | images / s | s / epoch | CPU s / epoch | device / loader epoch time "
          "| projected CIFAR-10 epoch (s) |\n|---|---|---|---:|---:|---:|---:|---:|")
    for arch, subset in zip(args.archs, args.subsets):
        images, labels = subset_arrays(argparse.Namespace(subset=subset, synthetic=args.synthetic, data=args.data))
        for precision, flags in PRECISIONS.items():
            run = argparse.Namespace(**{**vars(args), **flags})

            def epoch(on_device: bool):
                return one_epoch(run, arch, "FT", "sgd", images, labels, device, on_device)

            epoch(False), epoch(True)  # warm-up: allocator, kernels, caches
            runs = {False: [], True: []}
            for round_ in range(args.repeats):
                for on_device in ((False, True) if round_ % 2 == 0 else (True, False)):
                    runs[on_device].append(epoch(on_device))
            ratio = statistics.median(d[1] / l[1] for l, d in zip(runs[False], runs[True]))
            for on_device, path in ((False, "loader"), (True, "device")):
                rate = statistics.median(n / s for n, s, _ in runs[on_device])
                row = {"arch": arch, "precision": precision, "path": path, "images": runs[on_device][0][0],
                       "images_per_s": rate, "seconds": statistics.median(s for _, s, _ in runs[on_device]),
                       "cpu_seconds": statistics.median(c for _, _, c in runs[on_device]),
                       "device_over_loader": ratio, "projected_cifar10_epoch_s": CIFAR10_TRAIN_IMAGES / rate,
                       "epochs": [list(r) for r in runs[on_device]]}
                rows.append(row)
                print(f"| {arch} | {precision} | {path} | {rate:.0f} | {row['seconds']:.2f} | "
                      f"{row['cpu_seconds']:.2f} | {ratio:.2f} | {row['projected_cifar10_epoch_s']:.0f} |", flush=True)
    return rows


def data_only(args: argparse.Namespace, device: torch.device) -> list:
    """Images/s of building one epoch's training batches (what the engine's ``to_device`` receives, moved there
    in the run's memory format) without the model, per path, interleaved over ``--repeats`` rounds."""
    from ImageClassification.arg_parser import parse_config
    from ImageClassification.data import DATASETS, UnlearnData, batch_augment, make_loader, train_transform
    from ImageClassification.unlearn.engine import memory_format

    images, labels = subset_arrays(argparse.Namespace(subset=args.subsets[0], synthetic=args.synthetic, data=args.data))
    rows = []
    print("| layout | path | images / s (data only) |\n|---|---|---:|")
    for layout, flags in (("contiguous", []), ("channels_last", ["--channels_last"])):
        config = parse_config(["--dataset", "cifar10", "--batch_size", str(args.batch_size)] + flags)
        spec, fmt = DATASETS.get("cifar10"), memory_format(config.channels_last)

        def epoch(on_device: bool) -> float:
            data = UnlearnData(train=ArrayImageDataset(images, labels, train_transform(spec, config, 32)),
                               forget_index=np.array([0]), val=None, test=None, num_classes=10, eval_transform=None)
            if on_device:
                data.test = data.val = data.train
                data.place_on_device(device, batch_augment(spec, config, 32))
            loader = make_loader(data.split("train"), config, shuffle=True)
            start = time.perf_counter()
            for batch, targets in loader:
                batch.to(device, memory_format=fmt), targets.to(device)
            return len(images) / (time.perf_counter() - start)

        rates = {False: [], True: []}
        for round_ in range(args.repeats):
            for on_device in ((False, True) if round_ % 2 == 0 else (True, False)):
                rates[on_device].append(epoch(on_device))
        for on_device, path in ((False, "loader"), (True, "device")):
            rate = statistics.median(rates[on_device])
            rows.append({"layout": layout, "path": path, "images_per_s": rate, "rounds": rates[on_device]})
            print(f"| {layout} | {path} | {rate:.0f} |", flush=True)
    return rows


def accuracy(args: argparse.Namespace) -> dict:
    out = Path(args.out) / args.dataset
    common = ["--dataset", args.dataset, "--arch", args.archs[0], "--device", args.device, "--epochs",
              str(args.epochs), "--decreasing_lr", args.decreasing_lr, "--batch_size", "128", "--amp",
              "--channels_last"]
    if args.dataset == "cifar10":
        common += ["--data", str(write_subset(args.data, out, args.train_images, args.test_images))]
    if args.input_size:
        common += ["--input_size", str(args.input_size)]
    results = {"loader": {}, "device": {}}
    for seed in args.seeds:
        for path in ("loader", "device"):
            save_dir = out / f"{path}_seed{seed}"
            if not (save_dir / "run.json").exists():
                with contextlib.redirect_stdout(io.StringIO()):
                    main_train.main(common + ["--train_seed", str(seed), "--save_dir", str(save_dir), "--overwrite"]
                                    + ["--data_on_device"] * (path == "device"))
            results[path][seed] = read_json(save_dir / "run.json")["metrics"]["test_acc"]
            print(f"{path} seed {seed}: test acc {results[path][seed]:.2f}", flush=True)
    summary = {path: {"mean": float(np.mean(list(accs.values()))), "std": float(np.std(list(accs.values()), ddof=1))}
               for path, accs in results.items()}
    summary["difference"] = summary["device"]["mean"] - summary["loader"]["mean"]
    print(f"loader {summary['loader']['mean']:.2f} +- {summary['loader']['std']:.2f}, device "
          f"{summary['device']['mean']:.2f} +- {summary['device']['std']:.2f} (std over {len(args.seeds)} seeds); "
          f"device - loader {summary['difference']:+.2f}")
    return {"test_acc": {path: {str(k): v for k, v in accs.items()} for path, accs in results.items()}, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10_ZIP), help="CIFAR-10 ImageFolder zip or tree")
    parser.add_argument("--synthetic", action="store_true", help="random 32x32 images instead of --data")
    parser.add_argument("--archs", nargs="+", default=["resnet20s", "resnet18"])
    parser.add_argument("--subsets", nargs="+", type=int, default=[2000, 500],
                        help="training images per arch (throughput; forget 10%%, retain 90%%)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp_dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--accuracy", action="store_true", help="the short-training accuracy check instead")
    parser.add_argument("--data_only", action="store_true",
                        help="images/s of building the batches alone, without the model, per path")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"), help="of --accuracy")
    parser.add_argument("--input_size", type=int, help="of --accuracy (digits: the images' size, e.g. 8)")
    parser.add_argument("--train_images", type=int, default=5000)
    parser.add_argument("--test_images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--decreasing_lr", default="5,7")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", default="runs/ic_input_path", help="work folder of --accuracy")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if len(args.subsets) != len(args.archs):
        parser.error("--subsets: give one per --archs")
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    device = get_device(args.device, None)
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"load average {os.getloadavg()[0]:.1f} at the start\n")
    if args.accuracy:
        result = accuracy(args)
    else:
        result = {"data_only": data_only(args, device)} if args.data_only else {"rows": throughput(args, device)}
    if args.json:
        atomic_write_json({"config": vars(args), "device": str(device), "torch": torch.__version__,
                           "load_average_end": os.getloadavg()[0], **result}, args.json)


if __name__ == "__main__":
    main()
