"""The runs of an evidence benchmark (:mod:`common.evidence`): resumable, logged, optionally in a worker pool.

A benchmark is hundreds of independent runs (an entry script's ``main(argv)``, or a modality's function
that trains a model and scores it). Each is a :class:`Call`: the function, its one argument, the run's folder
and the file whose existence means the run finished. :class:`Runner` skips finished calls, so an interrupted
benchmark continues where it stopped, sends each call's printed output to ``<folder>/log.txt`` and records its
seconds; with ``jobs`` > 1 it runs the calls of one batch in that many spawned worker processes.
"""
from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from common.io import read_json


@dataclass(frozen=True)
class Call:
    """One run: ``target`` (``"package.module:function"``) called with ``argument`` (an entry script's argv as a
    tuple, or a frozen spec), writing into ``save_dir``; finished once ``save_dir / done_file`` exists (the
    last file the function writes)."""
    target: str
    argument: Any
    save_dir: Path
    done_file: str = "run.json"

    @property
    def done(self) -> bool:
        return (self.save_dir / self.done_file).exists()


def run_call(call: Call, threads: Optional[int] = None) -> float:
    """Run ``call`` with its stdout and stderr appended to ``<save_dir>/log.txt``; returns its seconds.

    ``threads`` sets torch's CPU threads (a worker process of :class:`Runner` gets its share of the cores).
    """
    if threads:
        import torch
        torch.set_num_threads(threads)
    module, _, name = call.target.partition(":")
    function = getattr(importlib.import_module(module), name or "main")
    call.save_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(call.save_dir / "log.txt", "a", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        function(call.argument)
    return round(time.time() - start, 1)


class Runner:
    """Runs calls, skips finished ones and records each run's seconds (kept in ``<out>/results.json``).

    With ``jobs`` > 1 the unfinished calls of one batch go to that many spawned worker processes, each with
    ``threads`` torch threads (small models use two cores better as two 1-thread runs than as one 2-thread
    run); the pool starts once and serves every batch. With 1 they run in this process.
    """

    def __init__(self, out: Path, jobs: int = 1, threads: Optional[int] = None) -> None:
        self.out = out
        self.jobs = jobs
        self.threads = threads
        self.seconds: Dict[str, float] = {}
        self.pool: Optional[ProcessPoolExecutor] = None
        if (out / "results.json").is_file():
            self.seconds.update(read_json(out / "results.json").get("seconds", {}))

    def run(self, calls: Sequence[Call]) -> None:
        todo = [call for call in dict.fromkeys(calls) if not call.done]
        if self.jobs > 1 and len(todo) > 1:
            if self.pool is None:  # every worker imports torch and the pipeline only once
                context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
                self.pool = ProcessPoolExecutor(self.jobs, mp_context=context)
            seconds = list(self.pool.map(run_call, todo, [self.threads] * len(todo)))
        else:
            seconds = [run_call(call) for call in todo]
        for call, value in zip(todo, seconds):
            self.seconds[self.key(call)] = value

    def key(self, call: Call) -> str:
        """The run's name in :attr:`seconds`: its folder relative to the benchmark's."""
        return call.save_dir.relative_to(self.out).as_posix()

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
