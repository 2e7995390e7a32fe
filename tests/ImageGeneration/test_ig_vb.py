"""The learned-variance bound (DiT's ``mse + vb`` loss) against hand-computed values."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import norm

from common.errors import UsageError
from ImageGeneration.core.diffusion import (
    alphas_cumprod_from_betas, learned_variance_vb, noise_prediction_loss, q_sample)
from ImageGeneration.DiT.unlearn import resolve_vb

BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)


def posterior_variance(t: int) -> float:
    abar = torch.cumprod(1 - BETAS, 0)
    return float(BETAS[t] * (1 - abar[t - 1]) / (1 - abar[t]))


def setup(t_value: int, n: int = 3):
    torch.manual_seed(0)
    x0 = torch.rand(n, 2, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.full((n,), t_value, dtype=torch.long)
    return x0, noise, t, q_sample(x0, t, noise, alphas_cumprod_from_betas(BETAS))


def test_kl_is_zero_for_the_true_noise_and_posterior_variance():
    x0, noise, t, x_t = setup(500)
    vb = learned_variance_vb(x0, x_t, t, noise, -torch.ones_like(x0), BETAS)  # frac 0: posterior variance
    assert vb.shape == (3,)
    assert torch.allclose(vb, torch.zeros(3), atol=1e-4)


def test_kl_with_the_beta_variance_matches_the_closed_form():
    x0, noise, t, x_t = setup(1)  # early, where beta_t and the posterior variance differ most
    vb = learned_variance_vb(x0, x_t, t, noise, torch.ones_like(x0), BETAS)  # frac 1: variance beta_t
    var_q, var_p = posterior_variance(1), float(BETAS[1])
    expected = 0.5 * (-1 + math.log(var_p / var_q) + var_q / var_p) / math.log(2)
    assert vb == pytest.approx(torch.full((3,), expected), rel=1e-3)


def test_decoder_nll_at_t0_is_the_mass_of_the_pixel_bin():
    x0 = torch.zeros(1, 1, 2, 2)
    t = torch.zeros(1, dtype=torch.long)
    # x_t = x0 and eps = 0 put the model mean at 0; frac 0 gives the clipped variance (posterior at t=1).
    vb = learned_variance_vb(x0, x0, t, torch.zeros_like(x0), -torch.ones_like(x0), BETAS)
    sigma = math.sqrt(posterior_variance(1))
    mass = norm.cdf(1 / 255 / sigma) - norm.cdf(-1 / 255 / sigma)
    assert float(vb) == pytest.approx(-math.log(mass) / math.log(2), rel=1e-3)


def test_loss_adds_vb_times_elements_and_trains_only_the_variance_through_it():
    x0, noise, t, _ = setup(200)
    var_values = torch.zeros_like(x0, requires_grad=True)
    eps = noise.clone().requires_grad_(True)

    def output_fn(x_t, t_, c):
        return torch.cat([eps, var_values], dim=1)

    abar = alphas_cumprod_from_betas(BETAS)
    per_sample = noise_prediction_loss(output_fn, x0, t, None, noise, abar, keepdim=True, variance_betas=BETAS)
    x_t = q_sample(x0, t, noise, abar)
    expected = x0[0].numel() * learned_variance_vb(x0, x_t, t, noise, torch.zeros_like(x0), BETAS)
    assert torch.allclose(per_sample, expected)  # the squared error is 0: eps is the true noise
    per_sample.sum().backward()
    assert float(eps.grad.abs().max()) == 0.0  # the bound sees a detached mean
    assert float(var_values.grad.abs().max()) > 0.0


def test_vb_flag_defaults_to_the_model_and_refuses_a_fixed_variance_dit():
    learns, fixed = SimpleNamespace(learns_variance=True), SimpleNamespace(learns_variance=False)
    assert resolve_vb(None, learns) is True and resolve_vb(False, learns) is False
    assert resolve_vb(None, fixed) is False
    with pytest.raises(UsageError, match="--vb-loss"):
        resolve_vb(True, fixed)
