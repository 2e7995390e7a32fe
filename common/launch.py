"""Where the runs of a sweep or benchmark execute: this machine (``local``) or a SLURM cluster (``slurm``).

Every place that runs many runs (the evidence benchmarks through :class:`common.evidence_runs.Runner`, the
seed sweeps of ``scripts/`` through :mod:`common.sweep`, ``benchmarks/paper_scale_gpu.sh``) hands a list of
:class:`~common.calls.Call` to a launcher and gets one :class:`Outcome` per call back. A call is an
independent, resumable unit whose done-file says it finished, so the done-files stay the source of truth:
a launcher never gets a finished call, an interrupted sweep restarts where it stopped, and a sweep may be
continued by the other launcher.

* :class:`LocalLauncher` (the default) runs the calls in this process (``jobs`` 1) or in a pool of spawned
  worker processes. A worker dies with its parent, even after ``kill -9`` of the parent: the kernel sends it
  SIGKILL (``PR_SET_PDEATHSIG`` on Linux) and a watchdog thread exits it once its parent has changed. With
  ``runs_per_gpu`` N and G visible GPUs the pool has G x N workers, each pinned to one GPU
  (``CUDA_VISIBLE_DEVICES``), so N small runs share each GPU.
* :class:`SlurmLauncher` submits the calls through submitit, one job per call, or per pack of
  ``gpus x runs_per_gpu`` calls that a local pool inside the job runs side by side; several jobs go as one
  job array. A preempted or timed-out job is requeued and its calls continue from their ``--resume``
  snapshots; a failed call is reported with its log and last error lines while the others go on.

A failed call never stops the others of its batch: the launcher returns its outcome (log path and the last
lines of its error) and :func:`failure_summary` words the report a caller prints before it exits non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from common.errors import UsageError
from common.calls import run_call

REPO = Path(__file__).resolve().parents[1]

#: lines of a failed run's error shown in the report
ERROR_LINES = 12

#: the name of a run's log under its folder (every call's printed output and a failure's traceback)
LOG_FILE = "log.txt"

LAUNCHERS = ("local", "slurm")

#: set in a SLURM job once it is requeued (:meth:`Pack.checkpoint`): the exit that follows is not a failure
PREEMPTED = threading.Event()


@dataclass(frozen=True)
class Outcome:
    """What became of one call: its seconds when it finished (or diverged), else ``error`` (the last lines
    of its traceback or job log) and ``log`` (where the whole of it is)."""
    seconds: Optional[float] = None
    error: Optional[str] = None
    log: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def tail(text: str, lines: int = ERROR_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def attempt(call, threads: Optional[int] = None) -> Outcome:
    """Run ``call`` (:func:`common.calls.run_call`); an exception becomes a failed :class:`Outcome`
    whose traceback is also appended to the run's log."""
    try:
        return Outcome(seconds=run_call(call, threads))
    except BaseException as error:  # noqa: B036 -- SystemExit of an entry script is a failed run too
        if isinstance(error, KeyboardInterrupt) or PREEMPTED.is_set():
            raise  # Ctrl-C, or submitit's exit after requeueing the job: not the run's failure
        log = call.save_dir / LOG_FILE
        log.parent.mkdir(parents=True, exist_ok=True)
        printed = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        trace = traceback.format_exc()
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(trace)
        # the run's last printed lines (an entry script's one-line error comes before its SystemExit) and the
        # exception's own line, which the traceback ends with
        return Outcome(error=tail(tail(printed, ERROR_LINES - 1) + "\n" + tail(trace, 1)), log=str(log))


def failure_summary(failed: Sequence[Tuple[Any, Outcome]], total: int) -> str:
    """The report of failed calls: how many of ``total``, and per call its folder, log and last error lines."""
    lines = [f"{len(failed)} of {total} runs failed:"]
    for call, outcome in failed:
        lines.append(f"- {call.save_dir} (log: {outcome.log})")
        lines += [f"    {line}" for line in (outcome.error or "").splitlines()]
    return "\n".join(lines)


# -- the local launcher --------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, poll_seconds: float = 0.5) -> None:
    """Make this process exit when its parent (pid ``parent``) does, whatever ends it (``kill -9`` included).

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere a
    daemon thread also polls ``os.getppid()``, which is no longer ``parent`` once the parent is gone (this
    also ends a worker whose parent died while it was still starting, before the ``prctl``).
    """
    if os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _start_worker(runner: int, slots) -> None:
    """A pool worker's start: die with the runner (pid ``runner``), and take a GPU slot when the pool pins
    GPUs (before torch initialises CUDA in this process)."""
    die_with_parent(runner)
    if slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slots.get()


def visible_gpus() -> List[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (empty without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch
    return [str(index) for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def runs_per_gpu_from_memory(run_memory_gb: float, gpu_memory_gb: float, headroom: float = 0.9) -> int:
    """How many runs of ``run_memory_gb`` each (a run's measured peak, e.g. ``nvidia-smi`` or the
    ``peak GPU memory`` line a local worker appends to the run's log) fit on a GPU of ``gpu_memory_gb``,
    keeping ``1 - headroom`` of it free for the CUDA context and fragmentation: ``floor(headroom * gpu /
    run)``, at least 1."""
    return max(1, int(headroom * gpu_memory_gb // run_memory_gb))


class LocalLauncher:
    """Runs calls on this machine: in this process with ``jobs`` 1 (as the benchmarks always did), else in
    a pool of ``jobs`` spawned workers of ``threads`` torch threads each, started once and reused.

    ``runs_per_gpu`` N > 0 pins the workers to ``gpus`` (default: the visible ones): the pool has
    ``len(gpus) x N`` workers, and each takes one of the slots, N per GPU, as it starts.
    """

    name = "local"

    def __init__(self, jobs: int = 1, threads: Optional[int] = None, runs_per_gpu: int = 0,
                 gpus: Optional[Sequence[str]] = None) -> None:
        self.threads = threads
        self.slots: Optional[List[str]] = None
        if runs_per_gpu:
            gpus = list(visible_gpus() if gpus is None else gpus)
            if not gpus:
                raise UsageError("--runs_per_gpu: no CUDA GPU is visible (CUDA_VISIBLE_DEVICES or torch.cuda); "
                                 "use --jobs to run several CPU runs at a time")
            self.slots = [gpu for gpu in gpus for _ in range(runs_per_gpu)]
            jobs = len(self.slots)
        self.jobs = jobs
        self.pool: Optional[ProcessPoolExecutor] = None

    def start(self) -> ProcessPoolExecutor:
        if self.pool is None:  # every worker imports torch and the pipeline only once
            context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
            slots = None
            if self.slots is not None:
                slots = context.Queue()
                for gpu in self.slots:
                    slots.put(gpu)
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_start_worker,
                                            initargs=(os.getpid(), slots))
        return self.pool

    def run(self, calls: Sequence[Any]) -> Dict[Any, Outcome]:
        """Each call's :class:`Outcome`; a failed call does not stop the others."""
        if self.jobs <= 1 or (len(calls) <= 1 and self.slots is None):
            return {call: attempt(call) for call in calls}
        pool = self.start()
        futures = {pool.submit(attempt, call, self.threads): call for call in calls}
        outcomes = {}
        for future in as_completed(futures):
            call = futures[future]
            try:
                outcomes[call] = future.result()
            except BrokenProcessPool:  # a worker was killed (the OOM killer, a signal): the pool is lost
                outcomes[call] = Outcome(error="a worker process died (killed, or out of memory), ending the "
                                               "pool's unfinished runs; rerun to continue them",
                                         log=str(call.save_dir / LOG_FILE))
        if any(isinstance(future.exception(), BrokenProcessPool) for future in futures):
            self.stop(kill=True)  # the next batch starts a fresh pool
        return outcomes

    def stop(self, kill: bool = False) -> None:
        """Stop the workers: after their current runs, or at once with ``kill`` (their runs continue from
        their snapshots on the next start)."""
        if self.pool is None:
            return
        if kill:
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.kill()
        self.pool.shutdown(wait=not kill, cancel_futures=kill)
        self.pool = None

    def close(self) -> None:
        self.stop()


# -- cluster settings ----------------------------------------------------------------------------------


@dataclass
class ClusterSettings:
    """One SLURM job's resources and the sweep's submission settings (flags ``--slurm_<name>`` or the keys
    of a ``--cluster`` YAML file; a flag wins over the file)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: int = 240              # minutes per job; a run that needs longer is requeued and resumes
    gpus: int = 1                # GPUs per job
    cpus: int = 8                # CPUs per job
    mem_gb: float = 32           # memory per job
    array_parallelism: int = 64  # jobs of one array running at once
    runs_per_gpu: int = 1        # > 1: calls packed side by side on each GPU of a job (1: one call per job)
    max_requeues: int = 3        # timeouts a job may be requeued after (preemptions do not count)
    setup: List[str] = field(default_factory=list)  # shell lines run before each job (modules, venv)
    folder: Optional[str] = None  # submitit's scripts, pickles and job logs (default: <out>/slurm)
    job_name: str = "dualoptim"

    @property
    def pack(self) -> int:
        """Calls per job: one, which gets all the job's GPUs (a multi-GPU ``accelerate launch`` run), or with
        ``runs_per_gpu`` > 1 that many on each GPU, each pinned to one."""
        return max(1, self.gpus) * self.runs_per_gpu if self.runs_per_gpu > 1 else 1

    def sbatch_parameters(self) -> Dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters of one job."""
        parameters: Dict[str, Any] = {
            "job_name": self.job_name, "time": self.time, "cpus_per_task": self.cpus, "mem": f"{self.mem_gb:g}GB",
            "array_parallelism": self.array_parallelism, "ntasks_per_node": 1,
            # the submitting folder (relative paths of the runs) and this checkout on the job's path (the
            # pickled calls import from it)
            "setup": list(self.setup) + [f"cd {shlex.quote(os.getcwd())}",
                                         f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]}
        if self.gpus:
            parameters["gpus_per_node"] = self.gpus
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                parameters[key] = getattr(self, key)
        return parameters


_INT_KEYS = {"time": 1, "gpus": 0, "cpus": 1, "array_parallelism": 1, "runs_per_gpu": 1, "max_requeues": 0}


def cluster_settings(path: Optional[str], overrides: Dict[str, Any]) -> ClusterSettings:
    """The settings of a ``--cluster`` YAML (or the defaults) with ``overrides`` (flags given) on top; every
    value checked like a flag, one line naming the file or flag and key otherwise."""
    import yaml

    values: Dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
            loaded = yaml.safe_load(text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise UsageError(f"--cluster {path}: cannot read it as a YAML file ({type(error).__name__})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--cluster {path}: expected a mapping of settings, got {type(loaded).__name__}")
        known = {f.name for f in fields(ClusterSettings)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise UsageError(f"--cluster {path}: unknown key(s) {', '.join(map(str, unknown))}; expected "
                             f"{', '.join(sorted(known))}")
        values.update(loaded)
    values.update({key: value for key, value in overrides.items() if value is not None})
    where = f"--cluster {path}" if path else "--slurm_*"
    for key, value in values.items():
        flag = "--runs_per_gpu" if key == "runs_per_gpu" else f"--slurm_{key}"
        source = flag if overrides.get(key) is not None else f"{where}: {key}"
        if key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < _INT_KEYS[key]:
                raise UsageError(f"{source}: expected an integer >= {_INT_KEYS[key]}, got {value!r}")
        elif key == "mem_gb":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"{source}: expected a number of GB > 0, got {value!r}")
        elif key == "setup":
            if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
                raise UsageError(f"{source}: expected a list of shell lines, got {value!r}")
        elif value is not None and not isinstance(value, str):
            raise UsageError(f"{source}: expected a string, got {value!r}")
    return ClusterSettings(**values)


# -- the SLURM launcher --------------------------------------------------------------------------------


class Pack:
    """The payload of one SLURM job: its calls, run side by side on the job's GPUs (``runs_per_gpu`` > 1 on
    each), else (one call) in the job's process. submitit requeues it on preemption or timeout
    (:meth:`checkpoint`); the calls then continue from their ``--resume`` snapshots, and finished ones
    are skipped."""

    def __init__(self, calls: Sequence[Any], threads: Optional[int], runs_per_gpu: int) -> None:
        self.calls = list(calls)
        self.threads = threads
        self.runs_per_gpu = runs_per_gpu
        self.launcher: Optional[LocalLauncher] = None

    def __call__(self) -> Dict[str, Outcome]:
        todo = [call for call in self.calls if not call.done]
        if self.runs_per_gpu > 1 and len(todo) > 1:
            self.launcher = LocalLauncher(threads=self.threads, runs_per_gpu=self.runs_per_gpu,
                                          gpus=visible_gpus() or ["0"])
            outcomes = self.launcher.run(todo)
            self.launcher.close()
        else:
            outcomes = {call: attempt(call, self.threads) for call in todo}
        return {str(call.save_dir): outcome for call, outcome in outcomes.items()}

    def checkpoint(self):
        """Requeue the same pack (submitit calls this on SLURM's warning signal); the workers are killed
        now, so the requeued job does not wait for them."""
        import submitit

        PREEMPTED.set()
        if self.launcher is not None:
            self.launcher.stop(kill=True)
        return submitit.helpers.DelayedSubmission(Pack(self.calls, self.threads, self.runs_per_gpu))

    def __getstate__(self):
        return {**self.__dict__, "launcher": None}


def require_slurm(dry_run: bool = False) -> None:
    """One line when submitit is not installed, or (unless ``dry_run``) ``sbatch`` is not on PATH."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -e '.[cluster]' (or pip install "
                         "submitit); or use --launcher local") from None
    if not dry_run and shutil.which("sbatch") is None:
        raise UsageError("--launcher slurm: sbatch is not on PATH (run this on a SLURM login node, or use "
                         "--launcher local)")


class SlurmLauncher:
    """Submits calls as SLURM jobs through submitit and waits for them (see the module's docstring).

    ``poll_seconds`` is how often job results are looked for; submitit asks ``sacct`` for states at most
    every ``sacct_seconds``.
    """

    name = "slurm"

    def __init__(self, settings: ClusterSettings, folder: Path, threads: Optional[int] = None,
                 dry_run: bool = False, log=print, poll_seconds: float = 2.0, sacct_seconds: float = 60.0) -> None:
        require_slurm(dry_run)
        self.settings = settings
        self.folder = Path(settings.folder or folder).absolute()
        self.threads = threads
        self.dry_run = dry_run
        self.log = log
        self.poll_seconds = poll_seconds
        self.sacct_seconds = sacct_seconds

    def packs(self, calls: Sequence[Any]) -> List[List[Any]]:
        size = self.settings.pack
        return [list(calls[i:i + size]) for i in range(0, len(calls), size)]

    def sbatch_script(self, jobs: int) -> str:
        """The sbatch script submitit writes for ``jobs`` jobs (an array when more than one)."""
        from submitit.slurm import slurm

        executor_folder = self.folder / "%j"
        command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit",
                            shlex.quote(str(executor_folder))])
        parameters = self.settings.sbatch_parameters()
        return slurm._make_sbatch_string(command=command, folder=executor_folder,
                                         map_count=jobs if jobs > 1 else None, **parameters)

    def describe(self, calls: Sequence[Any]) -> str:
        """The dry run's text: the sbatch script and, per job, its calls."""
        packs = self.packs(calls)
        lines = [f"# {len(calls)} runs in {len(packs)} SLURM job(s) of {self.settings.gpus} GPU(s) and up to "
                 f"{self.settings.pack} run(s) each",
                 self.sbatch_script(len(packs)), "# jobs"]
        for index, pack in enumerate(packs):
            for call in pack:
                argument = " ".join(map(str, call.argument)) if isinstance(call.argument, tuple) else call.argument
                lines.append(f"{index}\t{call.save_dir}\t{call.target} {argument}")
        return "\n".join(lines)

    def run(self, calls: Sequence[Any]) -> Dict[Any, Outcome]:
        if not calls:
            return {}
        if self.dry_run:
            print(self.describe(calls), flush=True)
            raise DryRun()
        import submitit
        from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

        SlurmJob.watcher = SlurmInfoWatcher(delay_s=int(self.sacct_seconds))
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=self.settings.max_requeues)
        executor.update_parameters(**self.settings.sbatch_parameters())
        packs = self.packs(calls)
        with executor.batch():
            jobs = [executor.submit(Pack(pack, self.threads, self.settings.runs_per_gpu)) for pack in packs]
        ids = sorted({job.job_id.split("_")[0] for job in jobs})
        self.log(f"submitted {len(calls)} runs as {len(jobs)} SLURM job(s) ({', '.join(ids)}); logs in {self.folder}")
        outcomes: Dict[Any, Outcome] = {}
        waiting = dict(zip(jobs, packs))
        while waiting:
            for job in [job for job in waiting if job.done()]:
                pack = waiting.pop(job)
                outcomes.update(self.collect(job, pack))
            if waiting:
                time.sleep(self.poll_seconds)
        return outcomes

    def collect(self, job, pack: Sequence[Any]) -> Dict[Any, Outcome]:
        """The outcomes of a finished job's calls; a job that failed as a whole fails each unfinished call
        with the job's log."""
        try:
            by_folder = job.result()
        except Exception as error:  # noqa: BLE001 -- submitit's FailedJobError / UncompletedJobError
            log = str(job.paths.stderr)
            return {call: Outcome(error=tail(str(error)), log=log) for call in pack if not call.done}
        outcomes = {}
        for call in pack:
            outcome = by_folder.get(str(call.save_dir))
            if outcome is None and not call.done:
                outcome = Outcome(error="the job ended without running this call", log=str(job.paths.stderr))
            outcomes[call] = outcome or Outcome(seconds=0.0)
        return outcomes

    def close(self) -> None:
        pass


class DryRun(Exception):
    """Raised after a dry run printed what it would submit; the caller stops there (status 0)."""


# -- the command line --------------------------------------------------------------------------------


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and its settings, for every script that runs many runs."""
    group = parser.add_argument_group("launcher", "where the runs execute (see README: Running on a cluster)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local (default): this machine; slurm: SLURM jobs through submitit")
    group.add_argument("--runs_per_gpu", type=int, default=None,
                       help="runs side by side on each GPU (local: over the visible GPUs; slurm: packed into "
                            "one job); default 1, or from --run_memory_gb")
    group.add_argument("--run_memory_gb", type=float, default=None,
                       help="measured GPU memory of one run: --runs_per_gpu = floor(0.9 x GPU memory / this)")
    group.add_argument("--gpu_memory_gb", type=float, default=None,
                       help="GPU memory for --run_memory_gb (default: the first visible GPU's; 80 on slurm)")
    group.add_argument("--cluster", help="YAML file of SLURM settings (keys as the --slurm_* flags)")
    group.add_argument("--dry_run", action="store_true",
                       help="slurm: print the sbatch script and the job list, submit nothing")
    for name in ("partition", "account", "qos"):
        group.add_argument(f"--slurm_{name}", default=None)
    group.add_argument("--slurm_time", type=int, default=None, help="minutes per job (240)")
    group.add_argument("--slurm_gpus", type=int, default=None, help="GPUs per job (1)")
    group.add_argument("--slurm_cpus", type=int, default=None, help="CPUs per job (8)")
    group.add_argument("--slurm_mem_gb", type=float, default=None, help="memory per job in GB (32)")
    group.add_argument("--slurm_array_parallelism", type=int, default=None, help="array jobs at once (64)")
    group.add_argument("--slurm_setup", action="append", default=None,
                       help="a shell line run before each job (repeatable), e.g. 'source ~/venv/bin/activate'")


def runs_per_gpu(args: argparse.Namespace) -> int:
    """``--runs_per_gpu``, or the count :func:`runs_per_gpu_from_memory` gives for ``--run_memory_gb``; 0
    when neither is given (no GPU pinning)."""
    if args.runs_per_gpu is not None:
        if args.runs_per_gpu < 1:
            raise UsageError(f"--runs_per_gpu: expected an integer >= 1, got {args.runs_per_gpu}")
        return args.runs_per_gpu
    if args.run_memory_gb is None:
        return 0
    if not args.run_memory_gb > 0:
        raise UsageError(f"--run_memory_gb: expected a number > 0, got {args.run_memory_gb}")
    memory = args.gpu_memory_gb
    if memory is None and args.launcher == "slurm":
        memory = 80.0
    if memory is None:
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--run_memory_gb: no CUDA GPU is visible; give --gpu_memory_gb or --runs_per_gpu")
        memory = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    return runs_per_gpu_from_memory(args.run_memory_gb, memory)


def launcher_from_args(args: argparse.Namespace, out: Path, jobs: int = 1, threads: Optional[int] = None, log=print):
    """The launcher the flags of :func:`add_launcher_arguments` ask for (SLURM logs under ``out/slurm``)."""
    per_gpu = runs_per_gpu(args)
    if args.launcher == "local":
        if args.dry_run:
            raise UsageError("--dry_run: only with --launcher slurm (a local run has no job script to show)")
        return LocalLauncher(jobs, threads, runs_per_gpu=per_gpu)
    overrides = {name: getattr(args, f"slurm_{name}") for name in
                 ("partition", "account", "qos", "time", "gpus", "cpus", "mem_gb", "array_parallelism", "setup")}
    overrides["runs_per_gpu"] = per_gpu or None
    settings = cluster_settings(args.cluster, overrides)
    return SlurmLauncher(settings, Path(out) / "slurm", threads, dry_run=args.dry_run, log=log)


_current: List[Any] = []


@contextlib.contextmanager
def using(launcher) -> Iterator[Any]:
    """Make ``launcher`` the one every :class:`common.evidence_runs.Runner` created inside the block uses
    (a benchmark's runners are built deep inside it); closes it on leaving."""
    _current.append(launcher)
    try:
        yield launcher
    finally:
        _current.pop()
        launcher.close()


def configured():
    """The launcher of the innermost :func:`using` block, or None."""
    return _current[-1] if _current else None
