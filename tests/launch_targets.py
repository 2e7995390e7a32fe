"""Run functions for the launcher tests: cheap, resumable, and each leaves a trace of how it ran.

Each takes one argument (a tuple, as a :class:`common.evidence_runs.Call` holds it) whose first item is
the run's folder; ``starts.txt`` there gets one line per start (``<pid> <first step>``), so a test can tell
a resumed run from a rerun, and ``run.json``, the done-file, is written last.
"""
import json
import os
import subprocess
import time
from pathlib import Path


def _start(folder: Path) -> int:
    """The step to start from (the snapshot's), logged in ``starts.txt``."""
    snapshot = folder / "snapshot.txt"
    step = int(snapshot.read_text()) if snapshot.exists() else 0
    with open(folder / "starts.txt", "a") as handle:
        handle.write(f"{os.getpid()} {step}\n")
    return step


def _finish(folder: Path, **record) -> None:
    (folder / "run.json").write_text(json.dumps(record))


def count(argument) -> None:
    """Count to ``steps``, ``pause`` seconds a step, with a snapshot after each (``--resume`` in small)."""
    folder, steps, pause = Path(argument[0]), argument[1], argument[2]
    step = _start(folder)
    while step < steps:
        time.sleep(pause)
        step += 1
        (folder / "snapshot.txt").write_text(str(step))
    _finish(folder, steps=step, gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))


def fail(argument) -> None:
    """Print a line, then fail."""
    _start(Path(argument[0]))
    print("about to fail")
    raise RuntimeError(f"run {argument[0]} broke on purpose")


def preempted_once(argument) -> None:
    """The first start writes a snapshot and has the (fake) SLURM job preempted; the requeued job's start
    resumes from the snapshot and finishes."""
    folder = Path(argument[0])
    step = _start(folder)
    if step == 0:
        (folder / "snapshot.txt").write_text("1")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        subprocess.run(["scancel", job, "--signal", "SIGTERM"], check=True)  # SLURM warns with SIGTERM first
        subprocess.run(["scancel", job, "--signal", "USR2"], check=True)
        time.sleep(60)  # submitit's handler requeues the job and exits before this ends
    _finish(folder, steps=step)


def killed(argument) -> None:
    """The process running this run is killed, as the OOM killer would."""
    _start(Path(argument[0]))
    os.kill(os.getpid(), 9)
