"""Weight saliency (SalUn) and Fisher-diagonal masks, shared by every modality.

A mask is a ``{parameter name: 0/1 tensor}`` dict with the shapes of the
model's parameters.  Masked unlearning multiplies each gradient by its mask
before the optimizer step, so only salient weights move.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from common.errors import UsageError
from common.io import PathLike, atomic_torch_save, load_torch_file

#: Thresholds of the research code's ``generate_mask.py`` (fraction of weights kept).
SALUN_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

Mask = Dict[str, torch.Tensor]


def mask_filename(threshold: float) -> str:
    """``with_0.5.pt`` for 0.5, as the research code names its masks."""
    return f"with_{threshold}.pt"


LossOrChunks = Union[torch.Tensor, Iterable[torch.Tensor]]


def accumulate_gradients(model: nn.Module, batches: Iterable, compute_loss: Callable[[nn.Module, object], LossOrChunks],
                         power: int = 1, grad_clip: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """Average over batches of ``grad ** power`` for every trainable parameter.

    ``power=1`` gives the mean gradient used by SalUn saliency, ``power=2`` the
    empirical Fisher diagonal used by SFR-on and Selective Amnesia.  ``compute_loss``
    returns the batch's loss, or an iterable of loss chunks whose gradients add up
    (each chunk is backpropagated as it comes, so only one chunk's graph is alive at a
    time).  With ``grad_clip`` each batch's gradient is clipped to that total norm before
    it is accumulated (the DDPM research code's masks do this).  The model's existing
    gradients are cleared and left cleared.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    totals = {name: torch.zeros_like(p) for name, p in named}
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        losses = compute_loss(model, batch)
        for loss in [losses] if isinstance(losses, torch.Tensor) else losses:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], grad_clip)
        with torch.no_grad():
            present = [(totals[name], p.grad) for name, p in named if p.grad is not None]
            if present:
                acc, grads = zip(*present)
                if power == 1:
                    torch._foreach_add_(list(acc), list(grads))
                else:
                    torch._foreach_add_(list(acc), torch._foreach_pow(list(grads), power))
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("accumulate_gradients got no batches")
    for value in totals.values():
        value.div_(count)
    return totals


def top_fraction_masks(scores: Mapping[str, torch.Tensor], thresholds: Sequence[float] = SALUN_THRESHOLDS) -> Dict[float, Mask]:
    """For each threshold, a mask keeping the top ``threshold`` fraction of all weights by score.

    Ranking is global over all parameters (not per layer), highest score first;
    exactly ``int(N * threshold)`` weights are kept, ties broken by position.
    Masks are float tensors of 0/1 on the scores' device.
    """
    names = list(scores)
    flat = torch.cat([scores[name].detach().flatten().float() for name in names])
    order = torch.argsort(flat, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(flat.numel(), device=flat.device)
    masks: Dict[float, Mask] = {}
    for threshold in thresholds:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"mask threshold must be in [0, 1], got {threshold}")
        keep = (ranks < int(flat.numel() * threshold)).float()
        mask, start = {}, 0
        for name in names:
            n = scores[name].numel()
            mask[name] = keep[start:start + n].view_as(scores[name]).clone()
            start += n
        masks[threshold] = mask
    return masks


def fisher_ratio_masks(forget_fisher: Mapping[str, torch.Tensor], remain_fisher: Mapping[str, torch.Tensor],
                       thresholds: Sequence[float] = (1.0,), eps: float = 1e-15) -> Dict[float, Mask]:
    """SFR-on's forget/remain saliency: keep a weight where ``(F_f + eps) / (F_r + eps) >= threshold``.

    ``F_f`` and ``F_r`` are empirical Fisher diagonals on the forget and remain
    data (:func:`accumulate_gradients` with ``power=2``); weights that matter
    more to the forget data than to the remain data are the ones unlearning moves.
    """
    ratios = {name: (forget_fisher[name] + eps) / (remain_fisher[name] + eps) for name in forget_fisher}
    return {threshold: {name: (ratio >= threshold).float() for name, ratio in ratios.items()}
            for threshold in thresholds}


def fisher_mask_filename(threshold: float) -> str:
    """``fisher_1.0.pt`` for 1.0: the diffusion research code's name of an SFR-on Fisher-ratio mask."""
    return f"fisher_{threshold}.pt"


def save_masks(masks: Mapping[float, Mask], save_dir: PathLike,
               filename: Callable[[float], str] = mask_filename) -> List[Path]:
    """Write each mask as ``<save_dir>/<filename(threshold)>`` (default ``with_<threshold>.pt``) atomically."""
    return [atomic_torch_save({k: v.cpu() for k, v in mask.items()}, Path(save_dir) / filename(t))
            for t, mask in masks.items()]


def kept_fraction(mask: Mask) -> float:
    """The fraction of weights ``mask`` keeps (lets through)."""
    return sum(float(v.sum()) for v in mask.values()) / sum(v.numel() for v in mask.values())


def check_mask(mask: object, model: nn.Module, flag: str = "--mask_path", binary: bool = True) -> Mask:
    """Validate a loaded mask against ``model``; one-line :class:`UsageError` on mismatch.

    Every mask key must be a parameter of the model with the same shape and,
    with ``binary``, hold only 0s and 1s (``binary=False``: per-weight values
    such as a Fisher diagonal).  Parameters absent from the mask are left
    unmasked (frozen layers, heads a user chose not to mask).  ``flag`` names
    the flag and the file in the errors.
    """
    if not isinstance(mask, Mapping) or not mask or not all(isinstance(v, torch.Tensor) for v in mask.values()):
        raise UsageError(f"{flag}: expected a dict of parameter name -> tensor")
    params = dict(model.named_parameters())
    for name, value in mask.items():
        if name not in params:
            raise UsageError(f"{flag}: key {name!r} is not a parameter of the model "
                             f"(mask made for another architecture?)")
        if tuple(value.shape) != tuple(params[name].shape):
            raise UsageError(f"{flag}: key {name!r} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(params[name].shape)}")
        if binary and not bool(((value == 0) | (value == 1)).all()):
            raise UsageError(f"{flag}: key {name!r} holds values other than 0 and 1; expected a 0/1 mask "
                             f"(generate_mask.py writes one)")
    return dict(mask)


def load_mask(path: PathLike, model: nn.Module, flag: str = "--mask_path") -> Mask:
    """Load and validate a 0/1 mask file for ``model``."""
    return check_mask(load_torch_file(path, flag), model, f"{flag} {path}")


class GradientMask:
    """Multiplies gradients by a saliency mask with one foreach kernel per call.

    Built once per run: the mask is moved to the parameters' device and dtype
    up front, so :meth:`apply` on the hot path is a single ``_foreach_mul_``.
    """

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        self._pairs: List[Tuple[nn.Parameter, torch.Tensor]] = [
            (params[name], value.to(device=params[name].device, dtype=params[name].dtype))
            for name, value in mask.items()]

    def apply(self) -> None:
        present = [(p.grad, m) for p, m in self._pairs if p.grad is not None]
        if present:
            grads, masks = zip(*present)
            torch._foreach_mul_(list(grads), list(masks))

    def __call__(self) -> None:
        self.apply()


def maybe_gradient_mask(model: nn.Module, mask: Optional[Mask]) -> Callable[[], None]:
    """A callable that masks gradients, or does nothing when ``mask`` is None."""
    return GradientMask(model, mask) if mask else (lambda: None)
