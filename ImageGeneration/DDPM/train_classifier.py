"""Train the classifier that judges generated images (``<dataset>_<arch>.pth``).

    python -m ImageGeneration.DDPM.train_classifier --dataset digits
    python -m ImageGeneration.DDPM.train_classifier --dataset cifar10 --data_path cifar10-jpeg.zip \\
        --pretrained_weights resnet34-imagenet.pth

As the research code: Adam with weight decay 5e-4, the last layer at ten times ``--lr``,
random horizontal flips for CIFAR-10, test accuracy after every epoch.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision

from common.errors import ArgumentParser, UsageError, cli_main, positive_float, positive_int
from common.io import ensure_writable_dir, write_run_record
from common.nonfinite import add_nonfinite_args, check_finite_loss
from common.pretrained import cached_weights_file, imagenet_weights
from common.progress import progress
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.DDPM.classifier import (
    ARCHS, DEFAULT_ARCH, DEFAULT_IMAGE_SIZE, ImageClassifier, classifier_filename, predict, save_classifier)
from ImageGeneration.DDPM.data import add_data_args, load_arrays, make_loader, random_flip, to_unit_tensor
from ImageGeneration.DDPM.run_config import JudgeRunConfig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--arch", type=str, default=None, help="small_cnn | resnet34 (default per dataset)")
    parser.add_argument("--image_size", type=positive_int, default=None,
                        help="classifier input size (default per arch)")
    parser.add_argument("--pretrained_weights", type=str, default=None,
                        help="torchvision's ImageNet resnet34 state dict the judge starts from, as the research "
                             "code's (default: resnet34-b627a593.pth in the torch hub cache)")
    parser.add_argument("--from_scratch", action="store_true",
                        help="resnet34: start from a random initialisation instead of ImageNet weights")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate (default 1e-5 resnet34, 1e-3 small_cnn)")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--n_epochs", type=positive_int, default=10)
    parser.add_argument("--save_dir", type=str, default=".", help="where <dataset>_<arch>.pth is written")
    add_nonfinite_args(parser)
    return parse_run_args(parser, argv)


#: the judges that start from torchvision's ImageNet weights, as the research code's
IMAGENET_WEIGHTS = {"resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1}


def judge_weights(arch: str, channels: int, run: JudgeRunConfig) -> Tuple[Optional[dict], str]:
    """``resnet34``'s ImageNet weights, as the research code's judge starts from them, from ``--pretrained_weights``
    or the torch hub cache (:func:`common.pretrained.imagenet_weights`; a random initialisation only with
    ``--from_scratch``), and how the judge is initialised, for its records. Checked before any data is read."""
    if run.pretrained_weights and run.from_scratch:
        raise UsageError("--pretrained_weights/--from_scratch: give one (ImageNet weights or a random start)")
    if arch not in IMAGENET_WEIGHTS:
        if run.pretrained_weights:
            raise UsageError(f"--pretrained_weights: {arch} has no ImageNet weights (resnet34 has)")
        return None, "random initialisation"
    if channels != 3 and not run.from_scratch:
        raise UsageError(f"--arch {arch}: its ImageNet weights take RGB images; --dataset {run.dataset} is "
                         f"grayscale (--from_scratch: random initialisation)")
    state = imagenet_weights(arch, IMAGENET_WEIGHTS[arch], run.pretrained_weights, run.from_scratch)
    if state is None:
        return None, "random initialisation (--from_scratch)"
    source = run.pretrained_weights or str(cached_weights_file(IMAGENET_WEIGHTS[arch]))
    return {k: v for k, v in state.items() if not k.startswith("fc.")}, f"ImageNet weights {source}"


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    run = JudgeRunConfig.from_args(args, dataset=args.dataset or "digits")  # the run's settings, frozen
    arch = run.arch or DEFAULT_ARCH[run.dataset]
    ARCHS.get(arch)
    image_size = run.image_size or DEFAULT_IMAGE_SIZE[arch]
    lr = run.lr or (1e-5 if arch == "resnet34" else 1e-3)
    device = start_run(args)
    channels = 3 if run.dataset == "cifar10" else 1
    native = 32 if run.dataset == "cifar10" else 16
    weights, judge_init = judge_weights(arch, channels, run)
    train_x, train_y = load_arrays(run.dataset, run.data_path, "train", native, channels)
    test_x, test_y = load_arrays(run.dataset, run.data_path, "test", native, channels)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    model = ImageClassifier(arch, n_classes, channels, image_size)
    if weights is not None:
        model.net.load_state_dict(weights, strict=False)  # every weight but the new head (fc)
    save_dir = ensure_writable_dir(run.save_dir, "--save_dir")
    model.to(device)
    head = model.net.fc if hasattr(model.net, "fc") else model.net[-1]
    head_ids = {id(p) for p in head.parameters()}
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.parameters() if id(p) not in head_ids]},
        {"params": list(head.parameters()), "lr": lr * 10}], lr=lr, weight_decay=5e-4)
    loader = make_loader(train_x, train_y, run.batch_size, run.seed)
    test_images = to_unit_tensor(test_x) * 2 - 1
    history = []
    for epoch in range(run.n_epochs):
        model.train()
        for batch, (x, y) in enumerate(progress(loader, desc=f"epoch {epoch + 1}", dynamic_ncols=True)):
            x, y = x.to(device) * 2 - 1, y.to(device)
            if run.dataset == "cifar10":
                x = random_flip(x)
            loss = F.cross_entropy(model(x), y)
            check_finite_loss(loss, epoch * len(loader) + batch + 1, "train", optimizer.param_groups[0]["lr"],
                              run.allow_nonfinite)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        logits, _ = predict(model, test_images)
        accuracy = float((logits.argmax(1).numpy() == test_y).mean())
        history.append(accuracy)
        print(f"Accuracy on the test set after epoch {epoch + 1}: {accuracy * 100:.2f} %")
    path = save_classifier(model, Path(save_dir) / classifier_filename(run.dataset, arch),
                           {"test_accuracy": history[-1], "judge_init": judge_init})
    write_run_record(save_dir, run.record(),
                     {"test_accuracy": history, "checkpoint": str(path), "judge_init": judge_init},
                     filename=f"run_train_classifier_{run.dataset}_{arch}.json")
    print(path)
    return str(path)


if __name__ == "__main__":
    main()
