"""FT, l1-sparse, GA, retrain, SCRUB, SFR-on, boundary and Fisher baselines on a tiny problem."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dualoptim.optimizers import DualOptim
from ImageClassification.unlearn import get_unlearn_method
from ImageClassification.unlearn.finetune import l1_norm, l1_weight
from ImageClassification.unlearn.fisher import fisher_diagonal, woodfisher_inverse_hvp
from ImageClassification.unlearn.scrub import scrub_forget_loss, scrub_retain_loss
from ImageClassification.unlearn.sfron import adaptive_ce

CPU = torch.device("cpu")


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def same_params(a, b):
    return all(torch.equal(a[name], b[name]) for name in a)


def forget_ce(model, loaders):
    x, y = loaders.forget_loader.dataset.tensors
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


# ---------------------------------------------------------------- FT / l1 / GA / retrain

def test_ft_steps_retain_only_at_unlearn_lr_under_sgd(model, loaders, make_args, recorder):
    before = params_of(model)
    # the research code's FT never switches lr: under sgd --retain_lr is ignored
    get_unlearn_method("FT")(loaders, model, make_args(unlearn="FT", retain_lr=0.0), None, CPU)
    assert recorder.steps == ["retain"] * len(loaders.retain_loader) * 2
    assert not same_params(before, params_of(model))


def test_ft_under_dual_uses_the_retain_optimizer(model, loaders, make_args, recorder):
    before = params_of(model)
    get_unlearn_method("FT")(loaders, model, make_args(unlearn="FT", optim="dual", retain_lr=0.0), None, CPU)
    assert same_params(before, params_of(model))  # SGD at --retain_lr 0 does not move
    assert not recorder.optimizers[0].forget_optimizer.state  # AdamW never stepped


def test_l1_weight_schedule(make_args):
    args = make_args(alpha=0.2, unlearn_epochs=4, no_l1_epochs=2)
    assert [l1_weight(args, e) for e in range(4)] == pytest.approx([0.2, 0.1, 0.0, 0.0])


def test_l1_sparse_shrinks_the_weights(original_model, loaders, make_args):
    plain, sparse = copy.deepcopy(original_model), copy.deepcopy(original_model)
    get_unlearn_method("FT")(loaders, plain, make_args(unlearn="FT", weight_decay=0.0), None, CPU)
    get_unlearn_method("l1-sparse")(loaders, sparse, make_args(unlearn="FT_prune", alpha=5e-3, weight_decay=0.0),
                                    None, CPU)
    assert l1_norm(sparse).item() < l1_norm(plain).item()


def test_ga_ascends_the_forget_loss(model, loaders, make_args, recorder):
    before = forget_ce(model, loaders)
    get_unlearn_method("GA")(loaders, model, make_args(unlearn="GA", unlearn_lr=0.05), None, CPU)
    assert forget_ce(model, loaders) > before + 0.1
    assert recorder.steps == ["retain"] * len(loaders.forget_loader) * 2  # the main optimizer, as the original


def test_retrain_trains_and_accumulates(tmp_path, model, loaders, make_args, recorder):
    original = params_of(model)
    args = make_args(unlearn="retrain", unlearn_epochs=2, accum_steps=2, save_dir=str(tmp_path))
    torch.manual_seed(0)
    get_unlearn_method("retrain")(loaders, model, args, None, CPU)
    nr = len(loaders.retain_loader)  # 5 batches -> steps after batches 2, 4 and 5
    assert nr == 5 and recorder.steps == ["retain"] * 3 * 2
    after = params_of(model)
    assert all(not torch.allclose(after[name], original[name], atol=1e-2) for name in ("1.weight", "4.weight"))
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]


# ---------------------------------------------------------------- SCRUB

def test_scrub_losses_match_hand_computation():
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([0, 1])
    e = math.e
    ps = [[e**2 / (e**2 + 1), 1 / (e**2 + 1)], [0.5, 0.5]]
    pt = [[0.5, 0.5], [e / (e + 1), 1 / (e + 1)]]
    kl = sum(pt[r][c] * (math.log(pt[r][c]) - math.log(ps[r][c])) for r in range(2) for c in range(2)) / 2
    ce = (-math.log(ps[0][0]) - math.log(ps[1][1])) / 2
    assert scrub_forget_loss(student, teacher).item() == pytest.approx(-kl, rel=1e-5)
    assert scrub_retain_loss(student, teacher, targets, alpha=0.5, gamma=2.0).item() == \
        pytest.approx(2.0 * ce + 0.5 * kl, rel=1e-5)


def test_scrub_steps_schedules_and_diverges_from_teacher(model, loaders, make_args, recorder):
    teacher = copy.deepcopy(model).eval()
    args = make_args(unlearn="SCRUB", optim="dual", unlearn_lr=1e-2, retain_lr=0.02, decreasing_lr="1")
    get_unlearn_method("SCRUB")(loaders, model, args, None, CPU)
    nf, nr = len(loaders.forget_loader), len(loaders.retain_loader)
    assert recorder.steps == (["forget"] * nf + ["retain"] * nr) * 2
    (opt,) = recorder.optimizers
    assert opt.retain_optimizer.param_groups[0]["lr"] == pytest.approx(0.002)  # scheduled
    assert opt.forget_optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # not scheduled, as the original
    x, _ = loaders.forget_loader.dataset.tensors
    model.eval()
    with torch.no_grad():
        assert -scrub_forget_loss(model(x), teacher(x)).item() > 1e-3


# ---------------------------------------------------------------- SFR-on

def test_adaptive_ce_weights_samples_by_inverse_root_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 0])
    l1, l2 = math.log(1 + math.exp(-2)), math.log(1 + math.e)
    w1, w2 = l1 ** -0.5, l2 ** -0.5
    loss = adaptive_ce(logits, targets, lambd=0.5)
    assert loss.item() == pytest.approx((w1 * l1 + w2 * l2) / (w1 + w2), rel=1e-5)


def test_sfron_interleaves_steps_and_anneals(tmp_path, model, loaders, make_args, recorder):
    args = make_args(unlearn="SFRon", optim="dual", unlearn_lr=0.05, retain_lr=0.01,
                     sfron_iters=6, sfron_freq=3, save_dir=str(tmp_path))
    before = forget_ce(model, loaders)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    assert recorder.steps == ["forget", "retain", "retain", "retain"] * 2
    (opt,) = recorder.optimizers
    assert isinstance(opt, DualOptim)
    assert int(next(iter(opt.forget_optimizer.state.values()))["step"]) == 2
    assert opt.retain_optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0
    assert (tmp_path / "forget_fisher.pt").is_file() and (tmp_path / "remain_fisher.pt").is_file()
    assert forget_ce(model, loaders) > before


def test_sfron_single_optimizer_runs_both_objectives_at_retain_lr(model, loaders, make_args, sgd_step_lrs):
    used = sgd_step_lrs
    args = make_args(unlearn="SFRon", optim="sgd", unlearn_lr=5.0, retain_lr=0.01, sfron_iters=2, sfron_freq=2)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    assert used == pytest.approx([0.01, 0.01, 0.01 * (1 + math.cos(math.pi / 2)) / 2])


def test_sfron_slow_weights_with_beta_zero_freeze_the_model(model, loaders, make_args):
    before = params_of(model)
    args = make_args(unlearn="SFRon", optim="sgd", sfron_iters=3, sfron_freq=1, sfron_ema_beta=0.0)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    assert same_params(before, params_of(model))


def test_sfron_checkpoint_every_saves_the_model_along_the_run(model, loaders, make_args, tmp_path):
    args = make_args(unlearn="SFRon", optim="sgd", sfron_iters=4, sfron_freq=2, sfron_checkpoint_every=2,
                     save_dir=str(tmp_path))
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_step2.pt", "checkpoint_step4.pt"]
    last = torch.load(tmp_path / "checkpoint_step4.pt", weights_only=True)
    middle = torch.load(tmp_path / "checkpoint_step2.pt", weights_only=True)
    assert all(torch.equal(last[name], value) for name, value in model.state_dict().items())
    assert not all(torch.equal(middle[name], value) for name, value in model.state_dict().items())


# ---------------------------------------------------------------- boundary

def test_boundary_expanding_sends_forget_set_to_shadow_class(model, loaders, make_args):
    args = make_args(unlearn="boundary_expanding", unlearn_lr=0.05, unlearn_epochs=3)
    mask = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    get_unlearn_method("boundary_expanding")(loaders, model, args, mask, CPU)
    assert model[4].out_features == 4
    x, _ = loaders.forget_loader.dataset.tensors
    model.eval()
    assert (model(x).argmax(1) == 3).float().mean().item() > 0.5


def test_boundary_shrink_lowers_forget_accuracy(model, loaders, make_args, recorder):
    x, y = loaders.forget_loader.dataset.tensors
    acc_before = (model.eval()(x).argmax(1) == y).float().mean().item()
    args = make_args(unlearn="boundary_shrink", unlearn_lr=0.05, unlearn_epochs=3)
    get_unlearn_method("boundary_shrink")(loaders, model, args, None, CPU)
    assert recorder.steps == ["retain"] * len(loaders.forget_loader) * 3
    assert (model.eval()(x).argmax(1) == y).float().mean().item() < acc_before


# ---------------------------------------------------------------- fisher / wfisher

def test_fisher_diagonal_matches_per_sample_autograd(model, loaders):
    x, y = loaders.forget_loader.dataset.tensors
    model.eval()
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(len(x)):
        log_p = torch.log_softmax(model(x[i:i + 1]), dim=-1)[0, y[i]]
        grads = torch.autograd.grad(log_p, list(model.parameters()))
        for (name, _), g in zip(model.named_parameters(), grads):
            expected[name] += (g + 1e-8) ** 2 / len(x)
    got = fisher_diagonal(model, loaders.forget_loader, CPU)
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-10)


def test_fisher_adds_bounded_noise(model, loaders, make_args):
    before = params_of(model)
    torch.manual_seed(0)
    get_unlearn_method("fisher")(loaders, model, make_args(unlearn="fisher", alpha=1e-6), None, CPU)
    after = params_of(model)
    assert not same_params(before, after)
    delta = (after["1.weight"] - before["1.weight"]).abs()
    assert delta.max().item() < 6 * 1e-3  # std is capped at 1e-3


def test_woodfisher_recursion_by_hand():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.2], [0.1, 0.3]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    grads = [torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), model.weight)[0].flatten()
             for i in range(3)]
    v = torch.tensor([1.0, 2.0, -1.0, 0.5])
    n = 5.0  # the recursion also stops after n + 2 samples: keep all three
    k, o = v.clone(), grads[0].clone()
    for g in grads[1:]:
        t = o @ g
        k = k - (k @ g) / (n + t) * o
        o = o - t / (n + t) * o
    loader = list(zip(x.split(1), y.split(1)))
    assert torch.allclose(woodfisher_inverse_hvp(model, loader, CPU, v, damping=n), k, atol=1e-6)


def test_wfisher_perturbs_only_masked_weights(model, loaders, make_args):
    mask = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    mask["4.weight"] = torch.ones_like(mask["4.weight"])
    before = params_of(model)
    get_unlearn_method("wfisher")(loaders, model, make_args(unlearn="wfisher", alpha=10.0), mask, CPU)
    after = params_of(model)
    assert not torch.equal(after["4.weight"], before["4.weight"])
    assert all(torch.equal(after[name], before[name]) for name in before if name != "4.weight")
