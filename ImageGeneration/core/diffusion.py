"""Diffusion training objectives and the unlearning losses built on them.

Every loss here takes a *noise predictor* ``eps_fn(x_t, t, c) -> eps_hat``
instead of a network, so the same code serves the pixel-space DDPM (a
``UNet2DModel`` with class embeddings) and the latent DiT (whose output also
carries learned variances): each pipeline wraps its network once.

Notation (Ho et al., 2020): ``abar_t`` is the cumulative product of
``1 - beta``, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and the simple
loss of one sample is ``sum_{c,h,w} (eps - eps_hat)^2`` (summed over pixels,
averaged over the batch, as the research code does).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import torch
from torch import nn

from dualoptim.registry import Registry

NoisePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

BETA_SCHEDULES = ("linear", "quad", "const", "jsd", "sigmoid")


def beta_schedule(name: str, beta_start: float, beta_end: float, num_timesteps: int) -> torch.Tensor:
    """The noise schedule ``beta_1..beta_T`` of the DDIM/DDPM configs, as float64."""
    if name == "linear":
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    elif name == "quad":
        betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=np.float64) ** 2
    elif name == "const":
        betas = np.full(num_timesteps, beta_end, dtype=np.float64)
    elif name == "jsd":  # 1/T, 1/(T-1), ..., 1
        betas = 1.0 / np.linspace(num_timesteps, 1, num_timesteps, dtype=np.float64)
    elif name == "sigmoid":
        betas = 1.0 / (1.0 + np.exp(-np.linspace(-6, 6, num_timesteps))) * (beta_end - beta_start) + beta_start
    else:
        raise ValueError(f"unknown beta schedule {name!r}; expected one of {', '.join(BETA_SCHEDULES)}")
    return torch.from_numpy(betas)


def alphas_cumprod_from_betas(betas: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)`` as float32, the betas cast to ``dtype`` and the product taken in it.

    Each research code's own precision: the DiT's ``gaussian_diffusion.py`` keeps its schedule in
    float64 NumPy arrays (the default here); the DDPM's casts the betas to float32 first
    (``runners/diffusion.py:87``) and takes ``(1 - b).cumprod()`` in float32 (``functions/losses.py:13,32``),
    which differs from the float64 product by up to a few float32 ulps at large ``t``.
    """
    return torch.cumprod(1.0 - betas.to(dtype), dim=0).float()


def antithetic_timesteps(n: int, num_timesteps: int, device: torch.device,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` timesteps drawn in antithetic pairs ``(t, T-1-t)``, lowering the loss variance."""
    half = torch.randint(0, num_timesteps, (n // 2 + 1,), generator=generator).to(device)
    return torch.cat([half, num_timesteps - half - 1])[:n]


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``."""
    a = alphas_cumprod.to(x0.device).index_select(0, t).view(-1, *([1] * (x0.dim() - 1)))
    return x0 * a.sqrt() + noise * (1.0 - a).sqrt()


def per_sample_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(dim=1)


def noise_prediction_loss(eps_fn: NoisePredictor, x0: torch.Tensor, t: torch.Tensor, c: torch.Tensor,
                          noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                          keepdim: bool = False, variance_betas: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Simple diffusion loss ``sum (eps - eps_hat(x_t, t, c))^2``; per sample with ``keepdim``.

    With ``variance_betas`` (the training betas) ``eps_fn`` returns the noise in its first ``C``
    channels and the learned-variance interpolation values in the next ``C``; the loss then adds
    the variational bound of those variances, :func:`learned_variance_vb` (bits per dimension,
    times the sample's element count so that the element mean is ``mse + vb``, as the DiT
    research code's ``training_losses`` with ``learn_sigma``).
    """
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    output = eps_fn(x_t, t, c)
    channels = x0.shape[1]
    per_sample = per_sample_sum((noise - output[:, :channels]).square())
    if variance_betas is not None:
        vb = learned_variance_vb(x0, x_t, t, output[:, :channels].detach(), output[:, channels:], variance_betas)
        per_sample = per_sample + x0[0].numel() * vb
    return per_sample if keepdim else per_sample.mean()


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` (a float64 schedule) as ``like``'s dtype, broadcastable over its sample dims."""
    return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise ``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).square() * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of data in ``[-1, 1]`` quantised to 256 levels under ``N(mean, e^{2 log_scale})``.

    Each level is a bin of width ``2/255``; the outermost bins extend to infinity.  The normal
    CDF uses the tanh approximation of Ho et al.'s code, so the values match it.
    """
    def cdf(v):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v.pow(3))))

    centered, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv_std * (centered + 1.0 / 255.0)), cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianPosterior:
    """The posterior ``q(x_{t-1} | x_t, x_0)`` of a beta schedule and the reverse step built on it, in float64.

    ``abar_{-1} = 1``; the posterior variance ``beta_t (1 - abar_{t-1}) / (1 - abar_t)`` is 0 at
    ``t = 0``, so its log is clipped to the value at ``t = 1`` (Nichol & Dhariwal, 2021).  The
    ``*_at`` methods index a batch of steps ``t`` and broadcast over ``like``'s sample dims in its
    dtype, as the research code's ``_extract_into_tensor`` does (float64 -> float32).
    """

    def __init__(self, betas: torch.Tensor) -> None:
        self.betas = betas.double()
        abar = torch.cumprod(1.0 - self.betas, dim=0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        posterior_var = self.betas * (1.0 - abar_prev) / (1.0 - abar)
        self.log_betas = torch.log(self.betas)
        self.log_posterior_var = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]]))
        self.coef_x0 = self.betas * abar_prev.sqrt() / (1.0 - abar)
        self.coef_xt = (1.0 - abar_prev) * (1.0 - self.betas).sqrt() / (1.0 - abar)
        self.recip_sqrt_abar = (1.0 / abar).sqrt()
        self.recipm1_sqrt_abar = (1.0 / abar - 1.0).sqrt()

    def mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``coef_x0 x_0 + coef_xt x_t``."""
        return _at(self.coef_x0, t, x_t) * x0 + _at(self.coef_xt, t, x_t) * x_t

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x_0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps``."""
        return _at(self.recip_sqrt_abar, t, x_t) * x_t - _at(self.recipm1_sqrt_abar, t, x_t) * eps

    def learned_log_variance(self, var_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The learned-range reverse log-variance: ``frac log beta_t + (1 - frac) log beta~_t`` with
        ``frac = (v + 1) / 2`` (the model's values ``v`` in ``[-1, 1]`` span the two variances)."""
        frac = (var_values + 1.0) / 2.0
        return frac * _at(self.log_betas, t, var_values) + (1.0 - frac) * _at(self.log_posterior_var, t, var_values)


def learned_variance_vb(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                        var_values: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """Per-sample variational-bound term of a learned reverse variance, in bits per dimension.

    The reverse step's log-variance is :meth:`GaussianPosterior.learned_log_variance`; its mean
    comes from the given (detached) ``eps``, so only the variance learns from this term.
    ``t > 0``: the KL to the true posterior ``q(x_{t-1} | x_t, x_0)``; ``t = 0``: the decoder's
    negative log-likelihood of ``x0``.
    """
    posterior = GaussianPosterior(betas)
    true_mean = posterior.mean(x0, x_t, t)
    true_logvar = _at(posterior.log_posterior_var, t, x_t)
    model_mean = posterior.mean(posterior.x0_from_eps(x_t, t, eps), x_t, t)
    model_logvar = posterior.learned_log_variance(var_values, t)

    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).mean(dim=1) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar).flatten(1).mean(dim=1)
    return torch.where(t == 0, nll / math.log(2.0), kl)


def adaptive_weights(per_sample_loss: torch.Tensor, gamma: float) -> torch.Tensor:
    """SFR-on's adaptive coefficients ``n * w_i / sum_j w_j`` with ``w_i = 1 / (l_i^gamma + 1e-8)``.

    Samples the model already denoises badly (high loss, already forgotten)
    get small weights, so gradient ascent concentrates on what is still
    remembered.  The weights are constants (computed from detached losses).
    """
    coef = 1.0 / (per_sample_loss.detach().pow(gamma) + 1e-8)
    return coef / coef.sum() * per_sample_loss.shape[0]


def random_label_loss(eps_fn: NoisePredictor, x0: torch.Tensor, t: torch.Tensor, c: torch.Tensor,
                      noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                      pseudo_labels: torch.Tensor) -> torch.Tensor:
    """SalUn's random-label loss: match the prediction for ``c`` to the (frozen) one for another class.

    ``mean (eps_hat(x_t, t, c) - sg[eps_hat(x_t, t, c')])^2`` with ``c'`` the
    pseudo label; the mean runs over every element, as ``nn.MSELoss`` does.
    """
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    output = eps_fn(x_t, t, c)
    with torch.no_grad():
        target = eps_fn(x_t, t, pseudo_labels)
    return (output - target).square().mean()


def pseudo_labels_for(labels: torch.Tensor, label_to_forget: int, n_classes: int) -> torch.Tensor:
    """The relabelling of the research code: every forget sample gets ``(k + 1) mod n_classes``.

    The original hard-codes ``mod 10`` (CIFAR-10); with ``n_classes = 10`` this is identical.
    The result never equals ``label_to_forget`` when ``n_classes > 1``.
    """
    return torch.full_like(labels, (label_to_forget + 1) % n_classes)


#: ``--unlearn_loss`` -> forget objective to *minimise*.
#: Signature: ``(eps_fn, x0, t, c, noise, alphas_cumprod, pseudo_labels, gamma) -> scalar``.
FORGET_LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("--unlearn_loss")


@FORGET_LOSSES.register("ga")
def gradient_ascent_loss(eps_fn, x0, t, c, noise, alphas_cumprod, pseudo_labels=None, gamma=1.0,
                         variance_betas=None):
    """Gradient ascent: the negated diffusion loss of the forget samples."""
    return -noise_prediction_loss(eps_fn, x0, t, c, noise, alphas_cumprod, variance_betas=variance_betas)


@FORGET_LOSSES.register("adaga")
def adaptive_gradient_ascent_loss(eps_fn, x0, t, c, noise, alphas_cumprod, pseudo_labels=None, gamma=1.0,
                                  variance_betas=None):
    """SFR-on's adaptive gradient ascent: the negated, re-weighted diffusion loss."""
    per_sample = noise_prediction_loss(eps_fn, x0, t, c, noise, alphas_cumprod, keepdim=True,
                                       variance_betas=variance_betas)
    return -(adaptive_weights(per_sample, gamma) * per_sample).mean()


@FORGET_LOSSES.register("rl")
def relabel_loss(eps_fn, x0, t, c, noise, alphas_cumprod, pseudo_labels=None, gamma=1.0):
    """SalUn's random-label loss (see :func:`random_label_loss`)."""
    if pseudo_labels is None:
        raise ValueError("the 'rl' loss needs pseudo labels")
    return random_label_loss(eps_fn, x0, t, c, noise, alphas_cumprod, pseudo_labels)


def ewc_penalty(model: nn.Module, fisher: Mapping[str, torch.Tensor],
                anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Selective Amnesia's EWC term ``sum_i F_i (theta_i - theta*_i)^2`` over the Fisher's parameters."""
    total = None
    for name, param in model.named_parameters():
        if name in fisher:
            term = (fisher[name] * (param - anchor[name]).square()).sum()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("the Fisher dictionary shares no parameter name with the model")
    return total


class EMA:
    """Exponential moving average of a model's parameters (the research code's ``EMAHelper``).

    ``shadow <- mu * shadow + (1 - mu) * param`` after every optimizer step;
    :meth:`state_dict` has the model's parameter names, so EMA weights load
    straight into a copy of the model.
    """

    def __init__(self, model: nn.Module, mu: float, state: Optional[Dict[str, torch.Tensor]] = None) -> None:
        self.mu = mu
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        if state is not None:
            for name, value in state.items():
                if name in self.shadow:
                    self.shadow[name].copy_(value)

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore every shadow weight (a resume snapshot's EMA); the names must match exactly."""
        if set(state) != set(self.shadow):
            raise KeyError(f"EMA state has {len(state)} weights, this model {len(self.shadow)}")
        for name, value in state.items():
            self.shadow[name].copy_(value)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.mu).add_(p.detach(), alpha=1.0 - self.mu)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.shadow.items()}


def guided_noise(eps_fn: NoisePredictor, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor,
                 null_labels: torch.Tensor, cond_scale: float, channels: Optional[int] = None) -> torch.Tensor:
    """Classifier-free guidance as the research code defines it: ``(1 + s) eps_c - s eps_null``.

    ``s = 0`` is the plain conditional prediction.  The conditional and
    unconditional passes run as one batch.  ``channels``: guide only the first
    ``channels`` output channels and keep the conditional prediction in the rest
    (the DiT research code's ``forward_with_cfg`` guides 3 of the 4 latent noise
    channels and passes the variances through); ``None`` guides every channel.
    """
    if cond_scale == 0:
        return eps_fn(x_t, t, c)
    both = eps_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null_labels]))
    cond, uncond = both.chunk(2)
    guided = (1.0 + cond_scale) * cond - cond_scale * uncond
    if channels is None:
        return guided
    return torch.cat([guided[:, :channels], cond[:, channels:]], dim=1)
