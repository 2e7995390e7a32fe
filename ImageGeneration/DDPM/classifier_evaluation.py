"""Classifier evaluation of samples generated for the forgotten class.

    python -m ImageGeneration.DDPM.classifier_evaluation --sample_path $CKPT/class_samples/0 \\
        --ckpt_path . --dataset cifar10 --label_of_forgotten_class 0

Prints the average entropy, the average probability of the forgotten class and the
fraction of samples classified as it (unlearning accuracy = 1 - that), and writes them
to ``<sample_path>/classifier_evaluation.json``.  All-black and all-white images are
skipped but still counted in the denominators, as in the research code.
"""
from __future__ import annotations

import argparse

import torch

from common.errors import ArgumentParser, cli_main, positive_int
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, load_image_folder, uint8_to_model_space
from ImageGeneration.core.metrics import forgetting_metrics, report_forgetting
from ImageGeneration.DDPM.classifier import load_classifier, predict
from ImageGeneration.DDPM.data import DATASETS


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample_path", type=str, required=True, help="folder of generated images")
    parser.add_argument("--ckpt_path", type=str, default=".",
                        help="classifier file, or the folder holding <dataset>_<arch>.pth")
    parser.add_argument("--dataset", type=str, default=None, choices=DATASETS,
                        help="picks <ckpt_path>/<dataset>_<arch>.pth when --ckpt_path is a folder")
    parser.add_argument("--label_of_forgotten_class", type=int, default=0)
    parser.add_argument("-b", "--batch-size", dest="batch_size", type=positive_int, default=64)
    return parse_run_args(parser, argv)


def evaluate_samples(classifier, images: torch.Tensor, forgotten_class: int, batch_size: int) -> dict:
    """Metrics of model-space ``images``; blank (all -1 or all +1) images are skipped but counted."""
    means = images.flatten(1).mean(dim=1)
    kept = images[(means != -1) & (means != 1)]
    n_classes = classifier.meta["n_classes"]
    logits = predict(classifier, kept, batch_size)[0] if len(kept) else torch.zeros(0, n_classes)
    metrics = forgetting_metrics(logits, forgotten_class, images.shape[0])
    metrics.update(n_samples=int(images.shape[0]), n_blank_skipped=int(images.shape[0] - len(kept)))
    return metrics


@cli_main
def main(argv=None) -> dict:
    args = parse_args(argv)
    device = start_run(args)
    classifier = load_classifier(args.ckpt_path, device, dataset=args.dataset)
    meta = classifier.meta
    check_label(args.label_of_forgotten_class, meta["n_classes"], "--label_of_forgotten_class")
    images = load_image_folder(args.sample_path, "--sample_path", meta["channels"], meta["image_size"])
    metrics = evaluate_samples(classifier, uint8_to_model_space(images), args.label_of_forgotten_class,
                               args.batch_size)
    print("Classifier evaluation:")
    return report_forgetting(metrics, args, args.sample_path)


if __name__ == "__main__":
    main()
