"""Tiny models and data shared by the test folders, built on the fly (no downloads).

TOFU-like data and a tiny random Llama (LLM tests), a tiny DiT with its VAE and
an ImageFolder tree (DiT tests), an untrained digits ResNet-20 checkpoint and a
tiny digits DDPM config and run folder; the bad-input and determinism tests use
them all.  ``launch_two_processes`` runs a script under ``accelerate launch`` with 2 CPU processes;
``killed_run`` and ``one_thread`` serve the resume tests.
Heavy libraries are imported inside the fixtures so tests that need none of
them do not pay for the imports.
"""
from __future__ import annotations

import os
import re
import signal
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

def pytest_configure(config):
    """Put this interpreter's folder first on PATH, so that the bash sweeps and every subprocess that
    calls a bare ``python`` run the interpreter (and virtual environment) that runs the tests, even
    when that environment was never activated (``/some/venv/bin/python -m pytest``)."""
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def tofu_dir(tmp_path_factory) -> Path:
    from LLM.tiny import make_tofu
    return make_tofu(tmp_path_factory.mktemp("tofu"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tofu_dir) -> Path:
    from LLM.tiny import build_tiny_llama, corpus
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), corpus(tofu_dir), hidden_size=32,
                            num_layers=2, vocab_size=300)


def real_world_eval_row(row):
    """A perturbed-set row in the real-world layout, where the ground truth is ``golden_answer``."""
    return {"question": row["question"], "answer": row["answer"], "golden_answer": row["answer"],
            "paraphrased_answer": row["paraphrased_answer"], "perturbed_answer": row["perturbed_answer"]}


@pytest.fixture(scope="session")
def real_world_dir(tmp_path_factory) -> Path:
    """Real-world layout: forget (authors 0-1, 4 rows), neighbor (authors 2-4, 6 rows), their perturbed sets."""
    from LLM.tiny import qa_rows, write_jsonl
    root = tmp_path_factory.mktemp("real_world")
    forget = qa_rows(0) + qa_rows(1)
    neighbor = qa_rows(2) + qa_rows(3) + qa_rows(4)
    write_jsonl(root / "forget.json", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    write_jsonl(root / "neighbor.json", [{"question": r["question"], "answer": r["answer"]} for r in neighbor])
    write_jsonl(root / "forget_perturbed.json", [real_world_eval_row(r) for r in forget])
    write_jsonl(root / "neighbor_perturbed.json", [real_world_eval_row(r) for r in neighbor[:3]])
    (root / "idontknow.jsonl").write_text("I don't know.\nNo idea, sorry.\n", encoding="utf-8")
    return root


@pytest.fixture
def run_error(capsys):
    """Call a script's ``main(argv)`` expecting a usage error; returns its one-line message."""
    def run(main, argv):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err
    return run


DIT_CLASSES = 3


@pytest.fixture(scope="session")
def tiny_dit(tmp_path_factory) -> Path:
    """A 16x16-pixel, 8x8-latent DiT over 3 classes in the hub layout (``ckpt/transformer``, ``ckpt/vae``)
    and an ImageNet-root tree ``data/train/class_<k>/`` of three random 20x20 images per class."""
    from ImageGeneration.tiny import build_tiny_dit
    return build_tiny_dit(tmp_path_factory.mktemp("dit"), DIT_CLASSES)


@pytest.fixture(scope="session")
def digits_resnet20s(tmp_path_factory) -> Path:
    """An untrained ``--arch resnet20s`` checkpoint for ``--dataset digits`` (a valid ``--model_path``)."""
    from ImageClassification.models import save_untrained_digits_model
    return save_untrained_digits_model(tmp_path_factory.mktemp("digits_resnet20s") / "0model_SA_best.pth.tar")


@pytest.fixture(scope="session")
def tiny_ddpm_config(tmp_path_factory) -> Path:
    """The shipped digits DDPM config shrunk to an 8x8, 8-channel UNet, 10 diffusion steps and 2 iterations."""
    from ImageGeneration.tiny import write_tiny_ddpm_config
    return write_tiny_ddpm_config(tmp_path_factory.mktemp("ddpm_config") / "tiny_digits.yml")


@pytest.fixture(scope="session")
def tiny_ddpm_run(tmp_path_factory, tiny_ddpm_config) -> Path:
    """A run folder (``ckpts/ckpt.pth``) of an untrained :func:`tiny_ddpm_config` DDPM on all 10 digits."""
    from ImageGeneration.tiny import write_untrained_ddpm_run
    return write_untrained_ddpm_run(tmp_path_factory.mktemp("ddpm_run"), tiny_ddpm_config)


# --------------------------------------------------------------------------- multi-process launches

REPO = Path(__file__).resolve().parents[1]


#: torchrun's report that the first worker to fail was killed by a signal ("Root Cause ... exitcode  : -6");
#: a worker that raised has a positive exit code there (its sibling, stopped by torchrun, is listed apart).
WORKER_SIGNAL_DEATH = re.compile(r"Root Cause \(first observed failure\):(?:\n(?!.*exitcode).*)*\n.*exitcode\s*:\s*-\d+")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clear_outputs(args: Sequence[str]) -> None:
    """Remove what a dead launch wrote into its output folder (``--save_dir``, ``--exp_root``), so the retry starts
    as the test did: a dead attempt can leave finished files (a best model saved after epoch 1), which the
    script then refuses to overwrite. A ``--resume`` launch keeps its folder: the snapshot there is its input."""
    if "--resume" in args:
        return
    for flag in ("--save_dir", "--exp_root"):
        if flag in args:
            shutil.rmtree(args[list(args).index(flag) + 1], ignore_errors=True)


def launch_two_cpu_processes(script: str, args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run the repository's ``script`` under ``accelerate launch`` with 2 CPU processes; assert it succeeds.

    accelerate 1.x's ``--cpu`` flag always starts a single process, so the two processes are
    launched with ``--multi_gpu`` on a machine without GPUs (``--device cpu`` then selects gloo).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO / script), *map(str, args)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for attempt in range(3):
        if attempt:
            clear_outputs(args)
        command[command.index("--main_process_port") + 1] = str(free_port())
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        # A gloo worker was seen to abort (SIGABRT) during a launch on a loaded 2-core machine. The
        # launcher then exits with 1 and reports the worker's negative exit code, so a worker's signal
        # death (never a Python error) is retried, twice at most.
        if result.returncode == 0 or not WORKER_SIGNAL_DEATH.search(result.stderr):
            break
    errors = [line for line in result.stderr.splitlines() if "it/s" not in line]
    assert result.returncode == 0, f"attempt {attempt + 1}:\n" + "\n".join(errors[-60:])
    return result


@pytest.fixture(scope="session")
def launch_two_processes():
    """:func:`launch_two_cpu_processes`, for tests that compare a 2-process run with one process."""
    return launch_two_cpu_processes


# --------------------------------------------------------------------------- resume tests

@pytest.fixture
def killed_run():
    """``run(module, argv, kill_at)``: ``python -m module argv`` in a new process that SIGKILLs itself
    right after its ``kill_at``-th optimizer step (the test hook of :mod:`common.checkpointing`)."""
    from common.checkpointing import KILL_AT_STEP_ENV

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
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
