"""Weight projections applied after every optimizer step: pruning masks and RL_proximal's shrinkage.

The research code's pruning methods keep pruned convolution weights at zero
with ``torch.nn.utils.prune`` hooks, and its ``RL_proximal`` pulls the
weights back towards an anchor after every step.  Both are maps applied to
the weights after each update, so here they are one mechanism:
:func:`after_each_step` registers a projection as a step post-hook on every
optimizer of a run's :class:`~dualoptim.optim.base.TwoObjectiveOptimizer` (a step skipped by
the ``--amp`` loss scaler is not followed by one).

Pruned weights are kept exactly zero (not hidden behind a mask), so the state
dict keeps the architecture's keys and a resumed run recovers the masks from
the weights (:meth:`PrunedConvs.from_weights`).
"""
from __future__ import annotations

from typing import Callable, List

import torch
import torch.nn.utils.prune as prune
from torch import nn

from dualoptim.optim import TwoObjectiveOptimizer


def after_each_step(optimizer: TwoObjectiveOptimizer, projection: Callable[[], None]) -> None:
    """Call ``projection()`` after every step of each of ``optimizer``'s torch optimizers."""
    for torch_optimizer in optimizer.optimizers:
        torch_optimizer.register_step_post_hook(lambda *_: projection())


def conv_layers(model: nn.Module) -> List[nn.Conv2d]:
    """The ``Conv2d`` layers, whose weights the research code prunes (all of them, globally)."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


class PrunedConvs:
    """Global unstructured pruning of every convolution weight, kept at zero while training.

    Args:
        model: the model whose ``Conv2d`` weights are pruned.

    A weight counts as pruned when it is exactly zero: the masks start from
    the weights as they are (so a model that was pruned before, or restored
    from a snapshot, keeps its zeros).
    """

    def __init__(self, model: nn.Module) -> None:
        self.weights = [m.weight for m in conv_layers(model)]
        self.masks = [(w != 0).to(w.dtype) for w in self.weights]

    def prune(self, rate: float, random: bool = False) -> None:
        """Zero ``rate`` of the remaining convolution weights: the smallest ``|w|`` over all layers
        together (``L1Unstructured``) or a random choice (``RandomUnstructured``), both through
        ``torch.nn.utils.prune.global_unstructured``, so the amount counts the unpruned weights only,
        as in the research code's iterative pruning."""
        layers = [(_Holder(w, m), "weight") for w, m in zip(self.weights, self.masks)]
        for holder, _ in layers:
            prune.custom_from_mask(holder, "weight", holder.mask)
        method = prune.RandomUnstructured if random else prune.L1Unstructured
        prune.global_unstructured(layers, pruning_method=method, amount=rate)
        self.masks = [holder.weight_mask.detach().clone() for holder, _ in layers]
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Set the pruned weights to zero (after every optimizer step; one foreach kernel)."""
        torch._foreach_mul_(self.weights, self.masks)

    def remaining(self) -> float:
        """Percentage of convolution weights not pruned (the research code's ``check_sparsity``)."""
        total = sum(m.numel() for m in self.masks)
        return 100.0 * sum(float(m.sum()) for m in self.masks) / total

    def report(self) -> float:
        """Print and return the remaining percentage in the research code's words."""
        remain = self.remaining()
        print(f"* remain weight ratio =  {remain} %")
        return remain


class _Holder(nn.Module):
    """A stand-in module holding one weight, for ``torch.nn.utils.prune`` to compute masks on."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.mask = mask


class ProximalShrink:
    """RL_proximal's projection: soft-threshold the change from an anchor so a given count is undone.

    With ``d = theta - anchor`` over all parameters flattened together and
    ``t`` the ``k``-th smallest ``|d|``, the weights become
    ``anchor + sign(d) * max(|d| - t, 0)`` -- the proximal map of
    ``t * ||theta - anchor||_1``: at least ``k`` weights return exactly to the
    anchor and every other one moves ``t`` towards it.  ``k`` falls linearly
    over the run: ``int(--mask_ratio * (T - s - 1) / T * n)`` for ``n``
    parameters, ``T`` steps in the run and ``s`` the step offset the caller
    gives.  ``k = 0`` leaves the weights as they are.
    """

    def __init__(self, model: nn.Module, mask_ratio: float, total_steps: int) -> None:
        self.params = [p for p in model.parameters()]
        self.numel = sum(p.numel() for p in self.params)
        self.mask_ratio, self.total_steps = mask_ratio, total_steps
        self.anchor: List[torch.Tensor] = []

    def set_anchor(self) -> None:
        """The current weights become the anchor."""
        self.anchor = [p.detach().clone() for p in self.params]

    def count(self, offset: int) -> int:
        """How many weights the projection at step offset ``offset`` returns to the anchor."""
        return int(self.mask_ratio * ((self.total_steps - (offset + 1)) / self.total_steps * self.numel))

    @torch.no_grad()
    def apply(self, count: int) -> None:
        if count <= 0:  # the research code's torch.topk(..., 0)[0][-1] fails here; nothing to undo
            return
        diffs = torch._foreach_sub([p.detach() for p in self.params], self.anchor)
        threshold = torch.cat([d.reshape(-1) for d in diffs]).abs().kthvalue(min(count, self.numel)).values
        for param, anchor, diff in zip(self.params, self.anchor, diffs):
            param.copy_(anchor + diff.sign() * (diff.abs() - threshold).clamp(min=0))


def prune_rate_per_step(rate: float, steps: int) -> float:
    """The rate that, applied ``steps`` times to the remaining weights, prunes ``rate`` overall."""
    return 1.0 - (1.0 - rate) ** (1.0 / steps)

