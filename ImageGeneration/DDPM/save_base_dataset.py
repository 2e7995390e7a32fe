"""Save real training images of every class but one as PNGs: the reference folder of ``evaluator.py``.

    python -m ImageGeneration.DDPM.save_base_dataset --dataset cifar10 --data_path cifar10-jpeg.zip \\
        --label_to_forget 0
    python -m ImageGeneration.DDPM.evaluator $CKPT/fid_samples_guidance_2.0_excluded_class_0 \\
        cifar10_without_label_0 --features inception --inception_weights inception_v3.pth

Writes ``<save_path>/<dataset>_without_label_<k>/<id>.png`` with the first 500 training images of
each remaining class (all of them where a class has fewer), as the research code's
``save_base_dataset.py``, at the image size and channels of the dataset's default config.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common.errors import ArgumentParser, cli_main
from common.io import ensure_writable_dir, write_run_record
from ImageGeneration.core.images import check_label, save_pngs
from ImageGeneration.DDPM.data import DATASETS, load_arrays
from ImageGeneration.DDPM.config import load_config

PER_CLASS = 500


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=str, required=True, choices=DATASETS)
    parser.add_argument("--data_path", type=str, default=None, help="CIFAR-10 as an ImageFolder tree or zip")
    parser.add_argument("--save_path", type=str, default=".", help="where <dataset>_without_label_<k>/ goes")
    parser.add_argument("--label_to_forget", type=int, default=0, help="the class left out")
    return parser.parse_args(argv)


def reference_subset(labels: np.ndarray, label_to_forget: int, per_class: int = PER_CLASS) -> np.ndarray:
    """Indices of the first ``per_class`` images of every class but ``label_to_forget``, class by class."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class]
                           for c in np.unique(labels) if c != label_to_forget])


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    data = load_config(None, args.dataset, "pretrain").data
    images, labels = load_arrays(args.dataset, args.data_path, "train", data.image_size, data.channels)
    check_label(args.label_to_forget, int(labels.max()) + 1, "--label_to_forget")
    out_dir = ensure_writable_dir(Path(args.save_path) / f"{args.dataset}_without_label_{args.label_to_forget}",
                                  "--save_path")
    chosen = reference_subset(labels, args.label_to_forget)
    n_saved = save_pngs(images[chosen], out_dir, 0)
    write_run_record(out_dir, args, {"n_images": n_saved, "classes": sorted(set(labels[chosen].tolist()))},
                     filename="run_save_base_dataset.json")
    print(f"Saved {n_saved} images without label {args.label_to_forget} to {out_dir}")
    return str(out_dir)


if __name__ == "__main__":
    main()
