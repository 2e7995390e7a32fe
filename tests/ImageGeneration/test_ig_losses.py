"""Diffusion and unlearning losses against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ImageGeneration.core.diffusion import (
    EMA, FORGET_LOSSES, adaptive_weights, antithetic_timesteps, beta_schedule, ewc_penalty,
    guided_noise, noise_prediction_loss, pseudo_labels_for, q_sample)


def zero_eps(x, t, c):
    return torch.zeros_like(x)


def two_sample_noise():
    """Per-sample squared sums 1 and 4."""
    noise = torch.zeros(2, 1, 2, 2)
    noise[0, 0, 0, 0] = 1.0
    noise[1, 0, 1, 1] = 2.0
    return noise


ABAR = torch.tensor([0.81, 0.25])


def test_q_sample_matches_formula():
    x0, noise = torch.full((2, 1, 1, 1), 2.0), torch.ones(2, 1, 1, 1)
    out = q_sample(x0, torch.tensor([0, 1]), noise, ABAR)
    # sqrt(0.81) * 2 + sqrt(0.19), sqrt(0.25) * 2 + sqrt(0.75)
    assert out.flatten().tolist() == pytest.approx([1.8 + math.sqrt(0.19), 1.0 + math.sqrt(0.75)])


def test_simple_loss_sums_pixels_and_averages_batch():
    args = (zero_eps, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), torch.tensor([0, 0]), two_sample_noise(), ABAR)
    assert noise_prediction_loss(*args, keepdim=True).tolist() == pytest.approx([1.0, 4.0])
    assert noise_prediction_loss(*args).item() == pytest.approx(2.5)
    assert FORGET_LOSSES.get("ga")(*args).item() == pytest.approx(-2.5)


def test_adaptive_gradient_ascent_reweights_by_inverse_loss():
    # gamma = 1: w = [1, 1/4] -> normalised * n = [1.6, 0.4]; loss = -(1.6 * 1 + 0.4 * 4) / 2 = -1.6
    assert adaptive_weights(torch.tensor([1.0, 4.0]), 1.0).tolist() == pytest.approx([1.6, 0.4])
    args = (zero_eps, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), torch.tensor([0, 0]), two_sample_noise(), ABAR)
    assert FORGET_LOSSES.get("adaga")(*args, gamma=1.0).item() == pytest.approx(-1.6)
    # gamma = 0.5: w = [1, 1/2] -> [4/3, 2/3]; loss = -(4/3 + 8/3) / 2 = -2
    assert FORGET_LOSSES.get("adaga")(*args, gamma=0.5).item() == pytest.approx(-2.0)


def test_random_label_loss_value_and_frozen_target():
    w = torch.tensor(1.5, requires_grad=True)

    def eps_fn(x, t, c):  # prediction w * (c + 1): class 0 -> w, class 1 -> 2w
        return w * (c.float() + 1).view(-1, 1, 1, 1).expand_as(x)

    c = torch.zeros(3, dtype=torch.long)
    pseudo = pseudo_labels_for(c, label_to_forget=0, n_classes=10)
    loss = FORGET_LOSSES.get("rl")(eps_fn, torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), c,
                                   torch.zeros(3, 1, 2, 2), ABAR, pseudo)
    assert loss.item() == pytest.approx((1.5 - 3.0) ** 2)
    loss.backward()
    # target 2w is detached: d/dw (w - 3)^2 at w=1.5 is -3 (it would be +3 without the stop-gradient)
    assert w.grad.item() == pytest.approx(-3.0)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_relabelling_never_keeps_the_forget_label(n_classes):
    for k in range(n_classes):
        labels = torch.full((5,), k)
        pseudo = pseudo_labels_for(labels, k, n_classes)
        assert (pseudo != k).all() and ((pseudo >= 0) & (pseudo < n_classes)).all()
    assert pseudo_labels_for(torch.tensor([9]), 9, 10).item() == 0


def test_ewc_penalty_hand_computed():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
    fisher = {"weight": torch.tensor([[2.0, 0.5]])}
    anchor = {"weight": torch.tensor([[0.0, 1.0]])}
    # 2 * 1^2 + 0.5 * 2^2 = 4
    assert ewc_penalty(model, fisher, anchor).item() == pytest.approx(4.0)
    with pytest.raises(ValueError):
        ewc_penalty(model, {"other": torch.ones(1)}, anchor)


def test_guidance_formula():
    def eps_fn(x, t, c):  # class c predicts c everywhere; null label 9
        return c.float().view(-1, 1).expand_as(x)

    x = torch.zeros(2, 3)
    c, null = torch.tensor([1, 2]), torch.tensor([9, 9])
    # (1 + 2) * c - 2 * 9
    assert guided_noise(eps_fn, x, torch.zeros(2), c, null, 2.0)[:, 0].tolist() == [3 - 18, 6 - 18]
    assert guided_noise(eps_fn, x, torch.zeros(2), c, null, 0.0)[:, 0].tolist() == [1, 2]


def test_antithetic_timesteps_pairs():
    torch.manual_seed(0)
    t = antithetic_timesteps(6, 10, torch.device("cpu"))
    assert t.shape == (6,)
    # n // 2 + 1 = 4 draws, then their mirrors T-1-t, truncated to n: t[4:6] mirror t[0:2]
    assert (t[4:6] == 9 - t[0:2]).all()
    assert ((t >= 0) & (t < 10)).all()


def test_beta_schedule_linear_and_errors():
    betas = beta_schedule("linear", 0.1, 0.3, 3)
    assert betas.tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        beta_schedule("cosine-typo", 0.1, 0.2, 3)


def test_ema_update():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, mu=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert ema.state_dict()["weight"].item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)


@pytest.mark.parametrize("name,expected", [
    ("linear", [0.9998999834060669, 0.9997800588607788, 0.9978064894676208, 0.8951413631439209,
                0.07779666036367416, 4.035829988424666e-05]),
    ("quad", [0.9998999834060669, 0.9997973442077637, 0.998749315738678, 0.9711761474609375, 0.3312746286392212,
              0.0007334125693887472]),
])
def test_ddpm_schedule_is_float32_as_the_research_code(name, expected):
    """The DDPM's ``abar`` bit for bit: reference values from the research code's ``get_beta_schedule`` cast
    to float32 (``runners/diffusion.py:87``) and ``(1 - b).cumprod(dim=0)`` (``functions/losses.py:32``),
    CIFAR-10's 1000 steps from 1e-4 to 0.02, at t = 0, 1, 10, 100, 500, 999.  The float64 product (the DiT's
    precision) differs at most of these steps."""
    from types import SimpleNamespace
    from ImageGeneration.DDPM.config import alphas_cumprod
    from ImageGeneration.DiT.dit import dit_alphas_cumprod

    config = SimpleNamespace(diffusion=SimpleNamespace(beta_schedule=name, beta_start=0.0001, beta_end=0.02,
                                                       num_diffusion_timesteps=1000))
    abar = alphas_cumprod(config)
    steps = [0, 1, 10, 100, 500, 999]
    assert abar.dtype == torch.float32 and abar[steps].tolist() == expected
    if name == "linear":
        assert dit_alphas_cumprod()[steps].tolist() != expected  # float64 product, as the DiT research code
