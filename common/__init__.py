"""Shared code of the DualOptim toolkit: optimizers, devices, seeding, I/O and CLI helpers."""
import logging

# diffusers and peft import bitsandbytes whenever it is installed (it is in the test extra); on CPUs with
# AVX512-BF16 its import then logs a warning about the optional `kernels` package (4-bit CPU matmuls, unused
# here), a second stderr line under every script's one-line errors. Every entry script imports `common` first.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
from dualoptim import DecoupledAdamW, DualOptim, SharedOptim, __version__, make_unlearn_optimizer, set_objective

__all__ = ["DecoupledAdamW", "DualOptim", "SharedOptim", "make_unlearn_optimizer", "set_objective",
           "__version__"]
