"""FID, KID and Inception Score of generated images against real images without the forgotten class.

    python -m ImageGeneration.DDPM.evaluator $CKPT/fid_samples_guidance_2.0_excluded_class_0 \\
        --ref_dataset digits --label_to_forget 0 --features classifier --classifier_path .
    python -m ImageGeneration.DDPM.evaluator samples/ cifar10_without_label_0/ \\
        --features inception --inception_weights inception_v3_google.pth

``--features`` picks the embedding: ``inception`` (torchvision Inception-v3 pool features,
weights from ``--inception_weights``; values are close to but not identical with the
TF-Inception numbers of pytorch-fid), ``classifier`` (penultimate layer of a
``train_classifier.py`` model; also gives IS) or ``pixels`` (raw pixels, offline).
Writes ``<sample_dir>/evaluation_<features>.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from common.errors import ArgumentParser, Bounded, UsageError, cli_main, positive_int
from common.io import load_state_dict_file, write_run_record
from dualoptim.registry import Registry
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, image_format, load_image_folder, uint8_to_model_space
from ImageGeneration.core.metrics import fid_from_features, inception_score, kernel_inception_distance
from ImageGeneration.DDPM.classifier import load_classifier, predict
from ImageGeneration.DDPM.data import load_arrays

#: Embeds model-space images ``(N, C, H, W)`` -> ``(features (N, D), class probabilities (N, K) or None)``.
FeatureFn = Callable[[torch.Tensor], Tuple[np.ndarray, Optional[np.ndarray]]]
FEATURES: Registry[Callable[[argparse.Namespace, torch.device], FeatureFn]] = Registry("--features")


@FEATURES.register("pixels")
def pixel_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    return lambda images: (images.flatten(1).double().numpy(), None)


@FEATURES.register("classifier")
def classifier_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    if not args.classifier_path:
        raise UsageError("--classifier_path: required with --features classifier")
    classifier = load_classifier(args.classifier_path, device, "--classifier_path")

    def embed(images: torch.Tensor):
        logits, feats = predict(classifier, images, args.batch_size)
        return feats.double().numpy(), torch.softmax(logits.double(), dim=1).numpy()

    return embed


@FEATURES.register("inception")
def inception_features(args: argparse.Namespace, device: torch.device) -> FeatureFn:
    if not args.inception_weights:
        raise UsageError("--inception_weights: required with --features inception (torchvision "
                         "inception_v3 ImageNet state dict; nothing is downloaded)")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        model.load_state_dict(load_state_dict_file(args.inception_weights, "--inception_weights"))
    except RuntimeError as err:
        raise UsageError(f"--inception_weights {args.inception_weights}: not Inception-v3 weights "
                         f"({' '.join(str(err).split())[:200]})") from None
    model.eval().to(device)
    pooled = {}
    model.avgpool.register_forward_hook(lambda module, inputs, output: pooled.update(x=output.flatten(1)))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed(images: torch.Tensor):
        feats, probs = [], []
        for start in range(0, images.shape[0], args.batch_size):
            x = (images[start:start + args.batch_size].to(device) + 1) / 2
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            logits = model((x - mean) / std)
            feats.append(pooled["x"].double().cpu())
            probs.append(torch.softmax(logits.double(), dim=1).cpu())
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

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
    if len(samples) < 2 or len(reference) < 2:
        raise UsageError(f"sample_dir/reference: FID needs at least 2 images in each set, got "
                         f"{len(samples)} and {len(reference)}")
    embed = embed_factory(args, device)
    sample_feats, sample_probs = embed(uint8_to_model_space(samples))
    ref_feats, _ = embed(uint8_to_model_space(reference))
    metrics = {"FID": fid_from_features(sample_feats, ref_feats),
               "KID": kernel_inception_distance(sample_feats, ref_feats, args.kid_subset_size, seed=args.seed),
               "n_samples": len(samples), "n_reference": len(reference)}
    if sample_probs is not None:
        metrics["Inception Score"] = inception_score(sample_probs)
        print(f"Inception Score: {metrics['Inception Score']}")
    print(f"FID: {metrics['FID']}")
    print(f"KID: {metrics['KID']}")
    write_run_record(Path(args.sample_dir), args, metrics, filename=f"evaluation_{args.features}.json")
    return metrics


if __name__ == "__main__":
    main()
