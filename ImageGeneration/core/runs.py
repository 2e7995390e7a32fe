"""Run folders of the image-generation scripts (results/<dataset>/<mode>/<timestamp>/)."""
from __future__ import annotations

import datetime
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
