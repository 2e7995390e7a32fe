"""Tiny diffusion models and data built on the fly (no downloads), for the tests and
``benchmarks/gpu_check.py``: a DiT with its VAE in the hub layout over an ImageFolder tree, and
the shipped digits DDPM config shrunk to an 8x8 UNet with an untrained run folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml


def build_tiny_dit(root: Path, num_classes: int = 3) -> Path:
    """A 16x16-pixel, 8x8-latent DiT over ``num_classes`` classes in the hub layout (``ckpt/transformer``,
    ``ckpt/vae``) and an ImageNet-root tree ``data/train/class_<k>/`` of three random 20x20 images per class."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel
    from PIL import Image

    root = Path(root)
    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
                          sample_size=8, patch_size=2, num_embeds_ada_norm=num_classes,
                          norm_num_groups=4).save_pretrained(root / "ckpt" / "transformer")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, layers_per_block=1, sample_size=16).save_pretrained(root / "ckpt" / "vae")
    rng = np.random.default_rng(0)
    for label in range(num_classes):
        folder = root / "data" / "train" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, size=(20, 20, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def write_tiny_ddpm_config(path: Path) -> Path:
    """The shipped digits DDPM config shrunk to an 8x8, 8-channel UNet, 10 diffusion steps and 2 iterations."""
    from ImageGeneration.DDPM.config import default_config_path

    config = yaml.safe_load(default_config_path("digits", "pretrain").read_text())
    config["data"]["image_size"] = 8
    config["model"].update(ch=8, attn_resolutions=[4], norm_num_groups=4)
    config["diffusion"]["num_diffusion_timesteps"] = 10
    config["training"].update(batch_size=16, n_iters=2, snapshot_freq=2, log_freq=1, gamma=0.5, lmbda=10)
    config["sampling"]["batch_size"] = 4
    Path(path).write_text(yaml.safe_dump(config))
    return Path(path)


def write_untrained_ddpm_run(folder: Path, config_path: Path) -> Path:
    """A run folder (``ckpts/ckpt.pth``) of an untrained DDPM of ``config_path`` on all 10 digits."""
    from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, save_checkpoint
    from ImageGeneration.DDPM.config import load_config
    from ImageGeneration.DDPM.networks import build_unet

    config = load_config(config_path, "digits", "pretrain")
    save_checkpoint(Path(folder) / CKPT_RELPATH, build_unet(config.model, config.data), config, list(range(10)),
                    step=0)
    return Path(folder)
