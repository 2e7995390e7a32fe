"""Class unlearning for a pretrained class-conditional DiT (ImageNet 256, latent diffusion)."""
