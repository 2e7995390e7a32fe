"""The DDPM's checkpoints: ``<run folder>/ckpts/ckpt.pth``, this toolkit's and the research code's.

This toolkit's hold a dict with ``model``, ``ema`` (or None), ``optimizer``, ``step``, ``config``
(the full config the run used) and ``trained_classes``; the network is rebuilt from the
checkpoint's own ``config['model']`` so a checkpoint loads whatever config the next script is
given.  The research code's ``ckpt.pth`` is the list ``[model, optimizer, step(, ema)]`` with
``nn.DataParallel``'s ``module.`` key prefix and no config: its network is built from the
script's ``--config`` (see :func:`load_checkpoint`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from common.errors import UsageError
from common.io import PathLike, atomic_torch_save, check_state_dict, load_torch_file, one_line
from ImageGeneration.DDPM.config import load_config, to_dict, to_namespace
from ImageGeneration.DDPM.networks import DDPMNetwork, build_unet

CKPT_RELPATH = Path("ckpts") / "ckpt.pth"
#: What a checkpoint written before ``model.network`` existed was built with.
LEGACY_MODEL_KEYS = {"network": "unet2d", "resamp_with_conv": True}


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
        stored = state["config"]
        config = to_namespace({**stored, "model": {**stored["model"], **{
            key: value for key, value in LEGACY_MODEL_KEYS.items() if key not in stored["model"]}}})
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
    """Load ``args.ckpt_folder`` (``args``: the parsed flags ``--ckpt_folder``, ``--config`` and ``--dataset``,
    read and not changed).

    ``--dataset``, when given, must name the dataset the checkpoint was trained on; the run's dataset is
    ``loaded.dataset`` (so the default configs follow the model).  A
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
    return loaded


def save_checkpoint(path: PathLike, unet: DDPMNetwork, config: SimpleNamespace, trained_classes: List[int],
                    step: int, ema_state: Optional[Dict[str, torch.Tensor]] = None,
                    optimizer_state: Optional[Dict[str, Any]] = None) -> Path:
    return atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
        "ema": None if ema_state is None else {k: v.cpu() for k, v in ema_state.items()},
        "optimizer": optimizer_state, "step": step, "config": to_dict(config),
        "trained_classes": list(trained_classes)}, path)
