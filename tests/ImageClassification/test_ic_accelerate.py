"""``accelerate launch`` with 2 CPU processes trains and unlearns image classifiers as one process does.

Digits at their native 8x8 with a ResNet-20 (BatchNorm everywhere); a batch of 255 splits
into uneven slices of 128 and 127 samples, and the last batch of each loader is smaller
still.  The learning rates are small enough that training is not chaotic: from scratch at
``--lr 0.05`` a 1e-7 relative change of the initial weights grows to 1e-2 in the loss within
20 steps, whatever the number of processes.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nested import assert_nested_close

from common.distributed import ONE_PROCESS, SampleSharding, shard_forward, sharding_of
from ImageClassification import generate_mask, main_forget, main_random, main_random_sfron, main_train

COMMON = ["--dataset", "digits", "--input_size", "8", "--arch", "resnet20s", "--batch_size", "511",
          "--device", "cpu", "--num_indexes_to_replace", "60"]
METRICS = ("retain_acc", "forget_acc", "val_acc", "test_acc", "mia_raw")


def state_dict(path: Path) -> dict:
    saved = torch.load(path)
    return saved.get("state_dict", saved)


def assert_same_weights(one: dict, two: dict, atol: float) -> None:
    assert one.keys() == two.keys()
    mismatched = {name: float((one[name].double() - two[name].double()).abs().max())
                  for name in one if not torch.allclose(one[name].double(), two[name].double(), atol=atol)}
    assert not mismatched, mismatched


def assert_same_updates(before: dict, one: dict, two: dict, rtol: float) -> None:
    """Every tensor moved from ``before`` the same way in both runs, to ``rtol`` of its update's norm.

    Elementwise tolerances do not suit Adam: it normalises the float noise of near-zero gradient
    entries into steps of up to the learning rate, in one process as in two.
    """
    assert one.keys() == two.keys() == before.keys()
    ratios = {name: float((two[name].double() - one[name].double()).norm()
                          / (one[name].double() - before[name].double()).norm().clamp(min=1e-12))
              for name in one}
    assert not {name: r for name, r in ratios.items() if r > rtol}, max(ratios.items(), key=lambda kv: kv[1])


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The one-process main_train run (its model is the original of the unlearning tests)."""
    save_dir = tmp_path_factory.mktemp("train_one")
    main_train.main(COMMON + ["--epochs", "1", "--lr", "1e-3", "--save_dir", str(save_dir)])
    return save_dir


def test_main_train_two_processes_like_one(original, tmp_path, launch_two_processes):
    two = tmp_path / "train_two"
    launch_two_processes("ImageClassification/main_train.py",
                         COMMON + ["--epochs", "1", "--lr", "1e-3", "--save_dir", two])
    records = [json.loads((d / "run.json").read_text()) for d in (original, two)]
    assert [r["num_processes"] for r in records] == [1, 2]
    assert_nested_close(records[1]["metrics"], records[0]["metrics"], path="metrics")
    assert_nested_close(records[1]["history"], records[0]["history"], path="history")
    # BatchNorm running statistics are among the compared tensors: they too are the global batch's.
    assert_same_weights(state_dict(original / main_train.LAST), state_dict(two / main_train.LAST), atol=1e-5)


def unlearn_with_one_and_two_processes(script, argv, tmp_path, launch_two_processes):
    """Run an unlearning script in this process and under a 2-process launch; check that their
    metrics agree and that only the main process printed; returns both checkpoints' weights."""
    entry = {"main_random.py": main_random, "main_forget.py": main_forget,
             "main_random_sfron.py": main_random_sfron}[script]
    one = entry.main(argv + ["--save_dir", str(tmp_path / "one")])
    result = launch_two_processes(f"ImageClassification/{script}", argv + ["--save_dir", tmp_path / "two"])
    assert result.stdout.count("retain acc:") == 1  # only the main process prints the result lines
    two = json.loads((tmp_path / "two" / "eval_result.json").read_text())
    accuracies = [k for k in METRICS if k != "mia_raw"]
    assert_nested_close({k: two[k] for k in accuracies}, {k: one[k] for k in accuracies})
    # The MIA refits a classifier on a few dozen loss features: float-level differences can move one
    # sample across its decision boundary (seen for SCRUB), so it agrees to one sample of 60.
    assert two["mia_raw"] == pytest.approx(one["mia_raw"], abs=1 / 60 + 1e-9)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["num_processes"] == 2
    unlearn = argv[argv.index("--unlearn") + 1]
    return [state_dict(tmp_path / d / f"{unlearn}checkpoint.pth.tar") for d in ("one", "two")]


def test_salun_dual_two_processes_like_one(original, tmp_path, launch_two_processes):
    model_path = original / main_train.BEST
    generate_mask.main(COMMON + ["--model_path", str(model_path), "--save_dir", str(tmp_path / "mask")])
    salun = COMMON + ["--unlearn", "RL", "--unlearn_epochs", "1", "--unlearn_lr", "1e-3", "--retain_lr", "1e-3",
                      "--optim", "dual", "--model_path", str(model_path),
                      "--mask_path", str(tmp_path / "mask" / "with_0.5.pt")]
    weights = unlearn_with_one_and_two_processes("main_random.py", salun, tmp_path, launch_two_processes)
    assert_same_updates(state_dict(model_path), *weights, rtol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("script,method", [
    # the train-mode teacher; SGD, since the first forget gradient (of a KL at its minimum) is float
    # noise, which Adam would turn into learning-rate-sized steps that differ with the summation order
    ("main_forget.py", ["--unlearn", "SCRUB", "--optim", "sgd"]),
    # Fisher, mask, clip; SGD, as SFR-on's adaptive ascent (weights l^-1/2) amplifies float noise:
    # in one process a 1e-7 relative change of the original's weights moves its 4-step update by
    # 2% (OMP_NUM_THREADS=1); Adam's sign-like first steps make that 16%
    ("main_random_sfron.py", ["--unlearn", "SFRon", "--sfron_iters", "4", "--sfron_freq", "2", "--optim", "sgd"]),
    ("main_forget.py", ["--unlearn", "FT_l1", "--alpha", "0.01"]),               # a weights-only loss term
    ("main_forget.py", ["--unlearn", "boundary_shrink"]),                        # eval-mode FGSM
    ("main_forget.py", ["--unlearn", "boundary_expanding"]),                     # a head replaced after sharding
    ("main_forget.py", ["--unlearn", "retrain", "--accum_steps", "2"]),          # gradient accumulation
], ids=["SCRUB", "SFRon", "FT_l1", "boundary_shrink", "boundary_expanding", "retrain"])
def test_unlearning_methods_two_processes_like_one(original, tmp_path, launch_two_processes, script, method):
    model_path = original / main_train.BEST
    optim = [] if "--optim" in method else ["--optim", "dual"]
    argv = COMMON + method + optim + ["--unlearn_epochs", "1", "--unlearn_lr", "1e-3", "--retain_lr", "1e-3",
                                      "--model_path", str(model_path)]
    weights = unlearn_with_one_and_two_processes(script, argv, tmp_path, launch_two_processes)
    if "SFRon" in method:  # the Fisher diagonals behind its mask, written by the main process
        for name in ("forget_fisher.pt", "remain_fisher.pt"):
            assert_same_weights(torch.load(tmp_path / "one" / name), torch.load(tmp_path / "two" / name), atol=1e-9)
    if "retrain" in method:  # from a fresh initialisation, with SGD only: the weights themselves agree
        assert_same_weights(*weights, atol=1e-5)
    elif "boundary_expanding" in method:  # the head gained a row: compare the rest as updates
        before = state_dict(model_path)
        same = [name for name in before if before[name].shape == weights[0][name].shape]
        assert_same_updates(*({name: w[name] for name in same} for w in (before, *weights)), rtol=1e-2)
    else:
        assert_same_updates(state_dict(model_path), *weights, rtol=5e-2 if "SFRon" in method else 1e-2)


@pytest.mark.slow
def test_generate_mask_two_processes_like_one(original, tmp_path, launch_two_processes):
    argv = COMMON + ["--model_path", str(original / main_train.BEST)]
    generate_mask.main(argv + ["--save_dir", str(tmp_path / "one")])
    launch_two_processes("ImageClassification/generate_mask.py", argv + ["--save_dir", tmp_path / "two"])
    for threshold in (0.1, 0.5, 1.0):
        masks = [torch.load(tmp_path / d / f"with_{threshold}.pt") for d in ("one", "two")]
        assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert json.loads((tmp_path / "two" / "run.json").read_text())["num_processes"] == 2


class RankZeroOfTwo:
    """What SampleSharding reads of an Accelerator, for the calls that communicate nothing."""
    num_processes, process_index = 2, 0


def test_shard_forward_binds_to_copies_and_leaves_eval_gradient_passes_whole():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert shard_forward(plain, SampleSharding()) is plain and "forward" not in vars(plain)
    assert sharding_of(plain) is ONE_PROCESS

    sharding = SampleSharding(RankZeroOfTwo())
    model = shard_forward(copy.deepcopy(plain), sharding)
    teacher = copy.deepcopy(model)  # as SCRUB and boundary_shrink copy the model
    assert sharding_of(teacher) is sharding and teacher.forward.__self__ is teacher
    assert teacher.state_dict().keys() == plain.state_dict().keys()

    def output_and_gradient(forward, x, weight):
        out = forward(x)
        out.square().sum().backward()
        grad = weight.grad.clone()
        weight.grad = None
        return out.detach(), grad

    x = torch.randn(5, 3)
    # eval mode with autograd on (saliency, Fisher, FGSM): the whole batch, the one-process gradient
    expected = output_and_gradient(plain.eval(), x, plain[0].weight)
    got = output_and_gradient(model.eval(), x, model[0].weight)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # a training batch with fewer samples than processes runs whole on each process, its gradient
    # halved so that the sum over the two processes counts it once
    out, grad = output_and_gradient(plain[0], x[:1], plain[0].weight)
    halved = output_and_gradient(lambda batch: sharding.forward(plain[0], batch), x[:1], plain[0].weight)
    assert torch.equal(halved[0], out) and torch.allclose(halved[1], grad / 2)
