"""The optimizers under the path earlier releases documented: ``from common.dualoptim import DualOptim``.

They live in the :mod:`dualoptim` package (``from dualoptim import DualOptim``), which installs on its own.
"""
from dualoptim.optimizers import *  # noqa: F401,F403
from dualoptim.optimizers import __all__ as _optimizers
from dualoptim.recipes import make_unlearn_optimizer  # noqa: F401

__all__ = [*_optimizers, "make_unlearn_optimizer"]
