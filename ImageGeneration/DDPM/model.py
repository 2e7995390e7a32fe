"""The class-conditional DDPM: YAML configs, its two networks, checkpoints (optimizers: :mod:`.optimizers`).

``model.network`` picks the network (:data:`NETWORKS`):

* ``conditional_model`` (the default, so the research code's YAML files build it): the research
  code's ``Conditional_Model`` (:class:`ImageGeneration.DDPM.network.ConditionalModel`), whose
  checkpoints load here;
* ``unet2d``: a ``diffusers.UNet2DModel`` with ``n_classes + 1`` class embeddings (the digits
  configs; the benchmarks' numbers were measured on it).

Both take label ``n_classes`` as the *null* class of classifier-free guidance (a label is
replaced by it with probability ``cond_drop_prob`` during training, as in the research code).

Checkpoints live at ``<run folder>/ckpts/ckpt.pth``.  This toolkit's hold a dict with
``model``, ``ema`` (or None), ``optimizer``, ``step``, ``config`` (the full config the run
used) and ``trained_classes``; the network is rebuilt from the checkpoint's own
``config['model']`` so a checkpoint loads whatever config the next script is given.  The
research code's ``ckpt.pth`` is the list ``[model, optimizer, step(, ema)]`` with
``nn.DataParallel``'s ``module.`` key prefix and no config: its network is built from the
script's ``--config`` (see :func:`load_checkpoint`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import yaml
from diffusers import UNet2DModel

from common.distributed import SampleSharding
from common.errors import (Bounded, UsageError, config_value, fraction, non_negative_float, non_negative_int,
                           positive_float, positive_int)
from common.io import (PathLike, atomic_torch_save, atomic_write_text, check_state_dict, load_torch_file,
                       one_line, read_yaml)
from ImageGeneration.core.diffusion import BETA_SCHEDULES, alphas_cumprod_from_betas, beta_schedule
from ImageGeneration.DDPM.data import DATASETS
from ImageGeneration.DDPM.network import ConditionalModel

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CKPT_RELPATH = Path("ckpts") / "ckpt.pth"
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
#: Either network; both map ``(x_t, t, c)`` to predicted noise (see :func:`predict_noise`).
DDPMNetwork = Union[ConditionalModel, UNet2DModel]
#: Keys this toolkit reads that the research code's configs leave out, with the value its network implies.
CONFIG_DEFAULTS = {"model": {"network": "conditional_model", "norm_num_groups": 32, "resamp_with_conv": True},
                   "training": {"visualization_samples": 100}}
#: What a checkpoint written before ``model.network`` existed was built with.
LEGACY_MODEL_KEYS = {"network": "unet2d", "resamp_with_conv": True}


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
    "optim": {"optimizer": (str, ("Adam", "SGD", "RMSProp")), "lr": (positive_float, None),
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


def build_unet(model_config: SimpleNamespace, data_config: SimpleNamespace) -> DDPMNetwork:
    """The UNet of ``model:`` (``ch * ch_mult`` channels, attention at ``attn_resolutions``).

    ``model.network`` picks the research code's network or diffusers' ``UNet2DModel``.
    """
    if model_config.network == "conditional_model":
        return ConditionalModel(
            ch=model_config.ch, out_ch=data_config.channels, ch_mult=model_config.ch_mult,
            num_res_blocks=model_config.num_res_blocks, attn_resolutions=model_config.attn_resolutions,
            dropout=model_config.dropout, in_channels=data_config.channels, resolution=data_config.image_size,
            n_classes=data_config.n_classes, resamp_with_conv=model_config.resamp_with_conv,
            norm_num_groups=model_config.norm_num_groups)
    down, up, resolution = [], [], data_config.image_size
    for level in range(len(model_config.ch_mult)):
        down.append("AttnDownBlock2D" if resolution in model_config.attn_resolutions else "DownBlock2D")
        if level != len(model_config.ch_mult) - 1:
            resolution //= 2
    for block in reversed(down):
        up.append("AttnUpBlock2D" if block == "AttnDownBlock2D" else "UpBlock2D")
    return UNet2DModel(
        sample_size=data_config.image_size, in_channels=data_config.channels, out_channels=data_config.channels,
        down_block_types=tuple(down), up_block_types=tuple(up),
        block_out_channels=tuple(model_config.ch * m for m in model_config.ch_mult),
        layers_per_block=model_config.num_res_blocks, dropout=model_config.dropout,
        norm_num_groups=model_config.norm_num_groups, num_class_embeds=data_config.n_classes + 1)


def null_label(unet: DDPMNetwork) -> int:
    """Index of the unconditional ("null") class embedding: ``n_classes``."""
    if isinstance(unet, ConditionalModel):
        return unet.n_classes
    return unet.config.num_class_embeds - 1


def predict_noise(unet: DDPMNetwork, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The network's noise prediction for labels ``c`` (``null_label(unet)``: unconditional)."""
    if isinstance(unet, ConditionalModel):
        return unet(x_t, t, c)
    return unet(x_t, t, class_labels=c).sample


def noise_predictor(unet: DDPMNetwork, cond_drop_prob: float = 0.0, generator: Optional[torch.Generator] = None,
                    sharding: Optional[SampleSharding] = None):
    """``eps_fn(x_t, t, c)`` for the core losses, dropping labels to null with ``cond_drop_prob``.

    With a multi-process ``sharding`` the labels are dropped on the whole batch and only the
    network runs on this process's slice (see :mod:`common.distributed`).
    """
    null = null_label(unet)

    def network(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return predict_noise(unet, x_t, t, c)

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x_t.device)
        if cond_drop_prob > 0:
            drop = torch.rand(c.shape, generator=generator).to(c.device) < cond_drop_prob
            c = torch.where(drop, torch.full_like(c, null), c)
        return network(x_t, t, c) if sharding is None else sharding.forward(network, x_t, t, c)

    return eps_fn


def alphas_cumprod(config: SimpleNamespace) -> torch.Tensor:
    """The config's ``abar_t``, computed in float32 as the research code's training and forgetting losses do."""
    d = config.diffusion
    return alphas_cumprod_from_betas(beta_schedule(d.beta_schedule, d.beta_start, d.beta_end,
                                                   d.num_diffusion_timesteps), dtype=torch.float32)


def data_transform(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` -> model space ``[-1, 1]`` (the configs' ``rescaled: true``)."""
    return images * 2.0 - 1.0


@dataclass
class LoadedCheckpoint:
    """A rebuilt UNet with its raw weights, plus the checkpoint it came from (in this toolkit's layout)."""

    unet: DDPMNetwork
    state: Dict[str, Any]
    config: SimpleNamespace
    trained_classes: List[int]
    #: ``"toolkit"`` or ``"research"`` (the research code's ``[model, optimizer, step(, ema)]`` list).
    source_format: str = "toolkit"

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    def use_ema_weights(self) -> bool:
        """Swap in the EMA weights when the checkpoint has them; returns whether it did."""
        if self.state.get("ema") is None:
            return False
        self.unet.load_state_dict(self.state["ema"], strict=False)
        return True


def checkpoint_path(ckpt_folder: PathLike, flag: str = "--ckpt_folder") -> Path:
    """``<ckpt_folder>/ckpts/ckpt.pth``, or a one-line error when the folder has none."""
    folder = Path(ckpt_folder)
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: folder not found")
    path = folder / CKPT_RELPATH
    if not path.is_file():
        raise UsageError(f"{flag} {folder}: no checkpoint at {CKPT_RELPATH} (train one with main_train.py)")
    return path


def strip_data_parallel(state: Any) -> Any:
    """``state`` without ``nn.DataParallel``'s ``module.`` key prefix when every key has it (the research
    code's weights, masks and Fisher diagonals are named on its ``nn.DataParallel`` model); else ``state``."""
    prefix = "module."
    if isinstance(state, Mapping) and state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state


def research_checkpoint(state: Any, label: str) -> Optional[Tuple[Dict[str, torch.Tensor],
                                                                  Optional[Dict[str, torch.Tensor]], int]]:
    """``(weights, ema, step)`` of a research-code checkpoint; None for one of this toolkit.

    The research code saves ``[model.state_dict(), optimizer.state_dict(), step]`` plus the
    EMA helper's shadow weights when ``model.ema`` is on (``runners/diffusion.py``); a bare
    state dict (``model.state_dict()`` alone) is taken too.  ``module.`` prefixes are removed.
    """
    if isinstance(state, Mapping) and {"model", "config", "trained_classes"} <= set(state):
        return None
    if isinstance(state, (list, tuple)):
        if len(state) not in (3, 4) or not isinstance(state[2], int):
            raise UsageError(f"{label}: a list checkpoint must be the research code's [model, optimizer, step] "
                             f"or [model, optimizer, step, ema], got {len(state)} entries")
        weights = strip_data_parallel(check_state_dict(state[0], f"{label} (entry 0, the model)"))
        ema = None if len(state) == 3 else strip_data_parallel(
            check_state_dict(state[3], f"{label} (entry 3, the EMA)"))
        return weights, ema, state[2]
    if isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return strip_data_parallel(check_state_dict(state, label)), None, 0
    raise UsageError(f"{label}: not a DDPM checkpoint of this toolkit (keys model/config/trained_classes) "
                     "nor of the research code ([model, optimizer, step(, ema)])")


def load_weights(unet: DDPMNetwork, weights: Mapping[str, torch.Tensor], label: str, what: str) -> None:
    """``unet.load_state_dict(weights)`` (strict), or one line naming ``label`` and ``what`` it should fit."""
    try:
        unet.load_state_dict(weights)
    except RuntimeError as err:
        raise UsageError(f"{label}: weights do not fit {what} ({one_line(err)})") from None


def load_checkpoint(ckpt_folder: PathLike, device: torch.device, flag: str = "--ckpt_folder",
                    research_config: Optional[Callable[[], SimpleNamespace]] = None) -> LoadedCheckpoint:
    """Rebuild the UNet of a run folder and load its raw weights.

    A checkpoint of this toolkit carries its config.  One of the research code carries none:
    ``research_config()`` (the script's ``--config``) describes its network and data, and it
    counts as trained on every class (the research code's ``pretrain``).
    """
    path = checkpoint_path(ckpt_folder, flag)
    label = f"{flag} {path}"
    state = load_torch_file(path, flag)
    research = research_checkpoint(state, label)
    if research is None:
        check_state_dict(state["model"], f"{label} ('model')")
        config = to_namespace(state["config"])
        for key, value in LEGACY_MODEL_KEYS.items():
            if not hasattr(config.model, key):
                setattr(config.model, key, value)
        unet = build_unet(config.model, config.data)
        load_weights(unet, state["model"], label, "the stored config")
        return LoadedCheckpoint(unet.to(device), state, config, list(state["trained_classes"]))
    if research_config is None:
        raise UsageError(f"{label}: a research-code checkpoint carries no config; give the --config it was "
                         "trained with")
    weights, ema, step = research
    config = research_config()
    unet = build_unet(config.model, config.data)
    what = f"the network of --config (model.network {config.model.network})"
    load_weights(unet, weights, label, what)
    if ema is not None and set(ema) != {name for name, _ in unet.named_parameters()}:
        raise UsageError(f"{label}: the EMA weights (entry 3) do not fit {what}")
    state = {"model": weights, "ema": ema, "optimizer": None, "step": step, "config": to_dict(config),
             "trained_classes": list(range(config.data.n_classes))}
    return LoadedCheckpoint(unet.to(device), state, config, state["trained_classes"], "research")


def load_run_checkpoint(args, device: torch.device, kind: str) -> LoadedCheckpoint:
    """Load ``args.ckpt_folder`` and settle ``args.dataset`` on the checkpoint's dataset.

    ``--dataset``, when given, must name the dataset the checkpoint was trained on;
    left out, the checkpoint's is used (so the default configs follow the model).  A
    research-code checkpoint gets its network from ``--config`` (or the ``<dataset>_<kind>.yml``
    of ``--dataset``), which is required then.
    """
    def research_config() -> SimpleNamespace:
        if args.config is None and args.dataset is None:
            raise UsageError(f"--ckpt_folder {args.ckpt_folder}: a research-code checkpoint carries no config; "
                             "give --config (the YAML it was trained with) or --dataset")
        return load_config(args.config, args.dataset, kind)

    loaded = load_checkpoint(args.ckpt_folder, device, research_config=research_config)
    if args.dataset is not None and args.dataset != loaded.dataset:
        raise UsageError(f"--dataset {args.dataset}: the checkpoint was trained on {loaded.dataset}")
    args.dataset = loaded.dataset
    return loaded


def save_checkpoint(path: PathLike, unet: DDPMNetwork, config: SimpleNamespace, trained_classes: List[int],
                    step: int, ema_state: Optional[Dict[str, torch.Tensor]] = None,
                    optimizer_state: Optional[Dict[str, Any]] = None) -> Path:
    return atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
        "ema": None if ema_state is None else {k: v.cpu() for k, v in ema_state.items()},
        "optimizer": optimizer_state, "step": step, "config": to_dict(config),
        "trained_classes": list(trained_classes)}, path)
