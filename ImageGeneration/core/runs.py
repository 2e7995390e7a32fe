"""What every image-generation script shares: the ``--seed``/``--deterministic``/``--device`` flags and run folders."""
from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from common.device import add_device_args, get_device
from common.distributed import SampleSharding
from common.io import PathLike, ensure_writable_dir, write_run_record
from common.logging import setup_logging
from common.seed import add_seed_args, seed_everything

LOGGER_NAME = "ImageGeneration"


def parse_run_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                   seed: int = 1234) -> argparse.Namespace:
    """Add ``--seed`` (default ``seed``), ``--deterministic`` and ``--device``/``--gpu`` to a script's parser
    and parse ``argv``."""
    add_seed_args(parser, default=seed)
    add_device_args(parser)
    return parser.parse_args(argv)


def start_run(args: argparse.Namespace) -> torch.device:
    """Resolve ``--device``/``--gpu`` and seed every RNG with ``--seed`` (``--deterministic``); returns the device."""
    device = get_device(args.device, args.gpu)
    seed_everything(args.seed, args.deterministic)
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


def open_run(exp_root: PathLike, parts: Sequence[str], sharding: SampleSharding) -> Tuple[Path, logging.Logger]:
    """The run folder (:func:`new_run_dir`) and its logger writing ``logs/stdout.txt``.

    Under ``accelerate launch`` only the main process creates the folder and logs;
    the others get its path and a silent logger.
    """
    run_dir = new_run_dir(exp_root, parts) if sharding.is_main else None
    run_dir = Path(sharding.broadcast(str(run_dir) if run_dir else None))
    if sharding.is_main:
        return run_dir, setup_logging(LOGGER_NAME, run_dir / "logs" / "stdout.txt")
    logger = logging.getLogger(f"{LOGGER_NAME}.process{sharding.rank}")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return run_dir, logger


def finish_run(run_dir: Path, args: argparse.Namespace, metrics: dict, sharding: SampleSharding,
               yaml_config: dict) -> str:
    """Write ``run.json`` and print the run folder on the main process, then wait for the others."""
    if sharding.is_main:
        write_run_record(run_dir, args, {**metrics, "run_dir": str(run_dir), "num_processes": sharding.world},
                         yaml_config=yaml_config)
        print(run_dir)
    sharding.barrier()
    return str(run_dir)

