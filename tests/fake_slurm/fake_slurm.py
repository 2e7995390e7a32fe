"""A stand-in for SLURM's commands that runs jobs on this machine, for the launcher tests (no cluster).

Each command (``sbatch``, ``srun``, ``sacct``, ``scancel``, ``scontrol`` in this folder) calls :func:`main`
with its own name. State lives under ``$FAKE_SLURM_DIR``: ``next_id``, ``submissions.jsonl`` (every
submitted script), and per job (``<id>`` or ``<id>_<task>`` for an array task) ``<job>.state``,
``<job>.pid`` (the running step) and ``<job>.requeue`` (asked for by ``scontrol requeue``).

* ``sbatch SCRIPT``: a new id; each array task (``#SBATCH --array=0-N%P``) runs ``bash SCRIPT`` in a
  detached process with SLURM's variables set, again after a requeue; the state ends COMPLETED or FAILED.
* ``srun [--unbuffered] [--output F] [--error F] CMD...``: CMD with its output in F (``%j %A %a %t``
  replaced), its pid recorded for ``scancel --signal``.
* ``sacct -o JobID,State,NodeList --parsable2 -j ID...``: the states of those jobs and their tasks.
* ``scancel JOB [--signal SIG]``: the signal (default: kill, state CANCELLED) to the job's step.
* ``scontrol requeue JOB``: the job runs again once its step exits.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))


def write_state(job: str, state: str) -> None:
    (STATE / f"{job}.state").write_text(state)


def sbatch(args):
    script = args[-1]
    text = Path(script).read_text()
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "next_id"
    job_id = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job_id + 1))
    with open(STATE / "submissions.jsonl", "a") as handle:
        handle.write(json.dumps({"id": job_id, "script": text}) + "\n")
    array = re.search(r"^#SBATCH --array=0-(\d+)", text, re.M)
    tasks = [str(t) for t in range(int(array.group(1)) + 1)] if array else [None]
    for task in tasks:
        job = f"{job_id}_{task}" if task is not None else str(job_id)
        write_state(job, "PENDING")
        subprocess.Popen([sys.executable, __file__, "task", str(job_id), task or "", script],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job_id}")


def task(args):
    job_id, task_index, script = args
    job = f"{job_id}_{task_index}" if task_index else job_id
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
               SLURM_NTASKS="1", SLURM_JOB_NODELIST="localhost", SLURM_JOB_NUM_NODES="1")
    if task_index:
        env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=task_index,
                   SLURM_JOB_ID=str(int(job_id) * 1000 + int(task_index)))
    env.pop("SUBMITIT_EXECUTOR", None)
    while True:
        write_state(job, "RUNNING")
        code = subprocess.run(["bash", script], env=env).returncode
        requeue = STATE / f"{job}.requeue"
        if requeue.exists():
            requeue.unlink()
            write_state(job, "PENDING")
            time.sleep(0.2)
            continue
        if (STATE / f"{job}.state").read_text() != "CANCELLED":
            write_state(job, "COMPLETED" if code == 0 else "FAILED")
        return


def srun(args):
    files = {}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            files[flag] = args.pop(0)
    names = {"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
             "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}
    for flag, stream in (("--output", 1), ("--error", 2)):
        if flag in files:
            path = files[flag]
            for key, value in names.items():
                path = path.replace(key, value)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), stream)
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    (STATE / f"{job}.pid").write_text(str(os.getpid()))
    os.execvp(args[0], args)


def sacct(args):
    wanted = [args[i + 1] for i, arg in enumerate(args) if arg == "-j"]
    print("JobID|State|NodeList")
    for path in sorted(STATE.glob("*.state")):
        job = path.name[:-len(".state")]
        if job.split("_")[0] in wanted:
            print(f"{job}|{path.read_text()}|localhost")


def scancel(args):
    job = args[0]
    name = args[args.index("--signal") + 1] if "--signal" in args else None
    pid = int((STATE / f"{job}.pid").read_text())
    if name is None:
        write_state(job, "CANCELLED")
        os.kill(pid, signal.SIGKILL)
    else:
        os.kill(pid, getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))


def scontrol(args):
    assert args[0] == "requeue", args
    (STATE / f"{args[1]}.requeue").touch()


def main(command, args):
    {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol,
     "task": task}[command](list(args))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
