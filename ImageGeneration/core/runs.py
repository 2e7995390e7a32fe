"""Run folders and logging of the image-generation scripts."""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from common.io import PathLike, ensure_writable_dir

LOGGER_NAME = "ImageGeneration"


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


def setup_logging(log_file: PathLike = None) -> logging.Logger:
    """The package logger, to stderr and (when given) ``log_file``, in the research code's format."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(levelname)s - %(filename)s - %(asctime)s - %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def save_pretrained_atomic(model, folder: PathLike) -> Path:
    """``model.save_pretrained(folder)`` through a temporary sibling folder, so a crash leaves no half model."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
