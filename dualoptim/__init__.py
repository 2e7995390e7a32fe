"""DualOptim: separate optimizer states for the forget and retain objectives of machine unlearning.

    from dualoptim import DualOptim, DecoupledAdamW, make_unlearn_optimizer, set_objective

* :class:`TwoObjectiveOptimizer` -- the interface of every optimizer below that steps two objectives
  (``forget_step`` / ``retain_step`` / ``optimizers`` / ``is_dual`` / ``state_dict``); one module per family in
  :mod:`dualoptim.optim`;
* :class:`DualOptim` -- an adaptive optimizer for forget steps and SGD (or another) for retain steps, over the
  same parameters, each with its own state (``forget_step()`` / ``retain_step()``);
* :class:`DecoupledAdamW` -- one ``torch.optim.Optimizer`` with AdamW moments per objective, for code that
  needs a single torch optimizer (LLM trainers, DeepSpeed); :func:`set_objective` picks the next step's;
* :class:`DecoupledAdamW8bit` -- the same with bitsandbytes' 8-bit moments (needs ``pip install bitsandbytes``;
  imported on first use);
* :class:`PairedOptimizer` -- two torch optimizers behind one, each step routed by :func:`set_objective` (the
  LLM's learning-rate-free recipes: Prodigy or schedule-free AdamW forget, AdamW retain);
* :func:`evaluation_weights` -- a block in which a schedule-free optimizer's average, the weights to
  evaluate or save, is in the parameters (a no-op for other optimizers);
* :func:`moment_norms`, :func:`step_size_estimates` -- the norm of every moment buffer and Prodigy's step
  size :math:`d`, by objective (what ``--report_to`` logs);
* :func:`make_unlearn_optimizer` -- the image-classification ``--optim`` recipes (``sgd``, ``adam``, ``dual``,
  the paper's ablation pairs, the learning-rate-free ``dual_prodigy`` / ``dual_sf``) by name;
  :mod:`dualoptim.recipes` has them all;
* :class:`DualOptimTrainerMixin` / :class:`DualOptimJointTrainerMixin` -- make a Hugging Face ``Trainer`` subclass
  step DualOptim, one objective per micro-batch / joint-loss batches as open-unlearning's trainers take them
  (:mod:`dualoptim.hf`; imported on first use, needs ``transformers``); :mod:`dualoptim.joint` splits a joint
  step's gradients for a loop of your own.

This package needs only torch. The research scripts of the repository (``ImageClassification/``, ``LLM/``,
``ImageGeneration/``, ``common/``) build on it.
"""
from __future__ import annotations

import importlib
from typing import Any

from dualoptim.errors import UsageError
from dualoptim.optim import (DecoupledAdamW, DualOptim, HybridAdamSGD, Lion, ObjectiveOptim, PairedOptimizer,
                             PerObjectiveState, SharedOptim, TwoObjectiveOptimizer, evaluation_weights, moment_norms,
                             set_objective, step_size_estimates)
from dualoptim.recipes import make_unlearn_optimizer

__version__ = "0.1.0"
__all__ = ["DecoupledAdamW", "DecoupledAdamW8bit", "DualOptim", "DualOptimJointTrainerMixin", "DualOptimTrainerMixin",
           "HybridAdamSGD", "Lion", "ObjectiveOptim", "PairedOptimizer", "PerObjectiveState", "SharedOptim",
           "TwoObjectiveOptimizer", "UsageError", "evaluation_weights", "make_unlearn_optimizer", "moment_norms",
           "set_objective", "step_size_estimates", "__version__"]

#: names imported on first use: their modules need optional packages (bitsandbytes, transformers)
_LAZY = {"DecoupledAdamW8bit": "dualoptim.optimizers_8bit", "DualOptimTrainerMixin": "dualoptim.hf",
         "DualOptimJointTrainerMixin": "dualoptim.hf"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
