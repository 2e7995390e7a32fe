"""Class-conditional sampling with classifier-free guidance, and its split over processes.

``generalized`` is DDIM (Song et al.) with ``eta`` (``eta = 1`` is the research
code's default, DDPM-like noise on a strided schedule); ``ddpm_noisy`` is
ancestral DDPM sampling with the fixed-large variance.  Both are diffusers
schedulers over ``timesteps`` evenly strided steps of the training schedule
(``range(0, T, T // timesteps)``, the DDPM research code's ``uniform`` skip).

``learned_range`` is the DiT research code's sampler (``diffusion/respace.py``,
``gaussian_diffusion.py``): ancestral sampling over :func:`space_timesteps`
respaced steps, the reverse variance interpolated by the model's second half of
output channels (:class:`RespacedDiffusion`).

:class:`ProcessShare` is ``sample_ddp.py``'s split of ``N`` samples over the
processes of a launch (seeds, file indices), :func:`pack_npz` the ``.npz`` the
ADM evaluator reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image

from common.io import atomic_path
from common.progress import progress
from ImageGeneration.core.diffusion import GaussianPosterior, NoisePredictor, guided_noise
from ImageGeneration.core.images import save_png, to_uint8_images

SAMPLE_TYPES = ("generalized", "ddpm_noisy")
#: The sampler of a model that predicts its reverse variances.
LEARNED_RANGE = "learned_range"


def space_timesteps(num_timesteps: int, count: int) -> List[int]:
    """``count`` of the ``num_timesteps`` training steps, evenly spread from the first to the last.

    The research code's ``space_timesteps(T, str(count))``: a fractional stride
    ``(T - 1) / (count - 1)`` accumulated in floating point and rounded (Python's
    half-to-even ``round``).  250 of 1000 are ``0, 4, ..., 497, 502, ..., 995, 999`` (a stride of
    4.012), not diffusers' ``leading`` spacing ``0, 4, ..., 996``.
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot take {count} of {num_timesteps} steps")
    stride = 1.0 if count == 1 else (num_timesteps - 1) / (count - 1)
    steps, position = [], 0.0
    for _ in range(count):
        steps.append(round(position))
        position += stride
    return steps


class RespacedDiffusion:
    """Ancestral sampling with a learned-range variance over respaced steps (the DiT research code's
    ``SpacedDiffusion.p_sample`` with ``LEARNED_RANGE`` variances, ``clip_denoised=False``).

    The respaced process keeps the training ``abar`` at the kept steps ``t_0 < ... < t_{K-1}``:
    its betas are ``1 - abar_{t_i} / abar_{t_{i-1}}`` (``abar_{t_{-1}} = 1``), and its posterior,
    means and variances are those of :class:`~ImageGeneration.core.diffusion.GaussianPosterior`
    over these betas.  The model sees the original timestep ``t_i``.  ``timesteps`` runs from the
    noisiest step down, as a diffusers scheduler's.
    """

    def __init__(self, betas: torch.Tensor, count: int) -> None:
        kept = space_timesteps(betas.shape[0], count)
        abar = torch.cumprod(1.0 - betas.double(), dim=0)[kept]
        self.posterior = GaussianPosterior(1.0 - abar / torch.cat([abar.new_ones(1), abar[:-1]]))
        self.timesteps = torch.tensor(kept[::-1])
        self._index = {t: i for i, t in enumerate(kept)}

    def mean_log_variance(self, output: torch.Tensor, t: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``p(x_{t-1} | x_t)`` of the model ``output`` (noise in its first ``C`` channels, variance
        values in the next ``C``) at original step ``t``: mean and log-variance, as ``p_mean_variance``."""
        i = torch.full((x.shape[0],), self._index[t], dtype=torch.long, device=x.device)
        eps, var_values = output.split(x.shape[1], dim=1)
        mean = self.posterior.mean(self.posterior.x0_from_eps(x, i, eps), x, i)
        return mean, self.posterior.learned_log_variance(var_values, i)

    def step(self, output: torch.Tensor, t: int, x: torch.Tensor, generator: Optional[torch.Generator],
             noise_batch: int) -> torch.Tensor:
        """One reverse step; the noise is the first ``len(x)`` of ``noise_batch`` normal draws (the
        research code draws noise for the null-class half of a guided batch too, so a seed gives its
        stream), and none is added at the last step."""
        mean, log_variance = self.mean_log_variance(output, t, x)
        noise = torch.randn((noise_batch, *x.shape[1:]), generator=generator)[: x.shape[0]].to(x.device)
        return mean if self._index[t] == 0 else mean + torch.exp(0.5 * log_variance) * noise


def make_scheduler(sample_type: str, betas: torch.Tensor, timesteps: int):
    """A sampler over the given training ``betas`` with ``timesteps`` sampling steps: a diffusers
    scheduler, or :class:`RespacedDiffusion` for ``learned_range``."""
    num_train = betas.shape[0]
    if not 1 <= timesteps <= num_train:
        raise ValueError(f"timesteps must be in [1, {num_train}], got {timesteps}")
    if sample_type == LEARNED_RANGE:
        return RespacedDiffusion(betas, timesteps)
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
                  generator: Optional[torch.Generator] = None, guided_channels: Optional[int] = None) -> torch.Tensor:
    """Denoise Gaussian noise into one sample per label; returns model-space tensors.

    Noise is drawn from ``generator`` on the CPU, so a seed gives the same
    samples on every device.  For a :class:`RespacedDiffusion` ``eps_fn`` returns
    the noise and the variance values; ``guided_channels`` as in
    :func:`~ImageGeneration.core.diffusion.guided_noise`.
    """
    device, n = labels.device, labels.shape[0]
    x = torch.randn((n, *shape), generator=generator).to(device)
    null = torch.full_like(labels, null_label)
    for t in scheduler.timesteps:
        t_batch = torch.full((n,), int(t), dtype=torch.long, device=device)
        eps = guided_noise(eps_fn, x, t_batch, labels, null, cond_scale, guided_channels)
        if isinstance(scheduler, RespacedDiffusion):
            x = scheduler.step(eps, int(t), x, generator, noise_batch=2 * n if cond_scale != 0 else n)
            continue
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
             on_batch: Callable[[int, torch.Tensor], None] = lambda label, images: None,
             guided_channels: Optional[int] = None) -> int:
    """Sample ``n_per_class`` images of every class in batches, with a progress bar.

    ``decode`` maps samples to images in ``[-1, 1]`` (identity for pixel
    diffusion, the VAE decoder for latent diffusion); ``on_batch(label,
    images)`` consumes each batch (e.g. writes PNGs).  Returns the count.
    """
    jobs = list(batched_labels(classes, n_per_class, batch_size))
    total = 0
    for label, n in progress(jobs, desc="sampling", dynamic_ncols=True):
        labels = torch.full((n,), label, dtype=torch.long, device=device)
        images = decode(sample_images(eps_fn, labels, null_label, shape, scheduler, cond_scale, eta, generator,
                                      guided_channels))
        on_batch(label, images)
        total += n
    return total


@dataclass(frozen=True)
class ProcessShare:
    """One process's share of ``num_samples`` images, sampled ``per_proc_batch`` at a time by each of
    ``world`` processes, as the DiT research code's ``sample_ddp.py`` splits them.

    The count is rounded up to whole global batches (``world * per_proc_batch``; the extra
    images are written and left out of the ``.npz``).  In round ``r`` process ``rank`` writes
    images ``r * world * per_proc_batch + i * world + rank`` (``i < per_proc_batch``), so the
    processes interleave and together write every index once; process ``rank`` draws from the
    seed ``global_seed * world + rank``.
    """

    num_samples: int
    per_proc_batch: int
    world: int = 1
    rank: int = 0

    @property
    def global_batch(self) -> int:
        return self.per_proc_batch * self.world

    @property
    def total(self) -> int:
        """Images sampled by all processes together: ``num_samples`` rounded up to global batches."""
        return math.ceil(self.num_samples / self.global_batch) * self.global_batch

    @property
    def rounds(self) -> int:
        return self.total // self.global_batch

    def seed(self, global_seed: int) -> int:
        return global_seed * self.world + self.rank

    def indices(self, round_: int) -> List[int]:
        """The file indices of this process's batch in round ``round_``."""
        return [round_ * self.global_batch + i * self.world + self.rank for i in range(self.per_proc_batch)]


def draw_labels(n: int, num_classes: int, generator: torch.Generator, only_class: int = -1,
                exclude_class: int = -1) -> torch.Tensor:
    """``sample_ddp.py``'s labels: ``only_class`` for all when ``>= 0``, else uniform classes with every
    draw of ``exclude_class`` (when ``>= 0``) redrawn until none is left."""
    if only_class >= 0:
        return torch.full((n,), only_class, dtype=torch.long)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    while exclude_class >= 0 and bool((excluded := labels == exclude_class).any()):
        labels[excluded] = torch.randint(0, num_classes, (int(excluded.sum()),), generator=generator)
    return labels


def indexed_png(folder: Path, index: int) -> Path:
    """``<folder>/<index:06d>.png``, the research code's FID sample name."""
    return folder / f"{index:06d}.png"


def pack_npz(folder: Path, num: int) -> Path:
    """``<folder>.npz`` holding ``arr_0``, the first ``num`` indexed PNGs as uint8 ``(num, H, W, 3)``: the
    file the ADM evaluator reads (the research code's ``create_npz_from_sample_folder``)."""
    samples = []
    for index in range(num):
        with Image.open(indexed_png(folder, index)) as image:
            samples.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    path = folder.parent / f"{folder.name}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, arr_0=np.stack(samples))
    return path


def sample_share(share: ProcessShare, draw: Callable[[int], torch.Tensor],
                 sample_batch: Callable[[torch.Tensor], torch.Tensor], folder: Path, show_progress: bool = True) -> int:
    """This process's rounds of ``share``: ``draw(n)`` labels, ``sample_batch(labels)`` images in ``[-1, 1]``,
    written as :func:`indexed_png` under their :meth:`ProcessShare.indices`; returns the count written."""
    written = 0
    for round_ in progress(range(share.rounds), desc="sampling", dynamic_ncols=True, disable=not show_progress):
        images = to_uint8_images(sample_batch(draw(share.per_proc_batch)))
        for index, image in zip(share.indices(round_), images, strict=True):
            save_png(image, indexed_png(folder, index))
        written += len(images)
    return written
