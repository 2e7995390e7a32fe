"""The DDPM's YAML configs: reading (``--config`` or the shipped ``configs/<dataset>_<kind>.yml``), the type and
range of every key this toolkit reads, and the diffusion schedule a config sets.

The research code's own YAML files load as they are; ``model.network`` picks the network
(:data:`NETWORKS`, built by :mod:`ImageGeneration.DDPM.networks`).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
import yaml

from common.errors import (Bounded, UsageError, config_value, fraction, non_negative_float, non_negative_int,
                           positive_float, positive_int)
from common.io import PathLike, atomic_write_text, read_yaml
from ImageGeneration.core.diffusion import BETA_SCHEDULES, alphas_cumprod_from_betas, beta_schedule
from ImageGeneration.DDPM.data import DATASETS
from ImageGeneration.DDPM.optimizers import CONFIG_OPTIMIZERS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Sections a config of each kind must have besides ``data``, ``model`` and ``diffusion``.
KIND_SECTIONS = {"pretrain": ("training", "optim"), "sfron": ("training", "optim"),
                 "saliency_unlearn": ("training", "optim"), "sa": ("training", "optim"),
                 "fisher": ("training",), "sample": ("sampling",)}


def to_namespace(tree: Any) -> Any:
    """Nested dicts -> nested ``SimpleNamespace`` (``config.optim.lr``)."""
    if isinstance(tree, dict):
        return SimpleNamespace(**{k: to_namespace(v) for k, v in tree.items()})
    return tree


def to_dict(tree: Any) -> Any:
    if isinstance(tree, SimpleNamespace):
        return {k: to_dict(v) for k, v in vars(tree).items()}
    return tree


def default_config_path(dataset: str, kind: str) -> Path:
    """``configs/<dataset>_<kind>.yml`` (``kind``: pretrain, sfron, saliency_unlearn, sa, fisher, sample)."""
    return CONFIG_DIR / f"{dataset}_{kind}.yml"


#: ``model.network`` values: the research code's ``Conditional_Model`` and diffusers' ``UNet2DModel``.
NETWORKS = ("conditional_model", "unet2d")
#: Keys this toolkit reads that the research code's configs leave out, with the value its network implies.
CONFIG_DEFAULTS = {"model": {"network": "conditional_model", "norm_num_groups": 32, "resamp_with_conv": True},
                   "training": {"visualization_samples": 100}}
#: The type and range of every key this toolkit reads, with the argparse types its flags use
#: (``--lr``: ``positive_float``, ``--grad-clip``: ``non_negative_float``, ...): ``(type, choices)``;
#: a list-valued key is ``[type]``.  Other keys of the research code's files are kept and ignored.
UNIT_INTERVAL = Bounded(float, 0, 1, high_open=True)
CONFIG_TYPES: Dict[str, Dict[str, Any]] = {
    "data": {"dataset": (str, None), "image_size": (positive_int, None), "channels": (positive_int, None),
             "n_classes": (positive_int, None), "random_flip": (bool, None), "num_workers": (non_negative_int, None),
             "rescaled": (bool, None), "logit_transform": (bool, None)},
    "model": {"network": (str, NETWORKS), "ch": (positive_int, None), "ch_mult": ([positive_int], None),
              "num_res_blocks": (positive_int, None), "attn_resolutions": ([positive_int], None),
              "dropout": (UNIT_INTERVAL, None), "norm_num_groups": (positive_int, None),
              "resamp_with_conv": (bool, None), "var_type": (str, None), "ema": (bool, None),
              "ema_rate": (fraction, None), "cond_drop_prob": (UNIT_INTERVAL, None)},
    "diffusion": {"beta_schedule": (str, BETA_SCHEDULES), "beta_start": (positive_float, None),
                  "beta_end": (positive_float, None), "num_diffusion_timesteps": (positive_int, None)},
    "training": {"batch_size": (positive_int, None), "n_iters": (positive_int, None),
                 "snapshot_freq": (positive_int, None), "log_freq": (positive_int, None),
                 "gamma": (positive_float, None), "visualization_samples": (non_negative_int, None),
                 "lmbda": (non_negative_float, None)},
    "sampling": {"batch_size": (positive_int, None)},
    "optim": {"optimizer": (str, tuple(CONFIG_OPTIMIZERS)), "lr": (positive_float, None),
              "weight_decay": (non_negative_float, None), "beta1": (UNIT_INTERVAL, None), "amsgrad": (bool, None),
              "eps": (positive_float, None), "grad_clip": (non_negative_float, None)},
}


def check_config_types(tree: Dict[str, Any], path: PathLike) -> None:
    """Hold every known key of a config to its type and range (:data:`CONFIG_TYPES`), converting in place
    (``lr: 1e-4``, which YAML reads as a string, becomes a float), with one-line errors
    ``--config FILE: optim.lr: expected a number > 0, got [1, 2]``; booleans must be YAML booleans."""
    for section, keys in CONFIG_TYPES.items():
        values = tree.get(section)
        if not isinstance(values, dict):
            continue
        for key, (kind, choices) in keys.items():
            if key in values:
                many = isinstance(kind, list)
                values[key] = config_value(values[key], kind[0] if many else kind, f"--config {path}: {section}.{key}",
                                           choices, many=many)


def load_config(path: Optional[PathLike], dataset: Optional[str], kind: str) -> SimpleNamespace:
    """Read ``--config`` (a path, or a file name inside the package's ``configs/``) or the default.

    The research code's own YAML files load as they are (``data.dataset: CIFAR10``, keys this
    toolkit does not use are kept and ignored, :data:`CONFIG_DEFAULTS` fills the rest).
    ``dataset`` (``--dataset`` or the checkpoint's) overrides ``data.dataset``; without it the
    config's dataset is used, and without a config ``digits``.
    """
    if path is None:
        path = default_config_path(dataset or "digits", kind)
    path = Path(path)
    if not path.exists() and (CONFIG_DIR / path).exists():
        path = CONFIG_DIR / path
    tree = read_yaml(path, "--config")
    for section in ("data", "model", "diffusion", *KIND_SECTIONS[kind]):
        if not isinstance(tree, dict) or not isinstance(tree.get(section), dict):
            raise UsageError(f"--config {path}: missing the '{section}:' section")
    check_config_types(tree, path)
    data = tree["data"]
    if data.get("rescaled", True) is not True or data.get("logit_transform", False):
        raise UsageError(f"--config {path}: only data.rescaled: true (images in [-1, 1]) is supported")
    data["dataset"] = dataset or str(data.get("dataset", "digits")).lower()
    if data["dataset"] not in DATASETS:
        raise UsageError(f"--config {path}: data.dataset {data['dataset']!r} is not one of {', '.join(DATASETS)}")
    for section, defaults in CONFIG_DEFAULTS.items():
        tree.setdefault(section, {})
        for key, value in defaults.items():
            tree[section].setdefault(key, value)
    model = tree["model"]
    if model["network"] == "unet2d" and model["resamp_with_conv"] is not True:
        raise UsageError(f"--config {path}: model.network unet2d always resamples with convolutions; "
                         "model.resamp_with_conv: false needs model.network conditional_model")
    return to_namespace(tree)


def save_config(config: SimpleNamespace, path: PathLike) -> None:
    atomic_write_text(yaml.safe_dump(to_dict(config), sort_keys=False), path)


def alphas_cumprod(config: SimpleNamespace) -> torch.Tensor:
    """The config's ``abar_t``, computed in float32 as the research code's training and forgetting losses do."""
    d = config.diffusion
    return alphas_cumprod_from_betas(beta_schedule(d.beta_schedule, d.beta_start, d.beta_end,
                                                   d.num_diffusion_timesteps), dtype=torch.float32)
