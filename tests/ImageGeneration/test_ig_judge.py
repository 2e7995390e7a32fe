"""The CIFAR-10 judge starts from torchvision's ImageNet ResNet-34, as the research code's, found without a
download (the torch hub cache or --pretrained_weights); a random start only when asked for, and recorded."""
import json

import torch
import torchvision
from PIL import Image

from ImageGeneration.DDPM import train_classifier
from ImageGeneration.DDPM.classifier import load_classifier


def rgb_tree(root):
    """``train/`` and ``test/`` of two classes, two flat 32x32 RGB images each."""
    for split in ("train", "test"):
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (120 * label, 30 * i, 0)).save(folder / f"{i}.png")
    return root


def test_resnet34_judge_starts_from_the_hub_caches_imagenet_weights(tmp_path, monkeypatch, one_thread):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet34().state_dict()
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(imagenet, hub / "resnet34-b627a593.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    data = str(rgb_tree(tmp_path / "cifar"))
    common = ["--dataset", "cifar10", "--data_path", data, "--image_size", "32", "--n_epochs", "1", "--lr", "1e-12",
              "--device", "cpu"]
    path = train_classifier.main(common + ["--save_dir", str(tmp_path / "judge")])
    record = json.loads((tmp_path / "judge" / "run_train_classifier_cifar10_resnet34.json").read_text())
    assert record["metrics"]["judge_init"] == f"ImageNet weights {hub / 'resnet34-b627a593.pth'}"
    judge = load_classifier(path, torch.device("cpu"))
    trained = judge.net.state_dict()
    # an lr of 1e-12 leaves the ImageNet weights (all but the new 2-class head) where they were
    for key in ("conv1.weight", "layer4.2.conv2.weight"):
        torch.testing.assert_close(trained[key], imagenet[key], atol=1e-6, rtol=0)
    assert trained["fc.weight"].shape == (2, 512)
    train_classifier.main(common + ["--from_scratch", "--save_dir", str(tmp_path / "scratch")])
    record = json.loads((tmp_path / "scratch" / "run_train_classifier_cifar10_resnet34.json").read_text())
    assert record["metrics"]["judge_init"] == "random initialisation (--from_scratch)"
    scratch = load_classifier(tmp_path / "scratch" / "cifar10_resnet34.pth", torch.device("cpu")).net.state_dict()
    assert not torch.allclose(scratch["conv1.weight"], imagenet["conv1.weight"])
