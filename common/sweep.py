"""Run a seed sweep's jobs through a launcher (:mod:`common.launch`): the engine behind ``LAUNCHER=`` in
``scripts/``.

    python -m common.sweep JOBS_FILE --launcher slurm --cluster cluster.yaml [--dry_run]

``JOBS_FILE`` holds one job per line, in shell words (the sweeps write it with ``printf '%q '``)::

    SAVE_DIR DONE_FILE COMMAND... [--and-then COMMAND...]...

The job runs its commands in order and is finished once ``SAVE_DIR/DONE_FILE`` exists (the last file its
last command writes; an absolute ``DONE_FILE`` may lie elsewhere): finished jobs are skipped, so a sweep can be stopped, restarted, or continued with the
other launcher. A command ``python FILE.py ARGS`` of a file of this repository runs as that module's
``main(ARGS)`` in the job's process (so a run that stops on a non-finite loss is recorded as diverged, as
in the evidence benchmarks); any other command (``accelerate launch ...``) runs as a subprocess. The output
of a job goes to ``SAVE_DIR/log.txt``. Failed jobs are listed with their logs' last lines at the end, and the
exit status is then 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

from common.errors import UsageError, cli_main
from common.calls import Call
from common.launch import REPO, DryRun, add_launcher_arguments, failure_summary, launcher_from_args

#: separates the commands of one job in a jobs file
THEN = "--and-then"

PYTHONS = {"python", "python3", Path(sys.executable).name}


class CommandFailed(RuntimeError):
    """A subprocess command of a job exited with a non-zero status."""


def module_of(command: Sequence[str]):
    """The module of a ``python FILE.py ...`` command whose file is in this repository, else None."""
    if len(command) < 2 or Path(command[0]).name not in PYTHONS or not command[1].endswith(".py"):
        return None
    try:
        relative = Path(command[1]).resolve().relative_to(REPO)
    except ValueError:
        return None
    return ".".join(relative.with_suffix("").parts)


def run_steps(steps: Tuple[Tuple[str, ...], ...]) -> None:
    """A job's commands, in order (the target of its :class:`~common.calls.Call`)."""
    for command in steps:
        module = module_of(command)
        if module is not None:
            importlib.import_module(module).main(list(command[2:]))
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        code = subprocess.run(list(command), stdout=sys.stdout, stderr=sys.stderr).returncode
        if code:
            raise CommandFailed(f"{shlex.join(command)} exited with status {code}")


def read_jobs(path: Path) -> List[Call]:
    """The jobs of a jobs file (see the module's docstring), one line naming the file and line otherwise."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"jobs file {path}: cannot read it ({type(error).__name__})") from None
    calls = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"jobs file {path}:{number}: {error}") from None
        if len(words) < 3:
            raise UsageError(f"jobs file {path}:{number}: expected SAVE_DIR DONE_FILE COMMAND..., got {line!r}")
        steps: List[List[str]] = [[]]
        for word in words[2:]:
            if word == THEN:
                steps.append([])
            else:
                steps[-1].append(word)
        if not all(steps):
            raise UsageError(f"jobs file {path}:{number}: an empty command around {THEN}")
        calls.append(Call("common.sweep:run_steps", tuple(map(tuple, steps)), Path(words[0]), words[1]))
    return calls


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs_file", type=Path, help="one job per line: SAVE_DIR DONE_FILE COMMAND...")
    parser.add_argument("--jobs", type=int, default=1, help="local: jobs at a time, one process each")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                        help="torch threads of each job run in a worker process")
    parser.add_argument("--out", type=Path, help="folder of the SLURM scripts and logs (default: beside the jobs "
                                                  "file)")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    calls = list(dict.fromkeys(read_jobs(args.jobs_file)))
    launcher = launcher_from_args(args, args.out or args.jobs_file.parent, args.jobs, args.threads)  # checks first
    todo = [call for call in calls if not call.done]
    print(f"== {len(calls)} jobs, {len(calls) - len(todo)} done already, {len(todo)} to run "
          f"({args.launcher})", flush=True)
    if not todo:
        return 0
    try:
        outcomes = launcher.run(todo)
    except DryRun:
        return 0
    finally:
        launcher.close()
    failed = [(call, outcomes[call]) for call in todo if outcomes[call].failed]
    for call in todo:
        state = "failed" if outcomes[call].failed else ("diverged" if call.diverged else "done")
        print(f"== {call.save_dir}: {state}", flush=True)
    if failed:
        print(failure_summary(failed, len(todo)), file=sys.stderr, flush=True)
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    main()
