"""DecoupledAdamW: AdamW with one set of moments per objective, in one ``torch.optim.Optimizer`` (the LLM recipe)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.adamw import adamw as _functional_adamw

from dualoptim.optim.base import OBJECTIVES, Params, closure_loss
from dualoptim.optim.per_objective import PerObjectiveState

__all__ = ["DecoupledAdamW"]


class DecoupledAdamW(PerObjectiveState, Optimizer):
    r"""AdamW with separate moment estimates for the forget and retain objectives.

    The LLM form of DualOptim: one optimizer (so it drops into HF ``Trainer``,
    ``accelerate``, DeepSpeed and LR schedulers) whose state holds one AdamW
    state per objective.  The objective ``o`` of the next :meth:`step` is set
    explicitly with :meth:`set_objective` (stored in every param group, so it
    survives optimizer wrappers and ``state_dict``).  With learning rate
    :math:`\gamma` (the scheduled ``lr``), ratio :math:`\rho_o`
    (``forget_lr_ratio`` for ``forget``, 1 for ``retain``) and gradient
    :math:`g`:

    .. math::
        t_o &\leftarrow t_o + 1, \qquad \gamma_o = \rho_o \gamma \\
        \theta &\leftarrow \theta (1 - \gamma_o \lambda) \\
        m_o &\leftarrow \beta_1 m_o + (1 - \beta_1) g \\
        v_o &\leftarrow \beta_2 v_o + (1 - \beta_2) g^2 \\
        \theta &\leftarrow \theta - \gamma_o \frac{m_o / (1 - \beta_1^{t_o})}
                 {\sqrt{v_o / (1 - \beta_2^{t_o})} + \epsilon}

    With ``decouple_m=False`` both objectives share ``m``; with
    ``decouple_v=False`` they share ``v``.  Step counts ``t_o`` are kept per
    objective whenever any moment is decoupled (as the original DualOptim
    code does) and shared otherwise.  Fixed to one objective the optimizer is
    exactly ``torch.optim.AdamW``; alternating, it equals two independent
    AdamW optimizers, the forget one at ``forget_lr_ratio * lr``.  The update
    itself runs through torch's functional AdamW, with its foreach and fused
    multi-tensor kernels.

    Args:
        params: parameters or param groups.
        lr: retain learning rate :math:`\gamma` (default 1e-3).
        betas, eps, weight_decay: as ``torch.optim.AdamW`` (defaults
            ``(0.9, 0.999)``, ``1e-8``, ``1e-2``).
        forget_lr_ratio: ``forget_lr / lr``.
        decouple_m, decouple_v: keep separate first / second moments.
        foreach, fused: kernel choice, as in ``torch.optim.AdamW``.
    """

    def __init__(self, params: Params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, forget_lr_ratio: float = 1.0,
                 decouple_m: bool = True, decouple_v: bool = True,
                 foreach: Optional[bool] = None, fused: Optional[bool] = None) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if foreach and fused:
            raise ValueError("foreach and fused cannot both be True")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach,
                        fused=fused, **self._objective_defaults(forget_lr_ratio, decouple_m, decouple_v))
        super().__init__(params, defaults)

    @classmethod
    def _state_keys(cls, group: Dict[str, Any], objective: str) -> Tuple[str, str, str]:
        """Names of (step, exp_avg, exp_avg_sq) used by ``objective`` in ``group``."""
        step, m, v = cls._state_suffixes(group, objective)
        return "step" + step, "exp_avg" + m, "exp_avg_sq" + v

    def _init_state(self, group: Dict[str, Any], p: torch.Tensor) -> None:
        state = self.state[p]
        # Step counts live on the CPU unless fused (as torch.optim.AdamW does):
        # a device scalar would cost one kernel launch per step.
        step_device = p.device if group["fused"] else "cpu"
        for objective in OBJECTIVES:
            step_key, m_key, v_key = self._state_keys(group, objective)
            if step_key not in state:
                state[step_key] = torch.zeros((), dtype=torch.float32, device=step_device)
            for key in (m_key, v_key):
                if key not in state:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = closure_loss(closure)
        for group in self.param_groups:
            step_key, m_key, v_key = self._state_keys(group, self._group_objective(group))
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("DecoupledAdamW does not support sparse gradients")
                if not self.state[p]:
                    self._init_state(group, p)
                state = self.state[p]
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state[m_key])
                exp_avg_sqs.append(state[v_key])
                steps.append(state[step_key])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr = group["lr"] * self._lr_ratio(group)
            _functional_adamw(
                params, grads, exp_avgs, exp_avg_sqs, [], steps,
                foreach=group["foreach"], fused=group["fused"],
                grad_scale=getattr(self, "grad_scale", None),
                found_inf=getattr(self, "found_inf", None),
                amsgrad=False, beta1=beta1, beta2=beta2, lr=lr,
                weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
        return loss
