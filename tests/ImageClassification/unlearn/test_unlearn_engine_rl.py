"""The epoch driver, the method registry and RL / SalUn."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from dualoptim.optimizers import DualOptim, SharedOptim
from common.errors import UsageError
from ImageClassification.unlearn import UNLEARN_METHODS, get_unlearn_method
from ImageClassification.unlearn.args import add_method_args
from ImageClassification.unlearn.engine import make_epoch_scheduler, parse_milestones, run_epochs, warmup_lr
from ImageClassification.unlearn.rl import mixed_relabel_loader, random_label_loss

CPU = torch.device("cpu")


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_registry_has_the_research_code_names():
    for name in ("RL", "FT", "FT_l1", "FT_prune", "l1-sparse", "GA", "GA_l1", "retrain", "SCRUB", "SFRon",
                 "boundary_shrink", "boundary_expanding", "fisher", "wfisher", "raw"):
        assert name in UNLEARN_METHODS
        assert callable(get_unlearn_method(name))
    with pytest.raises(UsageError, match="--unlearn: unknown value 'nope'"):
        get_unlearn_method("nope")


def test_method_flags_have_the_research_code_defaults():
    args = add_method_args(argparse.ArgumentParser()).parse_args(["--no-l1-epochs", "2"])
    assert (args.alpha, args.no_l1_epochs, args.accum_steps) == (0.2, 2, 1)
    assert (args.scrub_alpha, args.scrub_gamma) == (0.5, 1.0)
    assert (args.sfron_alpha, args.sfron_freq, args.sfron_iters, args.sfron_ema_beta) == (25, 5, 1500, 1.0)


def test_parse_milestones_and_bad_value():
    assert parse_milestones("91,136") == [91, 136]
    assert parse_milestones([3, 5]) == [3, 5]
    with pytest.raises(UsageError, match="--decreasing_lr"):
        parse_milestones("ten")


def test_periodic_cosine_schedule_of_the_research_code_main_train(make_args):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_epoch_scheduler(opt, make_args(unlearn="train", periodic_cosine_lr=True, imagenet_arch=True))
    lrs = []
    for _ in range(31):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lrs[e] for e in (0, 5, 10, 15, 20, 30)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 1.0], abs=1e-12)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_schedulers_and_warmup(make_args):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_epoch_scheduler(opt, make_args(decreasing_lr="1,2"))
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([1.0, 0.1, 0.01])
    # imagenet_arch retrain: linear warmup over 2 epochs, then cosine to 0 at epoch 6
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_epoch_scheduler(opt, make_args(unlearn="retrain", imagenet_arch=True, warmup=2,
                                                unlearn_epochs=6))
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5])
    # per-step warmup to --lr over --warmup epochs of 4 steps: epoch 1 step 2 -> 6/8 of lr
    warmup_lr(opt, epoch=1, step=2, steps_per_epoch=4, warmup=2, lr=0.4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_driver_logs_schedules_and_saves_every_epoch(tmp_path, model, make_args, capsys):
    args = make_args(save_dir=str(tmp_path), unlearn_epochs=3, decreasing_lr="2")
    seen = []
    run = run_epochs(model, args, CPU, None, lambda run: seen.append(run.epoch) or run.epoch * 10)
    optimizer = run.optimizer
    assert seen == [0, 1, 2] and run.epoch_results == [0, 10, 20]
    out = capsys.readouterr().out
    assert "Epoch #0, Learning rate: 0.05" in out and "Epoch #2, Learning rate: 0.005" in out
    assert isinstance(optimizer, SharedOptim)
    for epoch in (1, 2, 3):
        saved = torch.load(tmp_path / f"checkpoint_{epoch}.pt")
        assert set(saved) == set(model.state_dict())
    assert torch.equal(saved["4.weight"], model.state_dict()["4.weight"])
    assert not list(tmp_path.glob(".*tmp"))


def test_bad_optim_is_a_usage_error(model, loaders, make_args):
    with pytest.raises(UsageError, match="--optim"):
        get_unlearn_method("RL")(loaders, model, make_args(optim="lion"), None, CPU)


def test_random_labels_are_uniform_in_range_and_drawn_per_batch(model):
    targets = torch.zeros(2000, dtype=torch.long)
    x = torch.rand(2000, 1, 4, 4)
    torch.manual_seed(3)
    expected = torch.randint(0, 3, targets.shape)
    torch.manual_seed(3)
    model.eval()
    loss, logits = random_label_loss(model, 3)(x, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, expected).item(), rel=1e-6)
    assert set(expected.tolist()) == {0, 1, 2}
    # the next batch gets fresh labels
    second = torch.randint(0, 3, targets.shape)
    assert not torch.equal(second, expected)


@pytest.mark.parametrize("optim", ["dual", "dual_aa"])
def test_rl_dual_forget_batches_use_forget_optimizer(optim, model, loaders, make_args, recorder):
    args = make_args(optim=optim, unlearn_lr=1e-3, retain_lr=0.02, unlearn_epochs=2)
    get_unlearn_method("RL")(loaders, model, args, None, CPU)
    nf, nr = len(loaders.forget_loader), len(loaders.retain_loader)
    assert recorder.steps == (["forget"] * nf + ["retain"] * nr) * 2
    (opt,) = recorder.optimizers
    assert isinstance(opt, DualOptim) and opt.forget_optimizer is not opt.retain_optimizer
    forget_state = next(iter(opt.forget_optimizer.state.values()))
    assert int(forget_state["step"]) == 2 * nf  # AdamW saw the forget batches only
    retain_state = next(iter(opt.retain_optimizer.state.values()))
    if optim == "dual":
        assert "momentum_buffer" in retain_state
    else:
        assert int(retain_state["step"]) == 2 * nr


def test_rl_sgd_switches_learning_rate_per_objective(model, loaders, make_args, sgd_step_lrs):
    args = make_args(optim="sgd", unlearn_lr=0.04, retain_lr=0.01, unlearn_epochs=1)
    used = sgd_step_lrs
    get_unlearn_method("RL")(loaders, model, args, None, CPU)
    nf, nr = len(loaders.forget_loader), len(loaders.retain_loader)
    assert used == pytest.approx([0.04] * nf + [0.01] * nr)


def test_rl_moves_forget_predictions_away(model, loaders, make_args):
    x, y = loaders.forget_loader.dataset.tensors
    model.eval()
    before = F.cross_entropy(model(x), y).item()
    get_unlearn_method("RL")(loaders, model, make_args(unlearn_epochs=3, unlearn_lr=0.05), None, CPU)
    model.eval()
    assert F.cross_entropy(model(x), y).item() > before


def test_rl_mixed_branch_on_cifar100_single_optimizer(model, loaders, make_args, recorder):
    args = make_args(dataset="cifar100", optim="sgd", unlearn_epochs=1)
    get_unlearn_method("RL")(loaders, model, args, None, CPU)
    total = len(loaders.forget_loader.dataset) + len(loaders.retain_loader.dataset)
    assert recorder.steps == ["forget"] * math.ceil(total / args.batch_size)
    mixed = mixed_relabel_loader(loaders, 8, seed=1, epoch=0).dataset
    assert len(mixed) == total
    labels = [int(mixed[i][1]) for i in range(len(loaders.forget_loader.dataset))]
    assert set(labels) <= {0, 1, 2}
    # the labels of an epoch depend on (seed, epoch) only, so a resumed run redraws the same ones
    again = mixed_relabel_loader(loaders, 8, seed=1, epoch=0).dataset
    assert [int(again[i][1]) for i in range(len(labels))] == labels
    next_epoch = mixed_relabel_loader(loaders, 8, seed=1, epoch=1).dataset
    assert [int(next_epoch[i][1]) for i in range(len(labels))] != labels
    assert mixed[len(labels)][1] == int(loaders.retain_loader.dataset.tensors[1][0])  # retain keeps its label
    # with dual the per-batch branch is used even on cifar100
    recorder.steps.clear()
    get_unlearn_method("RL")(loaders, model, make_args(dataset="cifar100", optim="dual", unlearn_epochs=1),
                             None, CPU)
    assert recorder.steps[0] == "forget" and recorder.steps[-1] == "retain"


def test_salun_mask_freezes_unmasked_weights(model, loaders, make_args):
    mask = {name: (torch.rand_like(p) > 0.5).float() for name, p in model.named_parameters()}
    before = params_of(model)
    args = make_args(optim="sgd", weight_decay=0.0, unlearn_epochs=1)
    get_unlearn_method("RL")(loaders, model, args, mask, CPU)
    after = params_of(model)
    for name, m in mask.items():
        frozen = m == 0
        assert torch.equal(after[name][frozen], before[name][frozen])
        if name != "1.bias":  # a bias right before BatchNorm gets (numerically) zero gradient
            assert not torch.equal(after[name][~frozen], before[name][~frozen])


def test_rl_same_seed_same_model(original_model, make_loaders, make_args):
    import copy

    results = []
    for _ in range(2):
        torch.manual_seed(7)
        net = copy.deepcopy(original_model)
        get_unlearn_method("RL")(make_loaders(), net, make_args(optim="dual", unlearn_lr=1e-3), None, CPU)
        results.append(params_of(net))
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name])
