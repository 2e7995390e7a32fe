"""Start-up cost of an image-classification run on a zipped ImageFolder: decoding vs the decoded-array cache.

    python benchmarks/ic_startup.py                       # the shared CIFAR-10 zip (../shared/data)
    python benchmarks/ic_startup.py --data other.zip --repeats 5

Times loading a zip's train and test splits as every run does (``common.datasets.load_imagefolder_arrays``):
decoding every image (``DUALOPTIM_DATA_CACHE=0``, what each run paid before the cache), the first cached load
(decoding plus writing the ``.npy`` files) and a warm cached load (checksumming the zip, memory-mapping the arrays
and verifying their checksums),
each in a fresh cache folder copy of the zip. Prints the median seconds of ``--repeats`` loads.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common.datasets import load_imagefolder_arrays

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


def load_both(path: Path) -> float:
    start = time.perf_counter()
    for split in ("train", "test"):
        x, y, _ = load_imagefolder_arrays(path, split)
        np.asarray(x[-1]).sum()  # touch the arrays, as a run's first batches do
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_ZIP), help="a zipped ImageFolder with train/ and test/")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / Path(args.data).name
        shutil.copy2(args.data, zip_path)  # a copy, so the cache goes to the temporary folder
        os.environ["DUALOPTIM_DATA_CACHE"] = "0"
        decode = [load_both(zip_path) for _ in range(args.repeats)]
        os.environ["DUALOPTIM_DATA_CACHE"] = "1"
        first = []
        for _ in range(args.repeats):
            shutil.rmtree(zip_path.parent / f".{zip_path.name}.cache", ignore_errors=True)
            first.append(load_both(zip_path))
        warm = [load_both(zip_path) for _ in range(args.repeats)]
    print(f"{args.data}: train + test splits, median of {args.repeats} loads")
    print("| load | seconds |\n|---|---:|")
    for name, times in (("decode every image (no cache)", decode), ("first cached load (decode + write)", first),
                        ("warm cached load (checksums + memory map)", warm)):
        print(f"| {name} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
