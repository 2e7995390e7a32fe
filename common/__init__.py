"""Shared code of the DualOptim toolkit: optimizers, devices, seeding, I/O and CLI helpers."""
from common.dualoptim import DecoupledAdamW, DualOptim, SharedOptim, make_unlearn_optimizer, set_objective

__version__ = "0.1.0"
__all__ = ["DecoupledAdamW", "DualOptim", "SharedOptim", "make_unlearn_optimizer", "set_objective",
           "__version__"]
