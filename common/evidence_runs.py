"""The runs of an evidence benchmark (the engine in ``benchmarks/evidence/``): resumable, logged, optionally in a
worker pool.

A benchmark is hundreds of independent runs (an entry script's ``main(argv)``, or a modality's function
that trains a model and scores it). Each is a :class:`Call`: the function, its one argument, the run's folder
and the file whose existence means the run finished. :class:`Runner` skips finished calls, so an interrupted
benchmark continues where it stopped, sends each call's printed output to ``<folder>/log.txt`` and records its
seconds; it hands the unfinished calls to a launcher (:mod:`common.launch`: this machine, in this process or
in ``jobs`` spawned workers, or SLURM jobs).

A run that stops on a NaN or infinite loss (:class:`common.nonfinite.NonFiniteLoss`, e.g. an optimizer pair
that diverges at every learning rate) is a result, not a crash of the benchmark: :func:`run_call` writes the
stop's message to ``<folder>/diverged.json`` (:mod:`common.calls`), the call counts as finished, and :meth:`Runner.records` gives it
a record whose metrics are NaN and whose ``"diverged"`` field holds the message (the design gives it the gap
``DIVERGED_GAP`` of the engine's design module).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from common import launch
from common.calls import DIVERGED_FILE, Call, run_call  # noqa: F401 -- the runs' API, imported from here too
from common.errors import UsageError
from common.io import read_json

class RunsFailed(UsageError):
    """Some runs of a batch failed (after the others of the batch ran); the message lists each one's log and
    last error lines."""


class Runner:
    """Runs calls, skips finished ones and records each run's seconds (kept in ``<out>/results.json``).

    The calls go to a launcher (:mod:`common.launch`): ``launcher``, else the one of an enclosing
    :func:`common.launch.using` block (a benchmark script's ``--launcher``), else a local one. Locally, with
    ``jobs`` > 1 the unfinished calls of one batch go to that many spawned worker processes, each with
    ``threads`` torch threads (small models use two cores better as two 1-thread runs than as one 2-thread
    run); the pool starts once and serves every batch, and its workers die with this process. With 1 they
    run in this process. As a context manager it closes the pool of a launcher it made on leaving.

    A failed run does not stop the others of its batch; once they are done :meth:`run` raises
    :class:`RunsFailed` naming each failed run's log.
    """

    def __init__(self, out: Path, jobs: int = 1, threads: Optional[int] = None, launcher=None) -> None:
        self.out = out
        self.jobs = jobs
        self.threads = threads
        shared = launcher or launch.configured()
        self.owns_launcher = shared is None  # closed by whoever made it
        self.launcher = shared or launch.LocalLauncher(jobs, threads)
        self.seconds: Dict[str, float] = {}
        if (out / "results.json").is_file():
            self.seconds.update(read_json(out / "results.json").get("seconds", {}))

    def run(self, calls: Sequence[Call]) -> None:
        todo = [call for call in dict.fromkeys(calls) if not call.done]
        outcomes = self.launcher.run(todo)
        for call in todo:
            if not outcomes[call].failed:
                self.seconds[self.key(call)] = outcomes[call].seconds
        failed = [(call, outcomes[call]) for call in todo if outcomes[call].failed]
        if failed:
            raise RunsFailed(launch.failure_summary(failed, len(todo)))

    def records(self, calls: Sequence[Call], read: Callable[[Call], Mapping[str, Any]],
                keys: Sequence[str]) -> List[Dict[str, Any]]:
        """Run ``calls`` and return each one's record: ``read(call)`` for a finished run; for a diverged one,
        NaN for every metric of ``keys`` and the stop's message under ``"diverged"``."""
        self.run(calls)
        records = []
        for call in calls:
            message = call.diverged
            records.append({**{key: math.nan for key in keys}, "diverged": message} if message else dict(read(call)))
        return records

    def key(self, call: Call) -> str:
        """The run's name in :attr:`seconds`: its folder relative to the benchmark's."""
        return call.save_dir.relative_to(self.out).as_posix()

    def close(self) -> None:
        """Stop the worker processes of a launcher this runner made, if any were started."""
        if self.owns_launcher:
            self.launcher.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
