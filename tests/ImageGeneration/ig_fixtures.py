"""Tiny synthetic data and configs of the image-generation tests (no downloads)."""
from __future__ import annotations

import numpy as np

N_CLASSES = 4
IMAGE_SIZE = 8

TINY_CONFIG = {
    "data": {"dataset": "digits", "image_size": IMAGE_SIZE, "channels": 1, "n_classes": N_CLASSES,
             "random_flip": False, "num_workers": 0},
    "model": {"network": "unet2d", "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4],
              "dropout": 0.0, "norm_num_groups": 4, "resamp_with_conv": True, "var_type": "fixedlarge", "ema": True,
              "ema_rate": 0.9, "cond_drop_prob": 0.1},
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.2, "num_diffusion_timesteps": 10},
    "training": {"batch_size": 8, "n_iters": 3, "snapshot_freq": 2, "log_freq": 1, "gamma": 0.5, "lmbda": 10,
                 "visualization_samples": 8},
    "sampling": {"batch_size": 4},
    "optim": {"optimizer": "Adam", "lr": 0.001, "weight_decay": 0.0, "beta1": 0.9, "amsgrad": False,
              "eps": 1.0e-8, "grad_clip": 1.0},
}


def synthetic_arrays(n_per_class: int = 6, seed: int = 0, image_size: int = IMAGE_SIZE):
    """Class ``k`` is a bright horizontal bar in the ``k``-th quarter of the image, on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), n_per_class).astype(np.int64)
    images = rng.integers(0, 40, size=(len(labels), image_size, image_size, 1)).astype(np.uint8)
    band = image_size // N_CLASSES
    for i, label in enumerate(labels):
        images[i, band * label:band * (label + 1), :, 0] = 250
    return images, labels


def fake_load_arrays(dataset, data_path, split, image_size, channels):
    assert channels == 1
    return synthetic_arrays(seed=0 if split == "train" else 1, image_size=image_size)
