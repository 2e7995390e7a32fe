"""Joint steps with DualOptim: one batch holds both sets, each objective's state steps on its own gradient.

A joint-loss unlearning step minimises ``L = gamma * L_f + alpha * L_r`` on a batch that holds forget and
retain examples. One optimizer state fed ``grad L`` mixes the two objectives' statistics; DualOptim keeps
them apart. :class:`SplitGradients` accumulates the two terms' gradients separately over a step's
micro-batches and steps the optimizer once per objective, both at the weights the gradients were taken at:

.. math::
    g_f = \\nabla_\\theta (\\gamma L_f)(\\theta_t), \\qquad g_r = \\nabla_\\theta (\\alpha L_r)(\\theta_t) \\\\
    \\theta' = \\mathrm{Opt}_f(\\theta_t, g_f; s_f), \\qquad \\theta_{t+1} = \\mathrm{Opt}_r(\\theta', g_r; s_r)

(the forget update first, then the retain update on its result; with ``DecoupledAdamW`` this is exactly two
independent ``torch.optim.AdamW``, the forget one at ``forget_lr``, stepped in that order on those
gradients; with :class:`~dualoptim.optimizers.DualOptim`, e.g. ``torch.optim.AdamW`` and ``torch.optim.SGD``
with momentum). Used by :class:`dualoptim.hf.DualOptimJointTrainerMixin` and by the project's LLM loop
(``--schedule joint``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional

import torch

from dualoptim.optimizers import set_objective

__all__ = ["SplitGradients"]


class SplitGradients:
    """The forget and retain gradients of a joint step, accumulated apart.

    Between micro-batches ``p.grad`` holds the retain sum, so the caller's usual machinery (gradient
    accumulation, clipping, ``optimizer.step()``) serves the retain objective unchanged; the forget sum
    waits here. :meth:`backward_forget` runs a backward pass into the forget sum; :meth:`forget_step`
    steps the forget state on it (clipped on its own) and leaves the retain sum in ``p.grad`` with the
    optimizer set to ``retain`` for the caller's step. Between steps the forget sum is empty, so checkpoints
    taken there hold everything. Costs one gradient-sized buffer.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.forget: Optional[List[Optional[torch.Tensor]]] = None

    def _swap(self, grads: Optional[List[Optional[torch.Tensor]]]) -> List[Optional[torch.Tensor]]:
        """Put ``grads`` (``None``: none) in ``p.grad``; return what was there."""
        previous = [p.grad for p in self.params]
        for index, p in enumerate(self.params):
            p.grad = None if grads is None else grads[index]
        return previous

    def backward_forget(self, backward: Callable[[], Any]) -> None:
        """Run ``backward()`` (e.g. ``accelerator.backward(forget_term)``) into the forget sum."""
        retain = self._swap(self.forget)
        try:
            backward()
        finally:
            self.forget = self._swap(retain)

    def forget_step(self, optimizer, clip: Callable[[], Any]) -> None:
        """Step ``optimizer``'s forget state on the forget sum (after ``clip()``, which clips ``p.grad`` as the
        caller clips the retain sum), then put the retain sum back in ``p.grad`` for the caller's retain step.

        ``optimizer``: a :class:`~dualoptim.optimizers.DualOptim` (image models: AdamW forget state, SGD
        momentum retain state; its ``forget_step()`` runs, the caller then runs ``retain_step()``), or one
        torch optimizer with an objective per param group such as ``DecoupledAdamW``, possibly wrapped
        (``set_objective`` picks ``forget`` for this step and ``retain`` for the caller's ``step()``).
        """
        two_optimizers = hasattr(optimizer, "forget_step")
        retain = self._swap(self.forget)
        self.forget = None
        try:
            clip()
            if two_optimizers:
                optimizer.forget_step()
            else:
                set_objective(optimizer, "forget")
                optimizer.step()
        finally:
            self._swap(retain)
            if not two_optimizers:
                set_objective(optimizer, "retain")
