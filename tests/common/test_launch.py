"""The launchers (common/launch.py) and the sweep module (common/sweep.py): real processes on this machine,
and SLURM through fake sbatch/srun/sacct/scancel/scontrol commands (tests/fake_slurm) that run the jobs here."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.errors import UsageError
from common.evidence_runs import Call, Runner, RunsFailed
from common.launch import ClusterSettings, LocalLauncher, SlurmLauncher, cluster_settings, runs_per_gpu_from_memory

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
FAKE_SLURM = TESTS / "fake_slurm"


def count_call(out: Path, name: str, steps: int, pause: float) -> Call:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    return Call("launch_targets:count", (str(folder), steps, pause), folder)


def starts(call: Call):
    """``(pid, first step)`` of each start of a launch_targets run."""
    return [tuple(map(int, line.split())) for line in (call.save_dir / "starts.txt").read_text().splitlines()]


def children(pid: int):
    """The live processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def worker_pids(out: Path):
    """The processes that have started a run under ``out``."""
    return {line.split()[0] for path in out.glob("*/starts.txt") for line in path.read_text().splitlines()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


DRIVER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from pathlib import Path
    from common.evidence_runs import Call, Runner
    if __name__ == "__main__":  # the spawned workers import this file too
        out = Path(sys.argv[1])
        calls = []
        for name, steps in (("quick", 2), ("long", 60), ("third", 4), ("fourth", 4)):
            (out / name).mkdir(parents=True, exist_ok=True)
            calls.append(Call("launch_targets:count", (str(out / name), steps, 0.1), out / name))
        with Runner(out, jobs=2) as runner:
            runner.run(calls)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_sweep_killed_with_kill_9_leaves_no_worker_and_restarts_where_it_stopped(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO), tests=str(TESTS)))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(driver), str(out)])
    long_snapshot = out / "long" / "snapshot.txt"
    deadline = time.time() + 120
    # both workers at work (each has started a run), the long run in progress and the quick one finished
    while not (long_snapshot.exists() and int(long_snapshot.read_text() or 0) >= 3
               and (out / "quick" / "run.json").exists() and len(worker_pids(out)) == 2):
        assert process.poll() is None and time.time() < deadline, "the sweep did not get going"
        time.sleep(0.05)
    workers = children(process.pid)
    assert len(workers) >= 2  # two pool workers (and multiprocessing's resource tracker)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 5
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its runner by 5 s"
    assert not (out / "long" / "run.json").exists()
    stopped_at = int(long_snapshot.read_text())
    time.sleep(0.5)
    assert int(long_snapshot.read_text()) == stopped_at, "the killed run kept counting"

    subprocess.run([sys.executable, str(driver), str(out)], check=True, timeout=300)
    calls = {name: Call("launch_targets:count", None, out / name) for name in ("quick", "long", "third", "fourth")}
    assert all(call.done for call in calls.values())
    assert len(starts(calls["quick"])) == 1, "a finished run ran again"
    (_, first), (_, resumed) = starts(calls["long"])
    assert first == 0 and resumed == stopped_at  # continued from its snapshot, not from the start
    assert json.loads((out / "long" / "run.json").read_text())["steps"] == 60


@pytest.mark.slow
def test_runs_per_gpu_pins_each_worker_to_one_gpu(tmp_path):
    launcher = LocalLauncher(runs_per_gpu=2, gpus=["3", "5"])
    assert launcher.jobs == 4 and launcher.slots == ["3", "3", "5", "5"]
    calls = [count_call(tmp_path, f"run{i}", 2, 0.2) for i in range(8)]
    try:
        outcomes = launcher.run(calls)
    finally:
        launcher.close()
    assert not any(outcome.failed for outcome in outcomes.values())
    gpu_of = {}
    for call in calls:
        gpu = json.loads((call.save_dir / "run.json").read_text())["gpu"]
        for pid, _ in starts(call):
            assert gpu_of.setdefault(pid, gpu) == gpu  # a worker keeps its GPU
    per_gpu = {gpu: sum(1 for value in gpu_of.values() if value == gpu) for gpu in ("3", "5")}
    assert set(gpu_of.values()) <= {"3", "5"} and max(per_gpu.values()) <= 2


def test_runs_per_gpu_from_a_measured_memory():
    assert runs_per_gpu_from_memory(run_memory_gb=4.0, gpu_memory_gb=80.0) == 18   # floor(0.9 * 80 / 4)
    assert runs_per_gpu_from_memory(run_memory_gb=30.0, gpu_memory_gb=24.0) == 1   # never 0


def test_runs_per_gpu_without_a_gpu_is_one_line():
    with pytest.raises(UsageError, match="--runs_per_gpu: no CUDA GPU"):
        LocalLauncher(runs_per_gpu=2, gpus=[])


def test_a_failed_run_is_reported_after_the_others_of_its_batch(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    calls = [Call("launch_targets:fail", (str(bad),), bad), count_call(tmp_path, "good", 1, 0.0)]
    with Runner(tmp_path) as runner, pytest.raises(RunsFailed) as error:
        runner.run(calls)
    assert calls[1].done, "the good run ran although the bad one failed first"
    message = str(error.value)
    assert message.startswith("1 of 2 runs failed:") and f"log: {bad / 'log.txt'}" in message
    assert "RuntimeError: run" in message and "about to fail" in message
    assert "broke on purpose" in (bad / "log.txt").read_text()


# -- SLURM ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """The fake SLURM commands on PATH, their state under tmp_path/slurm_state."""
    pytest.importorskip("submitit")
    state = tmp_path / "slurm_state"
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    return state


def submissions(state: Path):
    return [json.loads(line) for line in (state / "submissions.jsonl").read_text().splitlines()]


def slurm_launcher(tmp_path, **settings) -> SlurmLauncher:
    # the jobs import the run functions from tests/ (the launcher adds the checkout itself)
    settings = ClusterSettings(setup=[f"export PYTHONPATH={TESTS}"], **settings)
    return SlurmLauncher(settings, tmp_path / "slurm", poll_seconds=0.2, sacct_seconds=1)


def test_slurm_array_with_a_preempted_and_a_failed_job(tmp_path, fake_slurm):
    bad, preempted = tmp_path / "bad", tmp_path / "preempted"
    bad.mkdir()
    preempted.mkdir()
    calls = [count_call(tmp_path, "good", 2, 0.0), Call("launch_targets:fail", (str(bad),), bad),
             Call("launch_targets:preempted_once", (str(preempted),), preempted)]
    outcomes = slurm_launcher(tmp_path, partition="gpu", account="lab").run(calls)
    # one submission: an array of 3 jobs, with the settings
    (submitted,) = submissions(fake_slurm)
    script = submitted["script"]
    assert "#SBATCH --array=0-2%3" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --account=lab" in script and "#SBATCH --signal=USR2@90" in script
    assert not outcomes[calls[0]].failed and calls[0].done
    # the failed job: its log and last error lines; the others went on
    assert outcomes[calls[1]].failed and outcomes[calls[1]].log == str(bad / "log.txt")
    assert "broke on purpose" in outcomes[calls[1]].error
    # the preempted job was requeued and continued from its snapshot
    assert not outcomes[calls[2]].failed and calls[2].done
    assert [step for _, step in starts(calls[2])] == [0, 1]
    assert json.loads((preempted / "run.json").read_text())["steps"] == 1

    # a restart submits only what is not done, whichever launcher finished the rest
    runner = Runner(tmp_path, launcher=slurm_launcher(tmp_path))
    with pytest.raises(RunsFailed, match="1 of 1 runs failed"):
        runner.run(calls)
    assert "--array" not in submissions(fake_slurm)[-1]["script"] and len(submissions(fake_slurm)) == 2
    assert len(starts(calls[0])) == 1
    # and the local launcher takes over without rerunning what the SLURM jobs finished
    Runner(tmp_path).run([calls[0], calls[2]])
    assert len(starts(calls[0])) == 1 and len(starts(calls[2])) == 2


@pytest.mark.slow
def test_slurm_packs_runs_per_gpu_into_one_job(tmp_path, fake_slurm):
    calls = [count_call(tmp_path, f"run{i}", 3, 0.1) for i in range(4)]
    outcomes = slurm_launcher(tmp_path, runs_per_gpu=2).run(calls)
    assert not any(outcome.failed for outcome in outcomes.values()) and all(call.done for call in calls)
    (submitted,) = submissions(fake_slurm)
    assert "#SBATCH --array=0-1%2" in submitted["script"]  # 4 runs, 2 per job
    assert {json.loads((call.save_dir / "run.json").read_text())["gpu"] for call in calls} == {"0"}


def test_dry_run_prints_the_sbatch_script_and_the_jobs(tmp_path, capsys):
    pytest.importorskip("submitit")
    from common.launch import DryRun

    calls = [count_call(tmp_path, f"run{i}", 1, 0.0) for i in range(5)]
    settings = cluster_settings(None, {"partition": "gpu", "qos": "high", "time": 600, "gpus": 2, "runs_per_gpu": 2,
                                       "mem_gb": 64, "setup": ["module load cuda"]})
    launcher = SlurmLauncher(settings, tmp_path / "slurm", dry_run=True)
    with pytest.raises(DryRun):
        launcher.run(calls)
    text = capsys.readouterr().out
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --time=600",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --mem=64GB", "module load cuda",
                 f"export PYTHONPATH={REPO}", "-m submitit.core._submit"):
        assert line in text, line
    jobs = text.split("# jobs\n")[1].splitlines()
    assert [line.split("\t")[:2] for line in jobs] == [[str(i // 4), str(tmp_path / f"run{i}")] for i in range(5)]
    assert not (tmp_path / "slurm").exists(), "a dry run submits nothing"


def test_benchmark_dry_run_and_missing_sbatch(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    from benchmarks import ic_unlearning

    with pytest.raises(SystemExit) as exit_:
        ic_unlearning.main(["--preset", "demo_quick", "--out", str(tmp_path), "--launcher", "slurm", "--dry_run",
                            "--slurm_partition", "gpu"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "#SBATCH --partition=gpu" in out and "ImageClassification.main_train:main" in out
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(SystemExit) as exit_:
        ic_unlearning.main(["--preset", "demo_quick", "--out", str(tmp_path), "--launcher", "slurm"])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(error) == 1 and "sbatch is not on PATH" in error[0]


def test_missing_submitit_is_one_line(monkeypatch):
    from common.launch import require_slurm

    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match=r"needs submitit: pip install -e '.\[cluster\]'"):
        require_slurm()


@pytest.mark.parametrize("text, message", [
    ("partition: [a]\n", "partition: expected a string"),
    ("gpus: -1\n", "gpus: expected an integer >= 0"),
    ("mem_gb: lots\n", "mem_gb: expected a number of GB"),
    ("setup: module load cuda\n", "setup: expected a list of shell lines"),
    ("partitoin: gpu\n", "unknown key(s) partitoin"),
    ("- gpu\n", "expected a mapping"),
])
def test_bad_cluster_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=f"--cluster {path}") as error:
        cluster_settings(str(path), {})
    assert message in str(error.value)


def test_cluster_file_and_flags(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: gpu\naccount: lab\ntime: 720\nsetup: [source ~/venv/bin/activate]\n")
    settings = cluster_settings(str(path), {"time": 60, "account": None})
    assert (settings.partition, settings.account, settings.time, settings.setup) == \
        ("gpu", "lab", 60, ["source ~/venv/bin/activate"])  # a flag given wins, one not given does not


# -- the sweep module --------------------------------------------------------------------------------


def test_sweep_runs_a_jobs_file_skips_done_jobs_and_reports_failures(tmp_path, capsys):
    from common import sweep

    good, bad = tmp_path / "good", tmp_path / "bad"
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{good} out.txt bash -c 'echo one >> {good}/trace' --and-then "
                    f"bash -c 'echo two >> {good}/trace; touch {good}/out.txt'\n"
                    f"{bad} out.txt bash -c 'echo \"it broke\" >&2; exit 3'\n")
    with pytest.raises(SystemExit) as exit_:
        sweep.main([str(jobs)])
    assert exit_.value.code == 1
    assert (good / "trace").read_text() == "one\ntwo\n"
    err = capsys.readouterr().err
    assert "1 of 2 runs failed:" in err and f"log: {bad / 'log.txt'}" in err and "it broke" in err
    assert "exited with status 3" in err
    with pytest.raises(SystemExit):
        sweep.main([str(jobs)])
    assert "2 jobs, 1 done already, 1 to run" in capsys.readouterr().out
    assert (good / "trace").read_text() == "one\ntwo\n", "a finished job ran again"


def test_sweep_runs_repository_scripts_in_process():
    from common.sweep import module_of

    assert module_of(["python", str(REPO / "ImageClassification" / "main_forget.py"), "--seed", "1"]) == \
        "ImageClassification.main_forget"
    assert module_of(["accelerate", "launch", str(REPO / "LLM" / "main_forget.py")]) is None
    assert module_of(["python", "/elsewhere/script.py"]) is None


def test_bad_jobs_file_is_one_line(tmp_path):
    from common.sweep import read_jobs

    jobs = tmp_path / "jobs.txt"
    jobs.write_text("only_a_folder\n")
    with pytest.raises(UsageError, match=r"jobs.txt:1: expected SAVE_DIR DONE_FILE COMMAND"):
        read_jobs(jobs)


@pytest.mark.slow
def test_ic_sweep_dry_run_on_slurm(tmp_path, fake_slurm):
    """scripts/ImageClassification with LAUNCHER=slurm: the original model's job, then the runs' array."""
    env = dict(os.environ, SAVE_DIR=str(tmp_path / "runs"), DEVICE="cpu", SEEDS="1 2", LAUNCHER="slurm",
               SWEEP_FLAGS="--dry_run --slurm_partition gpu")
    result = subprocess.run(["bash", str(REPO / "scripts" / "ImageClassification" / "sfron.sh")], env=env,
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scripts = result.stderr.split("#!/bin/bash")
    assert len(scripts) == 3 and "#SBATCH --array=0-1%2" in scripts[2]
    assert "ImageClassification/main_train.py" in scripts[1]
    for seed in (1, 2):
        assert f"{tmp_path}/runs/sfron_dual_lr2e-4/seed{seed}\tcommon.sweep:run_steps" in scripts[2]
    assert not (fake_slurm / "submissions.jsonl").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_run_fails_its_run_not_the_sweep(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    launcher = LocalLauncher(jobs=2)
    try:  # (two calls: a single one would run in this process)
        call = Call("launch_targets:killed", (str(victim),), victim)
        outcomes = launcher.run([call, count_call(tmp_path, "beside", 20, 0.1)])
        assert outcomes[call].error.startswith("a worker process died") and outcomes[call].log.endswith("log.txt")
        after = count_call(tmp_path, "after", 1, 0.0)
        assert not launcher.run([after, count_call(tmp_path, "other", 1, 0.0)])[after].failed  # a fresh pool
    finally:
        launcher.close()
