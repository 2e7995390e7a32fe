"""RL_proximal, GA_prune, GA_prune_bi, FT_prune_bi and fisher_new on the tiny problem."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ImageClassification.unlearn import get_unlearn_method
from ImageClassification.unlearn.fisher import hessian_diagonal
from ImageClassification.unlearn.projections import ProximalShrink, PrunedConvs

CPU = torch.device("cpu")


def conv_model() -> nn.Module:
    """A small convolutional classifier for the 1x4x4 images (36 + 144 conv weights)."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def conv_weights(model):
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Conv2d)]


def zeros(model) -> int:
    return sum(int((w == 0).sum()) for w in conv_weights(model))


# ---------------------------------------------------------------- pruning

def test_global_l1_pruning_zeroes_the_smallest_weights_over_all_layers():
    model = conv_model()
    flat = torch.cat([w.reshape(-1) for w in conv_weights(model)]).abs()
    pruned = PrunedConvs(model)
    pruned.prune(0.5)
    assert zeros(model) == 90  # round(0.5 * 180)
    threshold = flat.sort().values[89]
    for w_before, w in zip([w.clone() for w in conv_weights(conv_model())], conv_weights(model)):
        assert torch.equal(w == 0, w_before.abs() <= threshold)
    pruned.prune(0.5)  # the amount counts the remaining weights only
    assert zeros(model) == 135 and pruned.remaining() == pytest.approx(25.0)


def test_ga_prune_states_rewind_and_keep_the_mask(loaders, make_args, capsys, monkeypatch):
    from ImageClassification.unlearn import prune
    starts, train = [], prune._single_objective

    def spy(loaders, model, *args, **kwargs):
        starts.append(copy.deepcopy(model.state_dict()))
        return train(loaders, model, *args, **kwargs)

    monkeypatch.setattr(prune, "_single_objective", spy)
    model = conv_model()
    original = copy.deepcopy(model.state_dict())
    args = make_args(unlearn="GA_prune", epochs=1, lr=0.01, rate=0.5, pruning_times=2, momentum=0.9)
    get_unlearn_method("GA_prune")(loaders, model, args, None, CPU)
    assert zeros(model) == 135  # 180 -> 90 -> 45 remaining: (1 - rate) ** pruning_times
    out = capsys.readouterr().out
    assert "pruning state 1" in out and "* remain weight ratio =  25.0 %" in out
    # state 1 starts from the original weights (rewind_lt at epoch 0) with state 0's mask
    assert len(starts) == 2 and all(torch.equal(starts[0][k], v) for k, v in original.items())
    for key, value in original.items():
        rewound = starts[1][key]
        expected = value * (rewound != 0) if key in ("0.weight", "3.weight") else value
        assert torch.equal(rewound, expected), key
    assert sum(int((starts[1][k] == 0).sum()) for k in ("0.weight", "3.weight")) == 90


def test_ga_prune_bi_prunes_after_every_epoch(loaders, make_args):
    model = conv_model()
    args = make_args(unlearn="GA_prune_bi", epochs=2, lr=0.01, rate=0.5)
    get_unlearn_method("GA_prune_bi")(loaders, model, args, None, CPU)
    assert zeros(model) == 135


@pytest.mark.parametrize("epochs,remaining", [(4, 45), (3, 90)])
def test_ft_prune_bi_prunes_rate_overall_and_pruned_weights_stay_zero(loaders, make_args, epochs, remaining):
    model = conv_model()
    # rate 0.75 over (E - 1) // 2 + 1 = 2 prunings: 1 - 0.25 ** 0.5 = 0.5 each, at epochs 0 and 2 (E = 4);
    # E = 3 prunes once (epoch 1).  Momentum and weight decay would move zeroed weights without the hook.
    args = make_args(unlearn="FT_prune_bi", unlearn_epochs=epochs, rate=0.75, momentum=0.9, weight_decay=0.1)
    get_unlearn_method("FT_prune_bi")(loaders, model, args, None, CPU)
    assert 180 - zeros(model) == remaining


# ---------------------------------------------------------------- RL_proximal

def test_proximal_shrink_is_the_soft_threshold_of_the_change():
    model = nn.Linear(3, 2)  # 8 parameters
    shrink = ProximalShrink(model, mask_ratio=0.5, total_steps=4)
    shrink.set_anchor()
    anchor = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    change = torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05, 0.2, -0.4, 0.6])
    with torch.no_grad():
        model.weight += change[:6].view(2, 3)
        model.bias += change[6:]
    assert shrink.count(0) == int(0.5 * (3 / 4) * 8) == 3
    shrink.apply(shrink.count(0))  # third smallest |change| is 0.2
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    expected = anchor + torch.tensor([0.3, 0.0, 0.1, -0.5, 0.0, 0.0, -0.2, 0.4])
    assert torch.allclose(after, expected, atol=1e-6)
    assert int((after == anchor).sum()) == 3


def test_rl_proximal_returns_the_scheduled_share_to_the_start(model, loaders, make_args):
    start = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    args = make_args(unlearn="RL_proximal", unlearn_epochs=1, mask_ratio=0.8, unlearn_lr=0.05)
    get_unlearn_method("RL_proximal")(loaders, model, args, None, CPU)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    steps = len(loaders.forget_loader) + len(loaders.retain_loader)  # 2 + 5 (one mixed loader of 6 batches)
    # the research code's count is constant within an epoch: int(r * (T - 1) / T * n)
    count = int(0.8 * ((steps - 1) / steps * after.numel()))
    assert int((after == start).sum()) >= count and not torch.equal(after, start)


def test_rl_proximal_refuses_mid_epoch_snapshots(model, loaders, make_args):
    from common.errors import UsageError
    with pytest.raises(UsageError, match="--save_every"):
        get_unlearn_method("RL_proximal")(loaders, model, make_args(unlearn="RL_proximal", save_every=2), None, CPU)


# ---------------------------------------------------------------- fisher_new

def hand_hessian(model, dataset, num_classes):
    """The research code's estimate written out: per batch of 32 and class y, mean p(y) * grad^2."""
    model.eval()
    x, y = dataset.tensors
    totals = [torch.zeros_like(p) for p in model.parameters()]
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    for xb, _ in batches:
        for c in range(num_classes):
            model.zero_grad()
            out = model(xb)
            F.cross_entropy(out, torch.full((len(xb),), c)).backward()
            weight = torch.softmax(out, -1)[:, c].mean().detach()
            for t, p in zip(totals, model.parameters()):
                t += weight * p.grad ** 2
    return [t / len(batches) for t in totals]


def test_hessian_diagonal_matches_the_hand_computation(model, loaders):
    expected = hand_hessian(copy.deepcopy(model), loaders.retain_loader.dataset, 3)
    got, labels = hessian_diagonal(model, loaders.retain_loader.dataset, CPU, 3)
    assert labels == {0, 1, 2}
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("forget_class", [-1, 2])
def test_fisher_new_noise_scale_follows_the_hessian(model, loaders, make_args, forget_class):
    retain = loaders.retain_loader.dataset
    if forget_class >= 0:  # class 2 forgotten as a whole: none of it left in the retain set
        keep = retain.tensors[1] != forget_class
        retain.tensors = tuple(t[keep] for t in retain.tensors)
    before = [p.detach().clone() for p in model.parameters()]
    hessian = hand_hessian(copy.deepcopy(model), retain, 3)
    alpha = 1e-6
    torch.manual_seed(7)
    get_unlearn_method("fisher_new")(loaders, model, make_args(unlearn="fisher_new", alpha=alpha,
                                                               class_to_replace=forget_class), None, CPU)
    torch.manual_seed(7)
    hessian_diagonal(copy.deepcopy(model), retain, CPU, 3)  # the same RNG draws as the method's pass
    for p, p0, h in zip(model.parameters(), before, hessian):
        head = p.shape[0] == 3
        var = alpha * (1 / (h + 1e-8)).clamp(max=1e2 if head else 1e3)
        if p.dim() > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p)
        mean = p0.clone()
        if head and forget_class >= 0:
            var = var.clone()
            mean[forget_class], var[forget_class] = 0, 1e-4
        var = var * 10 if head or p.dim() == 1 else var
        expected = mean + var.sqrt() * torch.empty_like(p).normal_()
        assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7)
