"""Class-conditional sampling with classifier-free guidance and diffusers schedulers.

``generalized`` is DDIM (Song et al.) with ``eta`` (``eta = 1`` is the research
code's default, DDPM-like noise on a strided schedule); ``ddpm_noisy`` is
ancestral DDPM sampling with the fixed-large variance.  Both use
``timesteps`` evenly strided steps over the training schedule
(``range(0, T, T // timesteps)``, the research code's ``uniform`` skip).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm import tqdm

from ImageGeneration.core.diffusion import NoisePredictor, guided_noise

SAMPLE_TYPES = ("generalized", "ddpm_noisy")


def make_scheduler(sample_type: str, betas: torch.Tensor, timesteps: int):
    """A diffusers scheduler over the given training ``betas``, set to ``timesteps`` sampling steps."""
    num_train = betas.shape[0]
    if not 1 <= timesteps <= num_train:
        raise ValueError(f"timesteps must be in [1, {num_train}], got {timesteps}")
    common = dict(num_train_timesteps=num_train, trained_betas=betas.double().numpy(), clip_sample=False,
                  timestep_spacing="leading")
    if sample_type == "generalized":
        scheduler = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    elif sample_type == "ddpm_noisy":
        scheduler = DDPMScheduler(variance_type="fixed_large", **common)
    else:
        raise ValueError(f"unknown sample type {sample_type!r}; expected one of {', '.join(SAMPLE_TYPES)}")
    scheduler.set_timesteps(timesteps)
    return scheduler


@torch.no_grad()
def sample_images(eps_fn: NoisePredictor, labels: torch.Tensor, null_label: int, shape: Tuple[int, ...],
                  scheduler, cond_scale: float, eta: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Denoise Gaussian noise into one sample per label; returns model-space tensors.

    Noise is drawn from ``generator`` on the CPU, so a seed gives the same
    samples on every device.
    """
    device = labels.device
    x = torch.randn((labels.shape[0], *shape), generator=generator).to(device)
    null = torch.full_like(labels, null_label)
    for t in scheduler.timesteps:
        t_batch = torch.full((labels.shape[0],), int(t), dtype=torch.long, device=device)
        eps = guided_noise(eps_fn, x, t_batch, labels, null, cond_scale)
        kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
        x = scheduler.step(eps, int(t), x, generator=generator, **kwargs).prev_sample
    return x


def batched_labels(classes: Sequence[int], n_per_class: int, batch_size: int) -> Iterator[Tuple[int, int]]:
    """``(class, batch length)`` pairs covering ``n_per_class`` samples of each class."""
    for label in classes:
        left = n_per_class
        while left > 0:
            n = min(batch_size, left)
            yield label, n
            left -= n


def generate(eps_fn: NoisePredictor, classes: Sequence[int], n_per_class: int, batch_size: int,
             null_label: int, shape: Tuple[int, ...], scheduler, cond_scale: float, eta: float,
             device: torch.device, generator: torch.Generator,
             decode: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
             on_batch: Callable[[int, torch.Tensor], None] = lambda label, images: None) -> int:
    """Sample ``n_per_class`` images of every class in batches, with a progress bar.

    ``decode`` maps samples to images in ``[-1, 1]`` (identity for pixel
    diffusion, the VAE decoder for latent diffusion); ``on_batch(label,
    images)`` consumes each batch (e.g. writes PNGs).  Returns the count.
    """
    jobs = list(batched_labels(classes, n_per_class, batch_size))
    total = 0
    for label, n in tqdm(jobs, desc="sampling", dynamic_ncols=True):
        labels = torch.full((n,), label, dtype=torch.long, device=device)
        images = decode(sample_images(eps_fn, labels, null_label, shape, scheduler, cond_scale, eta, generator))
        on_batch(label, images)
        total += n
    return total
