"""The ADM evaluator's metrics (FID, sFID, Inception Score, precision, recall) and KID of generated images
against real images without the forgotten class.

    python -m ImageGeneration.DDPM.evaluator $CKPT/fid_samples_guidance_2.0_excluded_class_0 \\
        --ref_dataset digits --label_to_forget 0 --features classifier --classifier_path .
    python -m ImageGeneration.DDPM.evaluator samples/ cifar10_without_label_0/ \\
        --features inception --inception_weights inception_v3_google.pth

``--features`` picks the embedding: ``inception`` (torchvision Inception-v3, weights from
``--inception_weights``: pool features for FID, precision and recall, its ``Mixed_6d`` 1x1 branch,
the counterpart of the TF graph's ``mixed_6/conv``, for sFID, its softmax for IS; its values differ
from those of the TF Inception that ADM and pytorch-fid use, see the README), ``classifier``
(penultimate layer of a ``train_classifier.py`` model; also gives IS) or ``pixels`` (raw pixels,
offline).  sFID needs spatial features, so only ``inception`` gives it.  Precision and recall use
``--nhood_size``-NN balls (ADM: 3).  Writes ``<sample_dir>/evaluation_<features>.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from common.errors import ArgumentParser, Bounded, UsageError, cli_main, positive_int
from common.io import load_state_dict_file, write_run_record
from dualoptim.registry import Registry
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, image_format, load_image_folder, uint8_to_model_space
from ImageGeneration.core.metrics import (
    fid_from_features, inception_score, kernel_inception_distance, precision_recall, spatial_fid_features)
from ImageGeneration.DDPM.classifier import load_classifier, predict
from ImageGeneration.DDPM.data import load_arrays


class Embedding(NamedTuple):
    """What a feature extractor gives for a set of images."""
    pool: np.ndarray  #: ``(N, D)`` features for FID, KID, precision and recall
    probs: Optional[np.ndarray] = None  #: ``(N, K)`` class probabilities for the Inception Score
    spatial: Optional[np.ndarray] = None  #: ``(N, D')`` spatial features for sFID


#: Embeds model-space images ``(N, C, H, W)``.
FeatureFn = Callable[[torch.Tensor], Embedding]
FEATURES: Registry[Callable[[argparse.Namespace, torch.device], FeatureFn]] = Registry("--features")


@FEATURES.register("pixels")
def pixel_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    return lambda images: Embedding(images.flatten(1).double().numpy())


@FEATURES.register("classifier")
def classifier_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    if not args.classifier_path:
        raise UsageError("--classifier_path: required with --features classifier")
    classifier = load_classifier(args.classifier_path, device, "--classifier_path")

    def embed(images: torch.Tensor):
        logits, feats = predict(classifier, images, args.batch_size)
        return Embedding(feats.double().numpy(), torch.softmax(logits.double(), dim=1).numpy())

    return embed


def load_inception(path: Optional[str], device: torch.device) -> torch.nn.Module:
    """torchvision's Inception-v3 with the ImageNet weights of the state dict at ``path`` (nothing is downloaded)."""
    if not path:
        raise UsageError("--inception_weights: required with --features inception (torchvision "
                         "inception_v3 ImageNet state dict; nothing is downloaded)")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        model.load_state_dict(load_state_dict_file(path, "--inception_weights"))
    except RuntimeError as err:
        raise UsageError(f"--inception_weights {path}: not Inception-v3 weights "
                         f"({' '.join(str(err).split())[:200]})") from None
    return model.eval().to(device)


@FEATURES.register("inception")
def inception_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    """Pool features (``avgpool``, 2048-d), softmax, and for sFID the ``Mixed_6d.branch1x1`` map.

    TF Inception's ``mixed_6`` is torchvision's ``Mixed_6d`` (the fourth 17x17 block after ``mixed_3`` /
    ``Mixed_6a``), and its ``conv`` is the 1x1 branch, whose 192 channels also lead ``Mixed_6d``'s output.
    """
    model = load_inception(args.inception_weights, device)
    hooked = {}
    model.avgpool.register_forward_hook(lambda module, inputs, output: hooked.update(pool=output.flatten(1)))
    model.Mixed_6d.branch1x1.register_forward_hook(lambda module, inputs, output: hooked.update(spatial=output))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed(images: torch.Tensor) -> Embedding:
        pools, probs, spatials = [], [], []
        for start in range(0, images.shape[0], args.batch_size):
            x = (images[start:start + args.batch_size].to(device) + 1) / 2
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            logits = model((x - mean) / std)
            pools.append(hooked["pool"].double().cpu())
            probs.append(torch.softmax(logits.double(), dim=1).cpu())
            spatials.append(spatial_fid_features(hooked["spatial"]))
        return Embedding(torch.cat(pools).numpy(), torch.cat(probs).numpy(), np.concatenate(spatials))

    return embed


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sample_dir", type=str,
                        help="folder of generated images, or of per-class subfolders (sample.py's class_samples/; "
                             "the --label_to_forget one is left out)")
    parser.add_argument("ref_dir", type=str, nargs="?", default=None, help="folder of real images")
    parser.add_argument("--ref_dataset", type=str, default=None, choices=("digits", "cifar10"),
                        help="use this dataset's images (without --label_to_forget) instead of ref_dir")
    parser.add_argument("--data_path", type=str, default=None, help="CIFAR-10 tree or zip for --ref_dataset")
    parser.add_argument("--ref_split", type=str, default="train", choices=("train", "test"))
    parser.add_argument("--label_to_forget", type=int, default=None)
    parser.add_argument("--features", type=str, default="inception", help=" | ".join(FEATURES))
    parser.add_argument("--classifier_path", type=str, default=None)
    parser.add_argument("--inception_weights", type=str, default=None)
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--kid_subset_size", type=Bounded(int, 2), default=1000)
    parser.add_argument("--nhood_size", type=positive_int, default=3,
                        help="k of the k-NN balls of precision and recall (ADM: 3)")
    return parse_run_args(parser, argv)


def generated_images(sample_dir: str, label_to_forget: Optional[int]) -> np.ndarray:
    """The generated images of ``sample_dir``: its own image files, else those of its ``<class>/`` subfolders.

    ``sample.py --mode sample_classes`` writes one subfolder per class; the forgotten class's is
    skipped so that the set matches the reference images without that class.
    """
    folder = Path(sample_dir)
    subfolders = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                        key=lambda p: int(p.name)) if folder.is_dir() else []
    if not subfolders:
        channels, image_size = image_format(folder, "sample_dir")
        return load_image_folder(folder, "sample_dir", channels, image_size)
    subfolders = [p for p in subfolders if label_to_forget is None or int(p.name) != label_to_forget]
    if not subfolders:
        raise UsageError(f"sample_dir {folder}: no class subfolder besides the forgotten class {label_to_forget}")
    channels, image_size = image_format(subfolders[0], "sample_dir")
    return np.concatenate([load_image_folder(p, "sample_dir", channels, image_size) for p in subfolders])


def reference_images(args: argparse.Namespace, channels: int, image_size: int) -> np.ndarray:
    if (args.ref_dir is None) == (args.ref_dataset is None):
        raise UsageError("give exactly one of ref_dir (a folder of real images) or --ref_dataset")
    if args.ref_dir is not None:
        return load_image_folder(args.ref_dir, "ref_dir", channels, image_size)
    images, labels = load_arrays(args.ref_dataset, args.data_path, args.ref_split, image_size, channels)
    if args.label_to_forget is not None:
        check_label(args.label_to_forget, int(labels.max()) + 1, "--label_to_forget")
        images = images[labels != args.label_to_forget]
    return images


@cli_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    embed_factory = FEATURES.get(args.features)
    device = start_run(args)
    samples = generated_images(args.sample_dir, args.label_to_forget)
    reference = reference_images(args, samples.shape[3], samples.shape[1])
    if min(len(samples), len(reference)) <= args.nhood_size:  # --nhood_size >= 1: FID's 2 images are covered
        raise UsageError(f"--nhood_size {args.nhood_size}: precision/recall need more than {args.nhood_size} "
                         f"images in each set, got {len(samples)} samples and {len(reference)} reference images")
    embed = embed_factory(args, device)
    sample, ref = embed(uint8_to_model_space(samples)), embed(uint8_to_model_space(reference))
    metrics: Dict[str, float] = {}
    if sample.probs is not None:
        metrics["Inception Score"] = inception_score(sample.probs)
    metrics["FID"] = fid_from_features(sample.pool, ref.pool)
    if sample.spatial is not None:
        metrics["sFID"] = fid_from_features(sample.spatial, ref.spatial)
    metrics["Precision"], metrics["Recall"] = precision_recall(ref.pool, sample.pool, args.nhood_size, device=device)
    metrics["KID"] = kernel_inception_distance(sample.pool, ref.pool, args.kid_subset_size, seed=args.seed)
    for name, value in metrics.items():
        print(f"{name}: {value}")
    metrics.update(n_samples=len(samples), n_reference=len(reference))
    write_run_record(Path(args.sample_dir), args, metrics, filename=f"evaluation_{args.features}.json")
    return metrics


if __name__ == "__main__":
    main()
