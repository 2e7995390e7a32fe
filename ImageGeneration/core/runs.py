"""What every image-generation script shares: the ``--seed``/``--deterministic``/``--device`` flags, run folders,
resume snapshots.

Every training or unlearning run writes into a new folder, so a second run never
touches the results of a first; ``--resume`` instead continues the most recent
folder of the same settings that still holds a resume snapshot.
"""
from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from common.checkpointing import ProcessGroup, Snapshotter, latest_snapshot_folder
from common.device import add_device_args, get_device
from common.distributed import SampleSharding
from common.io import PathLike, add_trust_args, ensure_writable_dir, write_run_record
from common.logging import setup_logging
from common.seed import add_seed_args, seed_everything

LOGGER_NAME = "ImageGeneration"


def parse_run_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                   seed: int = 1234) -> argparse.Namespace:
    """Add ``--seed`` (default ``seed``), ``--deterministic``, ``--device``/``--gpu`` and ``--trust_checkpoint``
    to a script's parser and parse ``argv``."""
    add_seed_args(parser, default=seed)
    add_device_args(parser)
    add_trust_args(parser)
    return parser.parse_args(argv)


def tf32_on(device: torch.device) -> bool:
    """Whether a DiT run turns TF32 on: on CUDA, as the DiT research code does when its scripts are
    imported (``forget.py:8-9``, ``generate_fisher.py:4-5``, ``sample.py:12-13``).  Float32 matmuls and
    convolutions then round their inputs to a 10-bit mantissa on Ampere and later GPUs (faster, about
    1e-3 relative error per product); a CPU has nothing to switch."""
    return torch.device(device).type == "cuda"


def start_run(args: argparse.Namespace, tf32: bool = False) -> torch.device:
    """Resolve ``--device``/``--gpu`` and seed every RNG with ``--seed`` (``--deterministic``); returns the device.

    ``tf32``: the DiT scripts' setting -- TF32 matmuls and cuDNN convolutions for the rest of the
    process where :func:`tf32_on` says so.  The DDPM research code leaves PyTorch's defaults, and so do
    its scripts here.
    """
    device = get_device(args.device, args.gpu)
    seed_everything(args.seed, args.deterministic)
    if tf32 and tf32_on(device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def new_run_dir(exp_root: PathLike, parts: Sequence[str], flag: str = "--exp_root") -> Path:
    """``<exp_root>/results/<parts...>/<YYYY_mm_dd_HHMMSS>``, made unique with a suffix if needed."""
    base = Path(exp_root, "results", *parts)
    ensure_writable_dir(base, flag)
    stamp = datetime.datetime.now().strftime("%Y_%m_%d_%H%M%S")
    run_dir, n = base / stamp, 1
    while run_dir.exists():
        run_dir, n = base / f"{stamp}_{n}", n + 1
    run_dir.mkdir()
    return run_dir


def resumable_run_dir(parent: PathLike) -> Optional[Path]:
    """The folder under ``parent`` whose resume snapshot was written last, if any."""
    parent = Path(parent)
    return latest_snapshot_folder(sorted(parent.iterdir()) if parent.is_dir() else [])


def open_run(exp_root: PathLike, parts: Sequence[str], sharding: SampleSharding,
             args: Union[argparse.Namespace, Mapping[str, Any]], every: int, yaml_config: Optional[Mapping[str, Any]] = None
             ) -> Tuple[Path, logging.Logger, Snapshotter]:
    """The run folder, its resume snapshots (:func:`run_snapshots`) and its logger writing ``logs/stdout.txt``
    (``args``: the parsed flags or a run config's record).

    A new folder (:func:`new_run_dir`), or with ``--resume`` the latest one of ``parts`` that holds a
    resume snapshot (a new one when there is none).  That snapshot is read and checked (its layout, the
    types it holds, the run's settings) before the log is opened, so a refused ``--resume`` leaves the
    folder as it was.  Under ``accelerate launch`` only the main process chooses the folder and logs;
    the others get its path and a silent logger.
    """
    run_dir = None
    if sharding.is_main:
        resume = flag_settings(args)["resume"]
        run_dir = (resume and resumable_run_dir(Path(exp_root, "results", *parts))) or new_run_dir(exp_root, parts)
    run_dir = Path(sharding.broadcast(str(run_dir) if run_dir else None))
    snapshots = run_snapshots(run_dir, args, every, sharding, yaml_config).verify()
    if sharding.is_main:
        return run_dir, setup_logging(LOGGER_NAME, run_dir / "logs" / "stdout.txt"), snapshots
    logger = logging.getLogger(f"{LOGGER_NAME}.process{sharding.rank}")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return run_dir, logger, snapshots


def flag_settings(args: Union[argparse.Namespace, Mapping[str, Any]]) -> Dict[str, Any]:
    """The parsed flags, or a run config's ``record()`` of them, as one dict."""
    return dict(vars(args) if isinstance(args, argparse.Namespace) else args)


def run_snapshots(run_dir: Path, args: Union[argparse.Namespace, Mapping[str, Any]], every: int,
                  sharding: SampleSharding, yaml_config: Optional[Mapping[str, Any]] = None) -> Snapshotter:
    """Resume snapshots of a run in ``run_dir`` every ``every`` steps, refused on resume under other
    flags or another YAML config (``args``: the parsed flags or a run config's record)."""
    settings = flag_settings(args)
    config = {**settings, "yaml_config": yaml_config}
    return Snapshotter(run_dir, every=every, resume=settings["resume"], config=config,
                       processes=ProcessGroup.of(sharding.accelerator))


def finish_run(run_dir: Path, args: Union[argparse.Namespace, Mapping[str, Any]], metrics: dict,
               sharding: SampleSharding, yaml_config: dict, snapshots: Optional[Snapshotter] = None) -> str:
    """Write ``run.json``, drop the resume snapshot and print the run folder on the main process,
    then wait for the others."""
    if sharding.is_main:
        write_run_record(run_dir, args, {**metrics, "run_dir": str(run_dir), "num_processes": sharding.world},
                         yaml_config=yaml_config)
        if snapshots is not None:
            snapshots.remove()
        print(run_dir)
    sharding.barrier()
    return str(run_dir)

