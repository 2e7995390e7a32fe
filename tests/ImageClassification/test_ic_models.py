"""Models as the research code builds them, and its checkpoints and masks loaded here.

The research code's state-dict layout is written out here from reading its
``models/`` (``ResNet.py``, ``ResNets.py``, ``VGG.py``, ``swin.py``) and
``utils.setup_model``: the weights at the top level, its CIFAR ResNets'
blocks in ``layer1..3``, a ``normalize`` module whose ``mean``/``std`` buffers
have shape ``(3,)``.  The fingerprints below were drawn with its model
classes (torch.manual_seed(1), then the constructor).
"""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torchvision
from torch import nn

from common.errors import UsageError
from ImageClassification import main_random, main_train
from ImageClassification.arg_parser import parse_config
from ImageClassification.data import DATASETS
from ImageClassification.models import build_model, build_model_from_config, load_weights, original_key
from ImageClassification.pipeline import load_original_model
from ImageClassification.unlearn.engine import periodic_cosine

CIFAR10 = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # the research code's TinyImagenet transform
BLOCKS = {"resnet20s": 3, "resnet44s": 7, "resnet56s": 9}

# the research code's initial weights under torch.manual_seed(1) (first three entries), by its names
FINGERPRINTS = {
    "resnet18": {"conv1.weight": [-0.101293, -0.0597542, 0.0532933],
                 "layer2.0.downsample.0.weight": [0.0230005, 0.1018235, 0.1610949],
                 "fc.weight": [0.0114717, -0.0002796, 0.0313608], "fc.bias": [0.0146641, -0.0201454, -0.0177506]},
    "resnet20s": {"conv1.weight": [0.1305602, 0.045197, 0.2275396],
                  "layer3.2.conv2.weight": [0.0210185, 0.0448633, 0.0417347],
                  "fc.weight": [-0.1445658, -0.2058752, 0.0134746], "fc.bias": [-0.0591657, -0.0560484, 0.0640716]},
    "vgg16_bn": {"features.0.weight": [-0.0834126, 0.053782, 0.153696],
                 "features.40.weight": [0.0250785, 0.0006594, 0.0256431],
                 "classifier.4.weight": [-0.0013453, 0.0035561, 0.0069008]},
}


def to_research_layout(state, arch, mean, std):
    """Our state dict in the research code's layout, with its model normaliser ``(mean, std)``."""
    out = {}
    for key, value in state.items():
        if key.startswith("normalize."):
            continue
        key = key[len("backbone."):]
        if arch in BLOCKS and key.startswith("layers."):
            _, index, rest = key.split(".", 2)
            stage, block = divmod(int(index), BLOCKS[arch])
            key = f"layer{stage + 1}.{block}.{rest}"
        out[key] = value.clone()
    out["normalize.mean"], out["normalize.std"] = torch.tensor(mean), torch.tensor(std)
    return out


def randomise_batch_norm(model):
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
    return model.eval()


# ---------------------------------------------------------------- construction

@pytest.mark.parametrize("arch", sorted(FINGERPRINTS))
def test_initial_weights_are_the_research_codes(arch):
    torch.manual_seed(1)
    state = build_model(arch, 10, *CIFAR10).state_dict()
    for key, expected in FINGERPRINTS[arch].items():
        ours = state[original_key(key, arch)].flatten()[:3]
        assert ours.tolist() == pytest.approx(expected, abs=1e-6), key


def test_resnet18_cifar_stem_and_initialisation():
    backbone = build_model("resnet18", 10, *CIFAR10).backbone
    assert backbone.conv1.kernel_size == (3, 3) and backbone.conv1.stride == (1, 1)
    assert isinstance(backbone.maxpool, nn.Identity)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() > 30000:
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            assert module.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    stem = backbone.conv1.weight  # kaiming-normal fan_out (64 * 9), not PyTorch's default uniform
    assert stem.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1) and stem.abs().max() > 0.2


def test_vgg16_bn_is_the_research_codes_cifar_vgg():
    backbone = build_model("vgg16_bn", 7, *CIFAR10).backbone
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.bias is None for c in convs)
    assert backbone.avgpool.output_size == (2, 2)
    linears = [m for m in backbone.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 256), (256, 256), (256, 7)]
    assert linears[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def digits_args(*extra):
    return parse_config(["--dataset", "digits", "--arch", "resnet20s", *extra])


def test_retrain_starts_from_the_constructed_model_seeded_by_train_seed():
    def start(*extra):
        return load_original_model(digits_args("--unlearn", "retrain", *extra), torch.device("cpu")).state_dict()

    torch.manual_seed(5)
    constructed = build_model_from_config(digits_args()).state_dict()
    first, other_seed, other_train_seed = start("--train_seed", "5"), start("--train_seed", "5", "--seed", "9"), \
        start("--train_seed", "6")
    assert all(torch.equal(first[k], constructed[k]) for k in constructed)
    assert all(torch.equal(first[k], other_seed[k]) for k in constructed)  # --seed does not change it
    assert not torch.equal(first["backbone.conv1.weight"], other_train_seed["backbone.conv1.weight"])


# ---------------------------------------------------------------- swin_t's ImageNet weights

@pytest.fixture(scope="module")
def swin_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("swin") / "swin_t-704ceda3.pth"
    torch.save(torchvision.models.swin_t().state_dict(), path)
    return path


def swin_args(*extra):
    return digits_args("--arch", "swin_t", *extra)


def test_swin_t_starts_from_given_pretrained_weights(swin_weights):
    saved = torch.load(swin_weights)
    model = build_model_from_config(swin_args("--pretrained_weights", str(swin_weights)), pretrained=True)
    state = model.backbone.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved if not k.startswith("head."))
    assert model.backbone.head.out_features == 10


def test_swin_t_finds_the_weights_in_the_torch_hub_cache(swin_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UsageError) as error:  # neither the cache nor --pretrained_weights: one line naming both
        build_model_from_config(swin_args(), pretrained=True)
    message = str(error.value)
    assert "\n" not in message and "--pretrained_weights PATH" in message and "--from_scratch" in message
    assert str(tmp_path / "checkpoints" / "swin_t-704ceda3.pth") in message
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "swin_t-704ceda3.pth").symlink_to(swin_weights)
    model = build_model_from_config(swin_args(), pretrained=True)
    assert torch.equal(model.backbone.features[0][0].weight, torch.load(swin_weights)["features.0.0.weight"])
    # explicitly from scratch, and a model about to be replaced by --model_path, read no weights
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    build_model_from_config(swin_args("--from_scratch"), pretrained=True)
    build_model_from_config(swin_args())


def test_swin_t_refuses_other_weights(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UsageError, match="not torchvision's ImageNet swin_t"):
        build_model_from_config(swin_args("--pretrained_weights", str(path)), pretrained=True)


# ---------------------------------------------------------------- research-code checkpoints and masks

def test_research_code_names_map_to_ours():
    assert original_key("layer2.1.conv1.weight", "resnet20s") == "backbone.layers.4.conv1.weight"
    assert original_key("layer3.8.bn2.running_var", "resnet56s") == "backbone.layers.26.bn2.running_var"
    assert original_key("layer1.0.conv1.weight", "resnet44s") == "backbone.layers.0.conv1.weight"
    assert original_key("layer4.1.bn2.weight", "resnet18") == "backbone.layer4.1.bn2.weight"
    assert original_key("classifier.4.bias", "vgg16_bn") == "backbone.classifier.4.bias"
    assert original_key("features.0.0.weight", "swin_t") == "backbone.features.0.0.weight"


@pytest.mark.parametrize("arch,dataset,size", [
    ("resnet18", "cifar10", 32), ("resnet20s", "cifar10", 32), ("resnet44s", "cifar10", 32),
    ("resnet56s", "cifar10", 32), ("vgg16_bn", "cifar10", 32), ("swin_t", "cifar10", 32),
    ("resnet18", "TinyImagenet", 64), ("swin_t", "TinyImagenet", 64)])
def test_research_code_checkpoint_gives_identical_logits(arch, dataset, size):
    torch.manual_seed(0)
    source = randomise_batch_norm(build_model(arch, 10, *CIFAR10))
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        # what the research code computes: its dataset transform (TinyImagenet only), then its model, whose
        # normalize swin_t never calls
        seen = torchvision.transforms.Normalize(*IMAGENET)(x) if dataset == "TinyImagenet" else x
        if arch != "swin_t":
            seen = torchvision.transforms.Normalize(*CIFAR10)(seen)
        reference = source.backbone(seen)
    checkpoint = {"state_dict": to_research_layout(source.state_dict(), arch, *CIFAR10), "epoch": 182,
                  "best_sa": 95.0}
    model = build_model(arch, 10, [0.3] * 3, [0.2] * 3).eval()
    load_weights(model, checkpoint, "--model_path", "original.pth.tar", arch, dataset)
    with torch.no_grad():
        logits = model(x)
    if dataset == "TinyImagenet" and arch != "swin_t":  # two normalisations folded into one: float rounding
        assert torch.allclose(logits, reference, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(logits, reference)


@pytest.mark.parametrize("arch,other", [("resnet20s", "resnet18"), ("resnet20s", "resnet56s"),
                                        ("vgg16_bn", "resnet20s")])
def test_research_code_checkpoint_of_another_arch_is_refused(arch, other):
    state = to_research_layout(build_model(arch, 10, *CIFAR10).state_dict(), arch, *CIFAR10)
    with pytest.raises(UsageError) as error:
        load_weights(build_model(other, 10, *CIFAR10), {"state_dict": state}, "--model_path", "m.pth", other, "cifar10")
    message = str(error.value)
    assert "\n" not in message and "research-code checkpoint" in message and f"--arch {other}" in message


def test_research_code_checkpoint_and_mask_run_salun(tmp_path):
    """main_random.py with a checkpoint and a generate_mask.py mask in the research code's layout:
    the checkpoint's weights are the starting point, and weights the mask holds at 0 stay there."""
    digits = DATASETS.get("digits")
    torch.manual_seed(0)
    source = build_model("resnet20s", 10, digits.mean, digits.std)
    layout = to_research_layout(source.state_dict(), "resnet20s", digits.mean, digits.std)
    torch.save({"state_dict": layout, "epoch": 182}, tmp_path / "0model_SA_best.pth.tar")
    generator = torch.Generator().manual_seed(1)
    mask = {key: (torch.rand(value.shape, generator=generator) > 0.5).float() for key, value in layout.items()
            if not key.startswith("normalize.") and "running" not in key and "num_batches" not in key}
    torch.save(mask, tmp_path / "with_0.5.pt")
    main_random.main(["--dataset", "digits", "--arch", "resnet20s", "--device", "cpu", "--batch_size", "128",
                      "--num_indexes_to_replace", "60", "--unlearn", "RL", "--unlearn_epochs", "1",
                      "--unlearn_lr", "0.05", "--weight_decay", "0", "--model_path", str(tmp_path / "0model_SA_best.pth.tar"),
                      "--mask_path", str(tmp_path / "with_0.5.pt"), "--save_dir", str(tmp_path / "out")])
    after = torch.load(tmp_path / "out" / "RLcheckpoint.pth.tar", weights_only=False)["state_dict"]
    for key, keep in mask.items():
        ours = original_key(key, "resnet20s")
        frozen = keep == 0
        assert torch.equal(after[ours][frozen], layout[key][frozen]), key
    moved = after["backbone.fc.weight"][mask["fc.weight"] == 1]
    assert not torch.equal(moved, layout["fc.weight"][mask["fc.weight"] == 1])


# ---------------------------------------------------------------- main_train: schedule and optimizer

TRAIN = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "128", "--device", "cpu"]


def test_periodic_cosine_is_the_research_codes_twenty_epoch_cycle():
    # lr * (1 + cos(pi * (epoch - 10) / 10)) / 2 (its main_train.py:137-139): 0 at epoch 0, peak at 10
    assert [periodic_cosine(e) for e in (0, 5, 10, 15, 20, 25, 30)] == pytest.approx([0, .5, 1, .5, 0, .5, 1], abs=1e-12)
    assert periodic_cosine(0) == 0.0 and periodic_cosine(3) == pytest.approx((1 + math.cos(-0.7 * math.pi)) / 2)


def test_main_train_periodic_cosine_epoch_zero_trains_at_lr_zero(tmp_path, capsys):
    main_train.main(TRAIN + ["--epochs", "1", "--periodic_cosine_lr", "--train_seed", "4", "--save_dir", str(tmp_path)])
    assert "Epoch #0, Learning rate: 0.0\n" in capsys.readouterr().out
    trained = torch.load(tmp_path / "0checkpoint.pth.tar", weights_only=False)["state_dict"]
    torch.manual_seed(4)
    constructed = build_model_from_config(digits_args()).state_dict()
    # lr 0: the weights are the constructed ones, drawn from --train_seed (batch-norm statistics move)
    assert all(torch.equal(trained[k], constructed[k]) for k in constructed if "running" not in k
               and "num_batches" not in k)


@pytest.mark.parametrize("optim,name,lr1", [("adam", "AdamW", 0.05), ("sam", "SAM", 0.1)])
def test_main_train_optim_as_the_research_code(tmp_path, capsys, optim, name, lr1):
    main_train.main(TRAIN + ["--epochs", "2", "--optim", optim, "--save_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"optimizer: {name}\n" in out
    # its (never stepped) schedulers, the intended ones: MultiStepLR (91,136) for sgd and sam, else cosine annealing
    assert f"Epoch #1, Learning rate: {lr1}" in out


def test_main_train_optimizers():
    args = digits_args("--lr", "0.2", "--momentum", "0.8", "--weight_decay", "1e-3")
    model = build_model_from_config(args)
    args = args.replace(unlearn_lr=args.lr, retain_lr=args.lr)
    for optim, kind, expected in [("adam", torch.optim.AdamW, {"lr": 0.2, "weight_decay": 0.05}),
                                  ("sgd", torch.optim.SGD, {"lr": 0.2, "momentum": 0.8, "weight_decay": 1e-3}),
                                  ("sam", torch.optim.SGD, {"lr": 0.2, "momentum": 0.8, "weight_decay": 1e-3,
                                                            "rho": 0.05}),
                                  ("foo", torch.optim.SGD, {"rho": 0.05})]:  # any other value: SAM
        optimizer = main_train.train_optimizer(model, args.replace(optim=optim)).retain_optimizer
        inner = getattr(optimizer, "base_optimizer", optimizer)
        assert type(inner) is kind and (optim in ("sam", "foo")) == (inner is not optimizer)
        assert {key: optimizer.param_groups[0][key] for key in expected} == expected


def test_build_train_parser_accepts_any_optim():
    assert main_train.build_train_parser().parse_args(["--optim", "sam"]).optim == "sam"
    assert isinstance(main_train.build_train_parser().parse_args([]), argparse.Namespace)
