"""Pretrained class-conditional DiT + VAE through diffusers, and the ImageNet-style data it unlearns on.

A checkpoint (``--ckpt``) is a hub id such as ``facebook/DiT-XL-2-256`` or a
local folder with the same layout (``transformer/`` and ``vae/`` written by
``save_pretrained``).  The DiT predicts noise in its first ``C`` output
channels (and, for DiT-XL/2, learned variances in the rest); its class
embedding has ``num_embeds_ada_norm + 1`` rows, the last one being the null
class of classifier-free guidance, and in train mode it drops labels to it
with ``class_dropout_prob`` itself.

Losses are the core simple losses divided by the latent size ``C*H*W``: DiT
averages the squared error over latent elements where the DDPM sums it.
For a DiT that learns its variances the loss adds the research code's
variational term (``DiT/unlearn.py``, ``--vb-loss``).

Sampling (:class:`DiTSampling`) defaults to the research code's: the learned
variances over 250 respaced steps (``learned_range``) and classifier-free
guidance on the first 3 latent channels (its ``forward_with_cfg``).  The VAE
defaults to the research code's ``stabilityai/sd-vae-ft-ema``, read from the
Hugging Face cache (never downloaded here) or given as a folder.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from common.checkpointing import resumable_loader
from common.errors import UsageError, non_negative_float, positive_int
from common.io import refuse_pickled_weights
from ImageGeneration.core.diffusion import NoisePredictor, alphas_cumprod_from_betas, beta_schedule
from ImageGeneration.core.sampling import LEARNED_RANGE, SAMPLE_TYPES, make_scheduler, sample_images

#: DiT's training schedule: 1000 linear steps from 1e-4 to 0.02.
NUM_TIMESTEPS = 1000


def dit_betas(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    scale = 1000 / num_timesteps
    return beta_schedule("linear", scale * 0.0001, scale * 0.02, num_timesteps)


def dit_alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    return alphas_cumprod_from_betas(dit_betas(num_timesteps))


#: ``--vae`` names of the research code: the Stable Diffusion VAEs DiT was trained with (hub repos holding
#: the VAE itself, no ``vae/`` subfolder).  ``ema`` is its default.
VAE_NAMES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
DEFAULT_VAE = "ema"

#: ``--sample-type`` of the DiT scripts: the research code's learned-variance sampler first (its default).
DIT_SAMPLE_TYPES = (LEARNED_RANGE,) + SAMPLE_TYPES
#: Latent channels the research code's ``forward_with_cfg`` guides "for exact reproducibility" (3 of 4).
CFG_CHANNELS = 3


@contextlib.contextmanager
def quiet_diffusers():
    """Diffusers' log lines off for a load: a folder without safetensors makes it log an error and
    "Defaulting to unsafe serialization" (which it is not: it still loads with ``weights_only=True``)
    before the failure that :func:`_load` reports as one line."""
    from diffusers.utils import logging as diffusers_logging
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def _load(cls, ckpt: str, subfolder: Optional[str], flag: str):
    """``cls.from_pretrained`` of ``<ckpt>/<subfolder>``, of ``ckpt`` itself when it holds the model's
    ``config.json`` (or ``subfolder`` is None), or of a hub id's subfolder."""
    local = Path(ckpt)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    if local.exists() and subfolder:
        if (local / "config.json").is_file() and not (local / subfolder).is_dir():
            kwargs = {}
        elif not (local / subfolder).is_dir():
            raise UsageError(f"{flag} {ckpt}: no '{subfolder}/' folder (expected a save_pretrained layout)")
    try:
        with quiet_diffusers():
            return cls.from_pretrained(ckpt, **kwargs)
    except (OSError, ValueError) as err:
        if local.is_dir():
            refuse_pickled_weights(local / kwargs.get("subfolder", ""), flag)
        raise UsageError(f"{flag} {ckpt}: cannot load the {subfolder or 'model'} "
                         f"({' '.join(str(err).split())[:200]})") from None


def add_model_args(parser, transformer_path: bool = False) -> None:
    """``--model``, ``--ckpt`` and ``--vae`` (and ``--transformer-path`` for scripts that load an unlearned
    transformer)."""
    parser.add_argument("--model", type=str, default="DiT-XL/2",
                        help="the research code's model name; the network itself comes from --ckpt")
    parser.add_argument("--ckpt", type=str, default="facebook/DiT-XL-2-256",
                        help="hub id or local folder with transformer/ and vae/")
    if transformer_path:
        parser.add_argument("--transformer-path", type=str, default=None, help="unlearned transformer folder")
    parser.add_argument("--vae", type=str, default=DEFAULT_VAE,
                        help="ema | mse: stabilityai/sd-vae-ft-<name> from the Hugging Face cache, as the research "
                             "code; or a folder holding a save_pretrained AutoencoderKL (or a vae/ subfolder), "
                             "e.g. --ckpt's own")


@dataclass(frozen=True)
class DiTSampling:
    """How a DiT samples: ``sample_type`` (:data:`DIT_SAMPLE_TYPES`), ``num_steps``, DiT's guidance weight
    ``cfg_scale`` (``eps_null + w (eps_c - eps_null)``, 1 disables guidance) on the first ``cfg_channels``
    latent channels, and DDIM's ``eta``.  The defaults are the research code's ``sample.py``."""

    sample_type: str = LEARNED_RANGE
    num_steps: int = 250
    cfg_scale: float = 4.0
    cfg_channels: int = CFG_CHANNELS
    eta: float = 1.0

    @classmethod
    def add_args(cls, parser, cfg_scale: float) -> None:
        """``--cfg-scale`` (the script's research default), ``--num-sampling-steps``, ``--sample-type``,
        ``--cfg-channels`` and ``--eta``."""
        parser.add_argument("--cfg-scale", type=non_negative_float, default=cfg_scale)
        parser.add_argument("--num-sampling-steps", type=positive_int, default=cls.num_steps)
        parser.add_argument("--sample-type", type=str, default=cls.sample_type,
                            help=" | ".join(DIT_SAMPLE_TYPES) + " (learned_range: the research code's sampler, "
                                 "the DiT's learned variances over respaced steps)")
        parser.add_argument("--cfg-channels", type=positive_int, default=cls.cfg_channels,
                            help="guide the first N latent channels (the research code: 3; the latent channel "
                                 "count guides them all)")
        parser.add_argument("--eta", type=non_negative_float, default=cls.eta,
                            help="DDIM eta for --sample-type generalized")

    @classmethod
    def from_args(cls, args) -> "DiTSampling":
        if args.sample_type not in DIT_SAMPLE_TYPES:
            raise UsageError(f"--sample-type {args.sample_type!r}: expected one of {', '.join(DIT_SAMPLE_TYPES)}")
        if args.num_sampling_steps > NUM_TIMESTEPS:
            raise UsageError(f"--num-sampling-steps {args.num_sampling_steps}: expected 1..{NUM_TIMESTEPS}")
        return cls(args.sample_type, args.num_sampling_steps, args.cfg_scale, args.cfg_channels, args.eta)


def load_transformer(ckpt: str, flag: str = "--ckpt") -> DiTTransformer2DModel:
    return _load(DiTTransformer2DModel, ckpt, "transformer", flag)


def load_vae(vae: str = DEFAULT_VAE, flag: str = "--vae") -> AutoencoderKL:
    """The VAE ``--vae`` names: ``ema``/``mse``, the research code's hub VAEs, from the Hugging Face cache only
    (a missing one is a one-line error saying how to supply it); else a folder or hub id (``vae/`` in it)."""
    if vae not in VAE_NAMES:
        return _load(AutoencoderKL, vae, "vae", flag)
    try:
        return AutoencoderKL.from_pretrained(VAE_NAMES[vae], local_files_only=True)
    except (OSError, ValueError):
        raise UsageError(f"{flag} {vae}: {VAE_NAMES[vae]} is not in the Hugging Face cache; download it once "
                         f"(hf download {VAE_NAMES[vae]}) or give {flag} <folder> holding the "
                         f"AutoencoderKL") from None


@dataclass
class LatentDiT:
    """A DiT and the VAE whose latents it denoises."""

    transformer: DiTTransformer2DModel
    vae: AutoencoderKL

    @property
    def num_classes(self) -> int:
        return self.transformer.config.num_embeds_ada_norm

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        size = self.transformer.config.sample_size
        return (self.transformer.config.in_channels, size, size)

    @property
    def image_size(self) -> int:
        return self.transformer.config.sample_size * self.vae_scale

    @property
    def latent_numel(self) -> int:
        return int(np.prod(self.latent_shape))

    @property
    def learns_variance(self) -> bool:
        """Whether the DiT also predicts the reverse variances (``out_channels = 2 C``, as DiT-XL/2)."""
        return self.transformer.config.out_channels == 2 * self.transformer.config.in_channels

    def output_fn(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The DiT's whole output: the noise, then (when it learns them) the variance values."""
        return self.transformer(x_t, timestep=t, class_labels=c).sample

    def eps_fn(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predicted noise: the first ``C`` output channels of the DiT."""
        return self.output_fn(x_t, t, c)[:, : x_t.shape[1]]

    def sampler(self, sampling: DiTSampling) -> Tuple[NoisePredictor, object]:
        """The network function and sampler of ``sampling``: the whole output (noise and variances) for
        ``learned_range``, the noise alone for the diffusers schedulers."""
        if sampling.cfg_channels > self.latent_shape[0]:
            raise UsageError(f"--cfg-channels {sampling.cfg_channels}: expected 1..{self.latent_shape[0]} "
                             f"(the DiT's latent channels)")
        scheduler = make_scheduler(sampling.sample_type, dit_betas(), sampling.num_steps)
        if sampling.sample_type != LEARNED_RANGE:
            return self.eps_fn, scheduler
        if not self.learns_variance:
            raise UsageError(f"--sample-type {LEARNED_RANGE}: this DiT predicts no variances (out_channels "
                             f"{self.transformer.config.out_channels}); use ddpm_noisy or generalized")
        return self.output_fn, scheduler

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` -> scaled latents (a sample of the VAE posterior)."""
        return self.vae.encode(images).latent_dist.sample() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, labels: Sequence[int], sampling: DiTSampling, generator: torch.Generator) -> torch.Tensor:
        """One image in ``[-1, 1]`` per label, all labels in one batch, with the transformer in eval mode."""
        was_training = self.transformer.training
        self.transformer.eval()
        device = next(self.transformer.parameters()).device
        fn, scheduler = self.sampler(sampling)
        latents = sample_images(fn, torch.tensor(list(labels), device=device), self.null_label, self.latent_shape,
                                scheduler, sampling.cfg_scale - 1.0, sampling.eta, generator, sampling.cfg_channels)
        self.transformer.train(was_training)
        return self.decode(latents)

    def to(self, device: torch.device) -> "LatentDiT":
        self.transformer.to(device)
        self.vae.to(device).eval()
        self.vae.requires_grad_(False)
        return self


def load_latent_dit(ckpt: str, device: torch.device, transformer_path: Optional[str] = None,
                    vae: str = DEFAULT_VAE) -> LatentDiT:
    """The DiT of ``--ckpt`` (or an unlearned ``--transformer-path``) with the VAE of ``--vae``."""
    transformer = (load_transformer(transformer_path, "--transformer-path") if transformer_path
                   else load_transformer(ckpt))
    return LatentDiT(transformer, load_vae(vae)).to(device)


def image_transform(image_size: int, flip: bool = True) -> transforms.Compose:
    """Center crop to ``image_size`` (ADM style), random flip, scale to ``[-1, 1]``."""
    steps = [transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
             transforms.CenterCrop(image_size)]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])]
    return transforms.Compose(steps)


def forget_remain_loaders(data_path: str, forget_class: int, image_size: int, batch_size: int,
                          num_workers: int, seed: int, num_classes: int) -> Tuple[DataLoader, DataLoader]:
    """Shuffled loaders of the forget class and of every other class of an ImageFolder tree:
    ``<data-path>/train/`` when there is one (the ImageNet root the research code takes), else
    ``<data-path>`` itself.  Both come from :func:`~common.checkpointing.resumable_loader`, so
    unlearning can resume mid-pass.
    """
    root = Path(data_path)
    if not root.is_dir():
        raise UsageError(f"--data-path {data_path}: folder not found (expected an ImageFolder tree)")
    if (root / "train").is_dir():  # the research code's dataset root: <data-path>/train/<class>/
        root = root / "train"
    try:
        dataset = datasets.ImageFolder(root, transform=image_transform(image_size))
    except (FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"--data-path {data_path}: not an ImageFolder tree ({err})") from None
    if len(dataset.classes) > num_classes:
        raise UsageError(f"--data-path {data_path}: {len(dataset.classes)} class folders, the DiT knows "
                         f"{num_classes} classes")
    targets = np.asarray(dataset.targets)
    forget_idx = np.flatnonzero(targets == forget_class)
    remain_idx = np.flatnonzero(targets != forget_class)
    if len(forget_idx) == 0:
        raise UsageError(f"--forget-class {forget_class}: --data-path {data_path} has no image of this class")
    if len(remain_idx) == 0:
        raise UsageError(f"--data-path {data_path}: no image outside the forget class")

    def loader(indices, offset):
        subset = Subset(dataset, indices.tolist())
        return resumable_loader(subset, min(batch_size, len(subset)), seed + offset, num_workers=num_workers)

    return loader(forget_idx, 0), loader(remain_idx, 1)


def check_forget_class(forget_class: int, num_classes: int) -> int:
    if not 0 <= forget_class < num_classes:
        raise UsageError(f"--forget-class {forget_class}: expected a class in [0, {num_classes - 1}]")
    return forget_class
