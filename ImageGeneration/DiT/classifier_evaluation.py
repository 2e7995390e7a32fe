"""Classifier evaluation of DiT samples of the forgotten class with a torchvision ImageNet classifier.

    python -m ImageGeneration.DiT.classifier_evaluation --sample-path samples/207 --forget-class 207 \\
        --classifier-weights resnet34-imagenet.pth

``--sample_path`` and ``--label_of_forgotten_class`` (the research script's spellings) work too; the
default judge is its torchvision ResNet-34, whose ImageNet weights are read from ``--classifier-weights``.

Prints the average entropy, the average probability of the forgotten class and its accuracy
(unlearning accuracy = 1 - accuracy); writes ``<sample-path>/classifier_evaluation.json``.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision

from common.device import add_device_args, get_device
from common.errors import ArgumentParser, UsageError, cli_main, positive_int
from common.io import add_trust_args, load_state_dict_file
from ImageGeneration.core.images import check_label, load_image_folder, uint8_to_model_space
from ImageGeneration.core.metrics import forgetting_metrics, report_forgetting

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample-path", "--sample_path", dest="sample_path", type=str, required=True)
    parser.add_argument("--forget-class", "--label_of_forgotten_class", dest="forget_class", type=int, required=True)
    parser.add_argument("--arch", type=str, default="resnet34", help="a torchvision classification model")
    parser.add_argument("--classifier-weights", type=str, required=True, help="its state dict (no download)")
    parser.add_argument("--num-classes", type=positive_int, default=1000)
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("-b", "--batch-size", dest="batch_size", type=positive_int, default=64)
    add_device_args(parser)
    add_trust_args(parser)
    return parser.parse_args(argv)


def build_classifier(arch: str, num_classes: int, weights_path: str, device: torch.device) -> torch.nn.Module:
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise UsageError(f"--arch {arch!r}: not a torchvision classification model")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(load_state_dict_file(weights_path, "--classifier-weights"))
    except RuntimeError as err:
        raise UsageError(f"--classifier-weights {weights_path}: does not fit {arch} with {num_classes} classes "
                         f"({' '.join(str(err).split())[:200]})") from None
    return model.to(device).eval()


@torch.no_grad()
def classify(model: torch.nn.Module, images: torch.Tensor, image_size: int, batch_size: int) -> torch.Tensor:
    """Logits of model-space images, resized and ImageNet-normalised."""
    device = next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    logits = []
    for start in range(0, images.shape[0], batch_size):
        x = (images[start:start + batch_size].to(device) + 1) / 2
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        logits.append(model((x - mean) / std).cpu())
    return torch.cat(logits)


@cli_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    check_label(args.forget_class, args.num_classes, "--forget-class")
    device = get_device(args.device, args.gpu)
    model = build_classifier(args.arch, args.num_classes, args.classifier_weights, device)
    images = uint8_to_model_space(load_image_folder(args.sample_path, "--sample-path", 3, args.image_size))
    metrics = forgetting_metrics(classify(model, images, args.image_size, args.batch_size), args.forget_class,
                                 images.shape[0])
    metrics["n_samples"] = int(images.shape[0])
    return report_forgetting(metrics, args, args.sample_path)


if __name__ == "__main__":
    main()
