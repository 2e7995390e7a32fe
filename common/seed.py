"""Seeding of every random number generator a run touches."""
from __future__ import annotations

import argparse
import os
import random

import numpy as np
import torch


DETERMINISTIC_HELP = ("ask torch for deterministic CUDA kernels (cuDNN, cuBLAS, math attention): bitwise "
                      "reruns on the same GPU, slower; CPU runs are bitwise reproducible without it")


def add_seed_args(parser: argparse.ArgumentParser, default: int) -> None:
    """``--seed`` (default ``default``) and ``--deterministic``."""
    parser.add_argument("--seed", type=int, default=default, help="seed of every random number generator")
    parser.add_argument("--deterministic", action="store_true", help=DETERMINISTIC_HELP)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    On CPU a fixed seed and thread count already give bitwise-identical runs.
    ``deterministic`` (``--deterministic``) switches the process to deterministic
    CUDA kernels for the rest of its life: cuDNN without benchmarking and with
    deterministic algorithms, cuBLAS with a fixed workspace, deterministic
    ``index_add``/``scatter`` and friends (``torch.use_deterministic_algorithms``),
    and the math backend of ``scaled_dot_product_attention`` -- the fused
    flash / memory-efficient / cuDNN attention backward passes accumulate with
    atomics.  Ops that have no deterministic CUDA kernel still run, with a
    warning (``warn_only``), rather than stop the run.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        # read when cuBLAS creates its handle, i.e. before the first CUDA matmul of the process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):  # torch >= 2.3 has a cuDNN attention backend
            torch.backends.cuda.enable_cudnn_sdp(False)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: derive NumPy/Python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for DataLoader shuffling, independent of the global RNG."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
