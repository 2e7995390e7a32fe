"""Fixtures shared by every test folder."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_cpu_processes(script: str, args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run the repository's ``script`` under ``accelerate launch`` with 2 CPU processes; assert it succeeds.

    accelerate 1.x's ``--cpu`` flag always starts a single process, so the two processes are
    launched with ``--multi_gpu`` on a machine without GPUs (``--device cpu`` then selects gloo).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO / script), *map(str, args)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode < 0:
        # A gloo worker was seen to abort (SIGABRT) once during process-group start-up on a
        # loaded 2-core machine; a signal death is retried once, a Python error never is.
        command[command.index("--main_process_port") + 1] = str(free_port())
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    errors = [line for line in result.stderr.splitlines() if "it/s" not in line]
    assert result.returncode == 0, "\n".join(errors[-40:])
    return result


@pytest.fixture(scope="session")
def launch_two_processes():
    """:func:`launch_two_cpu_processes`, for tests that compare a 2-process run with one process."""
    return launch_two_cpu_processes
