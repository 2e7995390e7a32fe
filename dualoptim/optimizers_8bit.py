"""DualOptim for LLMs with 8-bit optimizer states (bitsandbytes).

:class:`DecoupledAdamW8bit` is :class:`dualoptim.optim.decoupled_adamw.DecoupledAdamW` with
bitsandbytes' block-wise 8-bit Adam states: one (``state1``, ``state2``) pair of
quantised moments, with their per-block ``absmax`` scales, per objective.  It
follows the same objective protocol (:class:`dualoptim.optim.per_objective.PerObjectiveState`:
:func:`dualoptim.optim.per_objective.set_objective`, ``forget_lr_ratio``, ``decouple_m`` /
``decouple_v``), and each step is bitsandbytes' own ``AdamW8bit`` update run on
the selected objective's states, so fixed to one objective it *is*
``bitsandbytes.optim.AdamW8bit``.  Tensors smaller than ``min_8bit_size``
elements, and the parameters passed as ``fp32_params`` (embeddings, see
:func:`embedding_weights`), keep 32-bit states. :class:`AdamW8bit` is
bitsandbytes' ``AdamW8bit`` with the same ``fp32_params``.

This module imports bitsandbytes at import time; import it only when an 8-bit
optimizer is asked for (``dualoptim.optim`` never does).  bitsandbytes'
8-bit kernels run on CUDA and on the CPU.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import bitsandbytes as bnb
import torch
from bitsandbytes.optim.optimizer import Optimizer2State

from dualoptim.optim.base import OBJECTIVES
from dualoptim.optim.per_objective import PerObjectiveState

__all__ = ["AdamW8bit", "DecoupledAdamW8bit", "embedding_weights"]

#: bitsandbytes' per-parameter keys of the first and second moment (quantised state, block scales).
_FIRST_MOMENT_KEYS = ("state1", "absmax1")
_SECOND_MOMENT_KEYS = ("state2", "absmax2")


class Fp32Params:
    """Mixin for bitsandbytes optimizers: 32-bit states for the parameters in ``fp32_params``.

    bitsandbytes' own ``GlobalOptimManager`` is process-wide and maps module overrides to
    (group, parameter) positions, so an override registered for one model applies to whatever
    sits at that position in every later 8-bit optimizer; this one belongs to the optimizer.
    """

    def _keep_32bit(self, fp32_params: Iterable[torch.Tensor]) -> None:
        self.fp32_params = tuple(fp32_params)  # held, so their ids stay theirs
        self._fp32_ids = {id(p) for p in self.fp32_params}

    def get_config(self, gindex, pindex, group):
        config = super().get_config(gindex, pindex, group)
        if id(group["params"][pindex]) in self._fp32_ids:
            config["optim_bits"] = 32
        return config


class AdamW8bit(Fp32Params, bnb.optim.AdamW8bit):
    """``bitsandbytes.optim.AdamW8bit`` keeping 32-bit states for ``fp32_params``."""

    def __init__(self, params, fp32_params: Iterable[torch.Tensor] = (), **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._keep_32bit(fp32_params)


class DecoupledAdamW8bit(Fp32Params, PerObjectiveState, Optimizer2State):
    """AdamW with separate 8-bit block-wise moments for the forget and retain objectives.

    Args:
        params: parameters or param groups.
        lr: retain learning rate (the scheduled ``lr``); forget steps use
            ``forget_lr_ratio * lr``.
        betas, eps, weight_decay: as ``bitsandbytes.optim.AdamW8bit``.
        forget_lr_ratio: ``forget_lr / lr``.
        decouple_m, decouple_v: keep separate first / second moments.
        min_8bit_size: tensors with fewer elements keep 32-bit states.
        fp32_params: parameters that keep 32-bit states whatever their size.
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, forget_lr_ratio: float = 1.0,
                 decouple_m: bool = True, decouple_v: bool = True, min_8bit_size: int = 4096,
                 fp32_params: Iterable[torch.Tensor] = ()) -> None:
        objective_defaults = self._objective_defaults(forget_lr_ratio, decouple_m, decouple_v)
        super().__init__("adam", params, lr, betas, eps, weight_decay, optim_bits=8,
                         min_8bit_size=min_8bit_size)
        self._keep_32bit(fp32_params)
        # bitsandbytes builds its own defaults; the protocol's entries join them (and every group).
        self.defaults.update(objective_defaults)
        for group in self.param_groups:
            for key, value in objective_defaults.items():
                group.setdefault(key, value)
        # Per-objective copies of bitsandbytes' quantisation state are neither cast to the
        # parameter dtype on load_state_dict nor exposed to FSDP's gathering, like the originals.
        self.non_castable_tensor_keys |= {key + "_" + objective for objective in OBJECTIVES
                                          for key in _FIRST_MOMENT_KEYS + _SECOND_MOMENT_KEYS}

    def _objective_keys(self, group: Dict[str, Any], objective: str) -> Dict[str, str]:
        """bitsandbytes' state key -> the key ``objective``'s value is stored under."""
        step, m, v = self._state_suffixes(group, objective)
        keys = {"step": "step" + step}
        keys.update({key: key + m for key in _FIRST_MOMENT_KEYS})
        keys.update({key: key + v for key in _SECOND_MOMENT_KEYS})
        return keys

    def get_config(self, gindex, pindex, group):
        config = super().get_config(gindex, pindex, group)
        config["lr"] = config["lr"] * self._lr_ratio(group)
        return config

    @torch.no_grad()
    def init_state(self, group, p, gindex, pindex):
        # bitsandbytes lays out one objective's fresh state (8- or 32-bit, by size and
        # overrides); every objective gets its own copy, the quantisation maps are shared.
        super().init_state(group, p, gindex, pindex)
        state = self.state[p]
        fresh = dict(state)
        state.clear()
        for objective in OBJECTIVES:
            for bnb_key, key in self._objective_keys(group, objective).items():
                if bnb_key in fresh and key not in state:
                    value = fresh[bnb_key]
                    state[key] = value.clone() if torch.is_tensor(value) else value
        moment_keys = set(self._objective_keys(group, OBJECTIVES[0]))
        state.update({key: value for key, value in fresh.items() if key not in moment_keys})

    @torch.no_grad()
    def update_step(self, group, p, gindex, pindex):
        # bitsandbytes' update reads and writes ``self.state[p]`` under its own key names:
        # run it on a view holding the selected objective's state there, then store back
        # what it replaced (the step count is a Python int, the tensors change in place).
        state = self.state[p]
        keys = {bnb_key: key for bnb_key, key in self._objective_keys(group, self._group_objective(group)).items()
                if key in state}
        view = dict(state)
        view.update({bnb_key: state[key] for bnb_key, key in keys.items()})
        self.state[p] = view
        try:
            super().update_step(group, p, gindex, pindex)
        finally:
            self.state[p] = state
            state.update({key: view[bnb_key] for bnb_key, key in keys.items()})


def embedding_weights(model: torch.nn.Module) -> List[torch.Tensor]:
    """Every ``nn.Embedding`` weight of ``model``: the ``fp32_params`` of an LLM's 8-bit optimizer.

    8-bit states for embeddings hurt stability (bitsandbytes' advice, followed by HF ``Trainer``
    and the original DualOptim code).
    """
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return list(weights.values())
