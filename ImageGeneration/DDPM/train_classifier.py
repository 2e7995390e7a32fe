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

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.errors import ArgumentParser, UsageError, cli_main, positive_float, positive_int
from common.io import ensure_writable_dir, load_state_dict_file, write_run_record
from common.nonfinite import add_nonfinite_args, check_finite_loss
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.DDPM.classifier import (
    ARCHS, DEFAULT_ARCH, DEFAULT_IMAGE_SIZE, ImageClassifier, classifier_filename, predict, save_classifier)
from ImageGeneration.DDPM.data import add_data_args, load_arrays, make_loader, random_flip, to_unit_tensor


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--arch", type=str, default=None, help="small_cnn | resnet34 (default per dataset)")
    parser.add_argument("--image_size", type=positive_int, default=None,
                        help="classifier input size (default per arch)")
    parser.add_argument("--pretrained_weights", type=str, default=None,
                        help="torchvision ImageNet state dict to start resnet34 from")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate (default 1e-5 resnet34, 1e-3 small_cnn)")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--n_epochs", type=positive_int, default=10)
    parser.add_argument("--save_dir", type=str, default=".", help="where <dataset>_<arch>.pth is written")
    add_nonfinite_args(parser)
    return parse_run_args(parser, argv)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    args.dataset = args.dataset or "digits"
    arch = args.arch or DEFAULT_ARCH[args.dataset]
    ARCHS.get(arch)
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[arch]
    lr = args.lr or (1e-5 if arch == "resnet34" else 1e-3)
    device = start_run(args)
    channels = 3 if args.dataset == "cifar10" else 1
    native = 32 if args.dataset == "cifar10" else 16
    train_x, train_y = load_arrays(args.dataset, args.data_path, "train", native, channels)
    test_x, test_y = load_arrays(args.dataset, args.data_path, "test", native, channels)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    model = ImageClassifier(arch, n_classes, channels, image_size)
    if args.pretrained_weights:
        label = f"--pretrained_weights {args.pretrained_weights}"
        state = load_state_dict_file(args.pretrained_weights, "--pretrained_weights")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is trained from scratch
        try:
            loaded = model.net.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise UsageError(f"{label}: does not fit {arch} ({' '.join(str(err).split())[:200]})") from None
        missing = [k for k in loaded.missing_keys if not k.startswith("fc.")]
        if missing or loaded.unexpected_keys:
            raise UsageError(f"{label}: does not fit {arch} ({len(missing)} missing and "
                             f"{len(loaded.unexpected_keys)} unexpected weights, e.g. "
                             f"{(missing or loaded.unexpected_keys)[0]!r})")
    save_dir = ensure_writable_dir(args.save_dir, "--save_dir")
    model.to(device)
    head = model.net.fc if hasattr(model.net, "fc") else model.net[-1]
    head_ids = {id(p) for p in head.parameters()}
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.parameters() if id(p) not in head_ids]},
        {"params": list(head.parameters()), "lr": lr * 10}], lr=lr, weight_decay=5e-4)
    loader = make_loader(train_x, train_y, args.batch_size, args.seed)
    test_images = to_unit_tensor(test_x) * 2 - 1
    history = []
    for epoch in range(args.n_epochs):
        model.train()
        for batch, (x, y) in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}", dynamic_ncols=True)):
            x, y = x.to(device) * 2 - 1, y.to(device)
            if args.dataset == "cifar10":
                x = random_flip(x)
            loss = F.cross_entropy(model(x), y)
            check_finite_loss(loss, epoch * len(loader) + batch + 1, "train", optimizer.param_groups[0]["lr"],
                              args.allow_nonfinite)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        logits, _ = predict(model, test_images)
        accuracy = float((logits.argmax(1).numpy() == test_y).mean())
        history.append(accuracy)
        print(f"Accuracy on the test set after epoch {epoch + 1}: {accuracy * 100:.2f} %")
    path = save_classifier(model, Path(save_dir) / classifier_filename(args.dataset, arch),
                           {"test_accuracy": history[-1]})
    write_run_record(save_dir, args, {"test_accuracy": history, "checkpoint": str(path)},
                     filename=f"run_train_classifier_{args.dataset}_{arch}.json")
    print(path)
    return str(path)


if __name__ == "__main__":
    main()
