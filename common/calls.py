"""One resumable run of a sweep or benchmark: a :class:`Call` and :func:`run_call`, which runs it.

A call is an entry script's ``main(argv)`` or a modality's function, its one argument, its folder and the file
whose existence means it finished. The launchers (:mod:`common.launch`) run calls; :class:`common.evidence_runs.Runner`
skips finished ones. A run that stops on a NaN or infinite loss (:class:`common.nonfinite.NonFiniteLoss`) is a
result: :func:`run_call` writes the stop's message to ``<folder>/diverged.json`` and the call counts as finished.
"""
from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from common.io import atomic_write_json, read_json
from common.nonfinite import NonFiniteLoss

#: written instead of the done-file by a run that stopped on a non-finite loss
DIVERGED_FILE = "diverged.json"


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
        """Finished: the done-file exists, or the run diverged."""
        return (self.save_dir / self.done_file).exists() or (self.save_dir / DIVERGED_FILE).exists()

    @property
    def diverged(self) -> Optional[str]:
        """The message of the non-finite-loss stop that ended the run, or None."""
        path = self.save_dir / DIVERGED_FILE
        return read_json(path)["error"] if path.exists() else None


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
    try:
        with open(call.save_dir / "log.txt", "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            function(call.argument)
    except (NonFiniteLoss, SystemExit) as stop:
        # an entry script's cli_main turns the NonFiniteLoss into SystemExit(2) "from None", which hides
        # the cause from tracebacks but keeps it as __context__
        cause = stop if isinstance(stop, NonFiniteLoss) else stop.__context__
        if not isinstance(cause, NonFiniteLoss):
            raise
        atomic_write_json({"error": str(cause)}, call.save_dir / DIVERGED_FILE)
    return round(time.time() - start, 1)
