"""Fixtures of the resume tests of every modality: a run SIGKILLed at a known step, single-threaded runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpointing import KILL_AT_STEP_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def killed_run():
    """``run(module, argv, kill_at)``: ``python -m module argv`` in a new process that SIGKILLs itself
    right after its ``kill_at``-th optimizer step (the test hook of :mod:`common.checkpointing`)."""
    def run(module: str, argv, kill_at: int) -> subprocess.CompletedProcess:
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        env[KILL_AT_STEP_ENV] = str(kill_at)
        result = subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        return result
    return run


@pytest.fixture
def one_thread():
    """Run in-process with one intra-op thread, as the ``OMP_NUM_THREADS=1`` processes compared with it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
