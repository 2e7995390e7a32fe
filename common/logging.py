"""The log format every script shares: stderr plus an optional log file in the run folder."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

from common.io import PathLike

LOG_FORMAT = "%(levelname)s - %(filename)s - %(asctime)s - %(message)s"


def setup_logging(name: str, log_file: Optional[PathLike] = None, fmt: str = LOG_FORMAT) -> logging.Logger:
    """Configure and return logger ``name``: INFO to stderr and, when given, to ``log_file``.

    Calling it again replaces the handlers (so repeated in-process runs, as in
    tests and sweeps, do not log twice or keep old files open).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    formatter = logging.Formatter(fmt)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger
