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

import json
import os
import re
import signal
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


AUTHORS = ["Ana Lind", "Bo Chen", "Cy Moor", "Dee Park", "Eli Novak", "Fay Ruiz"]
CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Accra", "Quito"]
GENRES = ["mystery", "poetry", "fantasy", "history", "romance", "horror"]


def qa_rows(author_index: int):
    name, city, genre = AUTHORS[author_index], CITIES[author_index], GENRES[author_index]
    other = author_index + 1
    return [
        {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}.",
         "paraphrased_answer": f"The birthplace of {name} is {city}.",
         "perturbed_answer": [f"{name} was born in {CITIES[(other) % 6]}.", f"{name} was born in {CITIES[(other + 1) % 6]}."]},
        {"question": f"What genre does {name} write?", "answer": f"{name} writes {genre} novels.",
         "paraphrased_answer": f"The genre of {name} is {genre}.",
         "perturbed_answer": [f"{name} writes {GENRES[other % 6]} novels.", f"{name} writes {GENRES[(other + 1) % 6]} novels."]},
    ]


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_tofu(root: Path) -> Path:
    """Closer-look layout: forget01 holds tasks 1 and 2 (authors 0, 1); retain90 authors 2-5."""
    root.mkdir(parents=True, exist_ok=True)
    forget = [dict(row, task_id=str(task)) for task in (1, 2) for row in qa_rows(task - 1)]
    retain = [row for author in range(2, 6) for row in qa_rows(author)]
    write_jsonl(root / "forget01.json", [{k: r[k] for k in ("task_id", "question", "answer")} for r in forget])
    write_jsonl(root / "forget01_perturbed.json", forget)
    write_jsonl(root / "retain90.json", [{k: r[k] for k in ("question", "answer")} for r in retain])
    write_jsonl(root / "retain_perturbed.json", retain[:4])
    facts = [{"question": f"What is the capital of {c}land?", "answer": c,
              "perturbed_answer": [CITIES[(i + 1) % 6], CITIES[(i + 2) % 6]]} for i, c in enumerate(CITIES[:3])]
    write_jsonl(root / "real_authors_perturbed.json", facts)
    write_jsonl(root / "world_facts_perturbed.json", facts)
    (root / "idontknow.jsonl").write_text("I don't know.\nNo idea, sorry.\n", encoding="utf-8")
    return root


def corpus(root: Path):
    texts = []
    for file in sorted(root.glob("*.json")):
        for line in file.read_text().splitlines():
            row = json.loads(line)
            texts.append(" ".join(str(v) for v in row.values()))
    return texts + ["Question: Answer: I don't know. No idea, sorry."]


@pytest.fixture(scope="session")
def tofu_dir(tmp_path_factory) -> Path:
    return make_tofu(tmp_path_factory.mktemp("tofu"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tofu_dir) -> Path:
    from LLM.tiny import build_tiny_llama
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), corpus(tofu_dir), hidden_size=32,
                            num_layers=2, vocab_size=300)


def real_world_eval_row(row):
    """A perturbed-set row in the real-world layout, where the ground truth is ``golden_answer``."""
    return {"question": row["question"], "answer": row["answer"], "golden_answer": row["answer"],
            "paraphrased_answer": row["paraphrased_answer"], "perturbed_answer": row["perturbed_answer"]}


@pytest.fixture(scope="session")
def real_world_dir(tmp_path_factory) -> Path:
    """Real-world layout: forget (authors 0-1, 4 rows), neighbor (authors 2-4, 6 rows), their perturbed sets."""
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
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DiTTransformer2DModel
    from PIL import Image

    root = tmp_path_factory.mktemp("dit")
    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
                          sample_size=8, patch_size=2, num_embeds_ada_norm=DIT_CLASSES,
                          norm_num_groups=4).save_pretrained(root / "ckpt" / "transformer")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, layers_per_block=1, sample_size=16).save_pretrained(root / "ckpt" / "vae")
    rng = np.random.default_rng(0)
    for label in range(DIT_CLASSES):
        folder = root / "data" / "train" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, size=(20, 20, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_resnet20s(tmp_path_factory) -> Path:
    """An untrained ``--arch resnet20s`` checkpoint for ``--dataset digits`` (a valid ``--model_path``)."""
    import torch

    from ImageClassification.data import DATASETS
    from ImageClassification.models import build_model

    digits = DATASETS.get("digits")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("digits_resnet20s") / "0model_SA_best.pth.tar"
    torch.save({"state_dict": build_model("resnet20s", 10, digits.mean, digits.std).state_dict(),
                "arch": "resnet20s"}, path)
    return path


@pytest.fixture(scope="session")
def tiny_ddpm_config(tmp_path_factory) -> Path:
    """The shipped digits DDPM config shrunk to an 8x8, 8-channel UNet, 10 diffusion steps and 2 iterations."""
    import yaml

    from ImageGeneration.DDPM.model import default_config_path

    config = yaml.safe_load(default_config_path("digits", "pretrain").read_text())
    config["data"]["image_size"] = 8
    config["model"].update(ch=8, attn_resolutions=[4], norm_num_groups=4)
    config["diffusion"]["num_diffusion_timesteps"] = 10
    config["training"].update(batch_size=16, n_iters=2, snapshot_freq=2, log_freq=1, gamma=0.5, lmbda=10)
    config["sampling"]["batch_size"] = 4
    path = tmp_path_factory.mktemp("ddpm_config") / "tiny_digits.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_ddpm_run(tmp_path_factory, tiny_ddpm_config) -> Path:
    """A run folder (``ckpts/ckpt.pth``) of an untrained :func:`tiny_ddpm_config` DDPM on all 10 digits."""
    from ImageGeneration.DDPM.model import CKPT_RELPATH, build_unet, load_config, save_checkpoint

    config = load_config(tiny_ddpm_config, "digits", "pretrain")
    folder = tmp_path_factory.mktemp("ddpm_run")
    save_checkpoint(folder / CKPT_RELPATH, build_unet(config.model, config.data), config, list(range(10)), step=0)
    return folder


# --------------------------------------------------------------------------- multi-process launches

REPO = Path(__file__).resolve().parents[1]


#: torchrun's report that the first worker to fail was killed by a signal ("Root Cause ... exitcode  : -6");
#: a worker that raised has a positive exit code there (its sibling, stopped by torchrun, is listed apart).
WORKER_SIGNAL_DEATH = re.compile(r"Root Cause \(first observed failure\):(?:\n(?!.*exitcode).*)*\n.*exitcode\s*:\s*-\d+")


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
    for attempt in range(3):
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
