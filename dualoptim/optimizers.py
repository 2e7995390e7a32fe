"""Dual optimizers for machine unlearning (DualOptim, Zhong, Luo & Liu, NeurIPS 2025).

Unlearning methods minimise two objectives over the same parameters ``theta``:
a *forget* objective ``L_f`` (e.g. cross-entropy on random labels, negative
log-likelihood ascent) and a *retain* objective ``L_r`` (e.g. cross-entropy on
the retain set).  Ordinary practice feeds both gradients into one optimizer, so
their momentum and second-moment estimates are mixed.  DualOptim keeps **one
optimizer state per objective** (Algorithm 1 of the paper):

.. math::
    \\theta_{t+1} = \\begin{cases}
        \\theta_t - \\mathrm{Opt}_f(\\nabla L_f(\\theta_t); s_f) & \\text{forget step} \\\\
        \\theta_t - \\mathrm{Opt}_r(\\nabla L_r(\\theta_t); s_r) & \\text{retain step}
    \\end{cases}

where ``s_f`` and ``s_r`` are disjoint optimizer states.  For image tasks the
paper uses AdamW for ``Opt_f`` and SGD with momentum for ``Opt_r``; for LLMs
both are AdamW-style and live in one optimizer, :class:`DecoupledAdamW`.

Public API
----------
* :class:`DualOptim` -- two torch optimizers over the same parameters with
  separate states (``forget_step`` / ``retain_step``).
* :class:`SharedOptim` -- the single-optimizer baseline (``--optim sgd|adam``)
  behind the same interface, so training loops never branch on the optimizer.
* :class:`ObjectiveOptim` -- a :class:`DecoupledAdamW` (or its 8-bit
  variant) behind the same interface.
* :class:`HybridAdamSGD` -- the ``dual_share`` ablation: Adam forget steps
  and SGD retain steps sharing one first moment.
* :class:`Lion` -- the sign-momentum optimizer of the ``dual_*l*`` ablations.
* :class:`DecoupledAdamW` -- one :class:`torch.optim.Optimizer` with separate
  AdamW moments per objective, selected explicitly with :func:`set_objective`.
* :class:`PerObjectiveState` -- that objective protocol, shared with the
  bitsandbytes 8-bit variant in :mod:`dualoptim.optimizers_8bit` (kept apart so
  this module never imports bitsandbytes).

Every object of the first four classes says whether it keeps one state per
objective (``is_dual``); the ``--optim`` / ``--optim_cfg`` names that build
them live in :mod:`dualoptim.recipes`.

Why ``DualOptim`` is not a ``torch.optim.Optimizer``
----------------------------------------------------
We tried it.  A ``torch.optim.Optimizer`` keeps one ``state[p]`` per
parameter and refuses a parameter in two param groups ("some parameters
appear in more than one parameter group"), yet DualOptim's whole point is two
states for every parameter.  Subclassing while bypassing ``__init__`` (param
groups = the forget groups + the retain groups) gets past that check, but
then every caller that walks ``param_groups`` sees each parameter twice:
``GradScaler.unscale_`` divides each gradient by the scale twice, a scheduler
built on it moves both optimizers' learning rates together (SCRUB schedules
only its retain side), and ``state_dict`` / ``load_state_dict`` would need to
be rewritten anyway.  So DualOptim stays a small composite of two real torch
optimizers, and the three places that need a torch optimizer each have one
home here:

* schedulers -- :attr:`DualOptim.optimizers`: the distinct torch optimizers,
  one scheduler each;
* ``torch.amp.GradScaler`` -- :meth:`DualOptim.for_objective`: the torch
  optimizer of one objective as the scaler sees it (its param groups, and a
  ``step()`` that goes through :meth:`DualOptim.step`);
* one optimizer, two learning rates -- :class:`SharedOptim` scales the
  (scheduled) ``lr`` of its one optimizer for the duration of a step, so a
  scheduler keeps seeing one base lr and both objectives follow it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import torch
from torch.optim import Optimizer
from torch.optim.adamw import adamw as _functional_adamw

__all__ = [
    "ADAM_WEIGHT_DECAY",
    "OPTIMIZERS",
    "OBJECTIVES",
    "DualOptim",
    "SharedOptim",
    "ObjectiveOptim",
    "HybridAdamSGD",
    "Lion",
    "DecoupledAdamW",
    "PerObjectiveState",
    "build_optimizer",
    "moment_norms",
    "set_objective",
]

Params = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]

OBJECTIVES = ("forget", "retain")


def _closure_loss(closure: Optional[Callable[[], Any]]) -> Any:
    """The loss a ``step(closure)`` returns: ``closure()`` evaluated with gradients enabled, or ``None``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023): the sign of an interpolated momentum, with decoupled weight decay.

    The update of ``lion_pytorch.Lion`` (the research code's ``dual_ls`` /
    ``dual_ll`` / ``dual_sl`` ablations), in the same floating-point order,
    on torch's multi-tensor (foreach) kernels:

    .. math::
        \theta &\leftarrow \theta (1 - \gamma \lambda) \\
        \theta &\leftarrow \theta - \gamma \operatorname{sign}(\beta_1 m + (1 - \beta_1) g) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2) g

    Args:
        params: parameters or param groups.
        lr: :math:`\gamma` (default 1e-4).
        betas: :math:`(\beta_1, \beta_2)` (default ``(0.9, 0.99)``).
        weight_decay: :math:`\lambda` (default 0).
    """

    def __init__(self, params: Params, lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            (beta1, beta2), lr = group["betas"], group["lr"]
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
            update = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(update, torch._foreach_mul(grads, 1.0 - beta1))
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta2)
        return loss


#: Optimizer names accepted by ``forget_optim`` / ``retain_optim``.
OPTIMIZERS: Dict[str, type] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "lion": Lion,
}

# The research code fixes AdamW's weight decay at 0.05 for every adaptive
# optimizer it builds (``--weight_decay`` only reaches SGD); we keep that.
ADAM_WEIGHT_DECAY = 0.05


def _materialize(params: Params) -> list:
    """Turn a parameter iterable into a list both optimizers can consume.

    A generator (``model.parameters()``) can be iterated once only; param-group
    dicts are shallow-copied so the two optimizers do not share hyperparameters.
    """
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if isinstance(params[0], dict):
        return [dict(group, params=list(group["params"])) for group in params]
    return params


def build_optimizer(name: str, params: Params, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.0, **kwargs: Any) -> Optimizer:
    """Build one torch optimizer by name (``adamw``, ``adam``, ``sgd`` or ``lion``)."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
    return OPTIMIZERS[key](params, lr=lr, weight_decay=weight_decay, **kwargs)


class DualOptim:
    """Two optimizers over the same parameters, one per unlearning objective.

    Each optimizer sees only the gradients of its own objective, so AdamW's
    moments ``m_f, v_f`` are estimated from forget gradients alone and SGD's
    momentum buffer ``b_r`` from retain gradients alone::

        forget step:  m_f <- b1 m_f + (1-b1) g_f ;  v_f <- b2 v_f + (1-b2) g_f^2
                      theta <- theta (1 - lr_f wd_f) - lr_f m_f_hat / (sqrt(v_f_hat) + eps)
        retain step:  b_r <- mu b_r + (g_r + wd_r theta)
                      theta <- theta - lr_r b_r

    The update is delegated to the wrapped torch optimizers, so it is exactly
    that of ``torch.optim.AdamW`` and ``torch.optim.SGD`` run side by side
    (including their foreach/fused kernels).

    See the module docstring for why it is not itself a
    ``torch.optim.Optimizer``, and where schedulers and ``GradScaler`` find
    the torch optimizers.

    Args:
        params: parameters or param groups, shared by both optimizers.
        forget_optim, retain_optim: ``"adamw"``, ``"adam"``, ``"sgd"`` or ``"lion"``.
        forget_lr, retain_lr: learning rates of the two optimizers.
        forget_weight_decay, retain_weight_decay: their weight decays.
        momentum: momentum of an SGD optimizer (either side).
        forget_kwargs, retain_kwargs: extra keyword arguments (``betas``,
            ``foreach``, ``fused``, ``nesterov`` ...) for each optimizer.
    """

    def __init__(self, params: Params, forget_optim: str = "adamw", forget_lr: float = 1e-3,
                 forget_weight_decay: float = ADAM_WEIGHT_DECAY, retain_optim: str = "sgd",
                 retain_lr: float = 0.01, momentum: float = 0.9,
                 retain_weight_decay: float = 5e-4,
                 forget_kwargs: Optional[Dict[str, Any]] = None,
                 retain_kwargs: Optional[Dict[str, Any]] = None) -> None:
        params = _materialize(params)
        self.forget_optimizer = build_optimizer(
            forget_optim, _materialize(params), forget_lr, forget_weight_decay, momentum,
            **(forget_kwargs or {}))
        self.retain_optimizer = build_optimizer(
            retain_optim, _materialize(params), retain_lr, retain_weight_decay, momentum,
            **(retain_kwargs or {}))

    #: One optimizer state per objective (``SharedOptim``: one for both).
    is_dual = True

    @property
    def optimizers(self) -> Tuple[Optimizer, ...]:
        """The distinct underlying optimizers (attach one scheduler to each)."""
        return (self.forget_optimizer, self.retain_optimizer)

    def for_objective(self, objective: str) -> "ObjectiveView":
        """The torch optimizer of ``objective`` as ``torch.amp.GradScaler`` sees it.

        ``GradScaler.unscale_`` / ``step`` need the param groups that hold the
        gradients and a ``step()``; stepping through :meth:`step` keeps what a
        subclass does around a step (``SharedOptim``'s per-objective learning
        rate, ``ObjectiveOptim``'s objective) under AMP.
        """
        return ObjectiveView(self, objective)

    def torch_optimizer(self, objective: str) -> Optimizer:
        """The torch optimizer that steps ``objective`` (``forget`` or ``retain``)."""
        return self.forget_optimizer if objective == "forget" else self.retain_optimizer

    def lr(self, objective: str) -> float:
        """The learning rate the next ``objective`` step uses (first param group)."""
        return self.for_objective(objective).param_groups[0]["lr"]

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Apply the current gradients as a forget-objective update."""
        return self.forget_optimizer.step(closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Apply the current gradients as a retain-objective update."""
        return self.retain_optimizer.step(closure)

    def step(self, objective: str, closure: Optional[Callable[[], Any]] = None) -> Any:
        """``forget_step`` or ``retain_step`` chosen by name."""
        if objective == "forget":
            return self.forget_step(closure)
        if objective == "retain":
            return self.retain_step(closure)
        raise ValueError(f"unknown objective {objective!r}; expected 'forget' or 'retain'")

    def zero_grad(self, set_to_none: bool = True) -> None:
        # Both optimizers hold the same tensors: clearing once is enough.
        self.retain_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        return {"forget": self.forget_optimizer.state_dict(),
                "retain": self.retain_optimizer.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if set(state_dict) != {"forget", "retain"}:
            raise ValueError("DualOptim state_dict must have exactly the keys 'forget' and 'retain', "
                             f"got {sorted(state_dict)}")
        self.forget_optimizer.load_state_dict(state_dict["forget"])
        self.retain_optimizer.load_state_dict(state_dict["retain"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(forget={type(self.forget_optimizer).__name__}, "
                f"retain={type(self.retain_optimizer).__name__})")


class ObjectiveView:
    """One objective of a :class:`DualOptim`, for ``torch.amp.GradScaler`` (see :meth:`DualOptim.for_objective`)."""

    def __init__(self, optimizer: DualOptim, objective: str) -> None:
        self.param_groups = optimizer.torch_optimizer(objective).param_groups
        self._optimizer, self._objective = optimizer, objective

    def step(self) -> Any:
        return self._optimizer.step(self._objective)


class SharedOptim(DualOptim):
    """One optimizer for both objectives: the baseline DualOptim improves on.

    ``forget_optimizer`` and ``retain_optimizer`` are the same object, so the
    two objectives share one state.  The research code steps forget batches
    at ``--unlearn_lr`` and retain batches at ``--retain_lr`` with that one
    optimizer; we reproduce this by scaling every group's (possibly scheduled)
    learning rate by ``forget_lr / lr`` or ``retain_lr / lr`` during the step
    and restoring it afterwards.  (Two param groups per parameter, one per
    learning rate, are not possible: a torch optimizer refuses a parameter in
    two groups.)  A factor of 1 steps the optimizer untouched.
    """

    is_dual = False

    def __init__(self, optimizer: Optimizer, forget_lr: float, retain_lr: float) -> None:
        self.forget_optimizer = self.retain_optimizer = optimizer
        base_lr = optimizer.param_groups[0]["lr"]
        self._scale = {"forget": forget_lr / base_lr, "retain": retain_lr / base_lr}

    @property
    def optimizers(self) -> Tuple[Optimizer, ...]:
        return (self.retain_optimizer,)

    def _scaled_step(self, objective: str, closure: Optional[Callable[[], Any]]) -> Any:
        scale = self._scale[objective]
        if scale == 1.0:
            return self.retain_optimizer.step(closure)
        groups = self.retain_optimizer.param_groups
        saved = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] = group["lr"] * scale
        try:
            return self.retain_optimizer.step(closure)
        finally:
            for group, lr in zip(groups, saved):
                group["lr"] = lr

    def lr(self, objective: str) -> float:
        return self.retain_optimizer.param_groups[0]["lr"] * self._scale[objective]

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._scaled_step("forget", closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._scaled_step("retain", closure)

    def state_dict(self) -> Dict[str, Any]:
        return {"shared": self.retain_optimizer.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if set(state_dict) != {"shared"}:
            raise ValueError(f"SharedOptim state_dict must have the key 'shared', got {sorted(state_dict)}")
        self.retain_optimizer.load_state_dict(state_dict["shared"])


class ObjectiveOptim(SharedOptim):
    """A :class:`DecoupledAdamW` (or ``DecoupledAdamW8bit``) behind the DualOptim interface.

    The one optimizer keeps the per-objective state itself; a forget or
    retain step selects the objective (:func:`set_objective`) and steps it.
    The forget learning rate is the optimizer's ``forget_lr_ratio`` times its
    scheduled ``lr``.  ``is_dual`` is the optimizer's: true when a moment is
    decoupled.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.forget_optimizer = self.retain_optimizer = optimizer

    @property
    def is_dual(self) -> bool:  # type: ignore[override]
        return self.retain_optimizer.is_dual

    def lr(self, objective: str) -> float:
        group = self.retain_optimizer.param_groups[0]
        return group["lr"] * (group["forget_lr_ratio"] if objective == "forget" else 1.0)

    def _objective_step(self, objective: str, closure: Optional[Callable[[], Any]]) -> Any:
        set_objective(self.retain_optimizer, objective)
        return self.retain_optimizer.step(closure)

    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._objective_step("forget", closure)

    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self._objective_step("retain", closure)


class HybridAdamSGD(DualOptim):
    r"""The research code's ``dual_share`` ablation: Adam forget steps, SGD retain steps, one first moment.

    Both objectives update the same first moment :math:`m`; the second
    moment :math:`v` and the step count :math:`t` (of the bias corrections)
    belong to the forget (Adam) steps alone.  Weight decay :math:`\lambda` is
    an L2 term added to the gradient on both sides:

    .. math::
        \text{forget:}\quad & g \leftarrow g + \lambda\theta,\ t \leftarrow t + 1,
            m \leftarrow \beta_1 m + (1-\beta_1) g,\ v \leftarrow \beta_2 v + (1-\beta_2) g^2, \\
            & \theta \leftarrow \theta - \gamma_f \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon} \\
        \text{retain:}\quad & g \leftarrow g + \lambda\theta,
            m \leftarrow \beta_1 m + (1-\beta_1) g,\ \theta \leftarrow \theta - \gamma_r m

    That is ``torch.optim.Adam`` (forget) and ``torch.optim.SGD`` with
    ``momentum = dampening = beta1`` (retain) whose momentum buffer *is*
    Adam's ``exp_avg`` tensor, so both updates run on torch's kernels.  The
    tie is made when the states are created and again after
    :meth:`load_state_dict` (which copies tensors).
    """

    def __init__(self, params: Params, forget_lr: float, retain_lr: float, weight_decay: float = 0.0,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        params = _materialize(params)
        self.forget_optimizer = torch.optim.Adam(_materialize(params), lr=forget_lr, betas=betas, eps=eps,
                                                 weight_decay=weight_decay)
        self.retain_optimizer = torch.optim.SGD(_materialize(params), lr=retain_lr, momentum=betas[0],
                                                dampening=betas[0], weight_decay=weight_decay)
        self._tie_first_moment()

    def _tie_first_moment(self) -> None:
        for group in self.forget_optimizer.param_groups:
            for p in group["params"]:
                adam = self.forget_optimizer.state[p]
                if not adam:  # Adam's own fresh state, made now so SGD can share its exp_avg
                    adam.update(step=torch.zeros((), dtype=torch.float32),
                                exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                                exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
                self.retain_optimizer.state[p]["momentum_buffer"] = adam["exp_avg"]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._tie_first_moment()


class PerObjectiveState:
    """The objective protocol of optimizers that keep one state per objective.

    Shared by :class:`DecoupledAdamW` and its bitsandbytes 8-bit variant
    (``dualoptim.optimizers_8bit.DecoupledAdamW8bit``).  The objective of the next
    step lives in every param group under ``"objective"`` (so it survives
    optimizer wrappers and ``state_dict``), next to ``forget_lr_ratio``,
    ``decouple_m`` and ``decouple_v``.  Per-parameter state keys carry the
    suffix ``_forget`` / ``_retain`` when they belong to one objective.
    """

    @staticmethod
    def _objective_defaults(forget_lr_ratio: float, decouple_m: bool, decouple_v: bool) -> Dict[str, Any]:
        """The param-group entries of the protocol (the first steps serve ``retain``)."""
        if forget_lr_ratio < 0.0:
            raise ValueError(f"Invalid forget_lr_ratio: {forget_lr_ratio}")
        return dict(forget_lr_ratio=forget_lr_ratio, decouple_m=decouple_m, decouple_v=decouple_v,
                    objective="retain")

    def set_objective(self, objective: str) -> None:
        """Select the objective (``"forget"`` or ``"retain"``) the next steps serve."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected 'forget' or 'retain'")
        for group in self.param_groups:
            group["objective"] = objective

    @property
    def objective(self) -> str:
        return self.param_groups[0]["objective"]

    @property
    def is_dual(self) -> bool:
        """Whether a moment is kept per objective (``decouple_m`` or ``decouple_v``)."""
        return any(group["decouple_m"] or group["decouple_v"] for group in self.param_groups)

    @staticmethod
    def _group_objective(group: Dict[str, Any]) -> str:
        objective = group["objective"]
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r} in param group")
        return objective

    @classmethod
    def _lr_ratio(cls, group: Dict[str, Any]) -> float:
        """Factor on the group's (scheduled) ``lr`` for the step's objective."""
        return group["forget_lr_ratio"] if cls._group_objective(group) == "forget" else 1.0

    @staticmethod
    def _state_suffixes(group: Dict[str, Any], objective: str) -> Tuple[str, str, str]:
        """Key suffixes of ``objective``'s (step count, first moment, second moment) in ``group``.

        A shared moment has no suffix; step counts are per objective whenever
        any moment is decoupled (as the original DualOptim code does).
        """
        suffix = "_" + objective
        decoupled = group["decouple_m"] or group["decouple_v"]
        return (suffix if decoupled else "", suffix if group["decouple_m"] else "",
                suffix if group["decouple_v"] else "")


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
        loss = _closure_loss(closure)
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


def set_objective(optimizer: Any, objective: str) -> None:
    """Set the objective of a :class:`DecoupledAdamW`, through any wrappers.

    ``accelerate``'s ``AcceleratedOptimizer`` and DeepSpeed engines wrap the
    optimizer but share its ``param_groups``, which is where the objective is
    stored; optimizers without an objective (plain AdamW) are left alone.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected 'forget' or 'retain'")
    for group in optimizer.param_groups:
        if "objective" in group:
            group["objective"] = objective


def moment_norms(optimizer: Any) -> Dict[str, float]:
    """The L2 norm, over all parameters, of every moment buffer an optimizer keeps, by the objective it serves.

    Keys are ``<objective>/<buffer>``: ``forget/exp_avg`` and ``retain/momentum_buffer`` for a
    :class:`DualOptim` (AdamW + SGD), ``forget/exp_avg`` and ``retain/exp_avg`` for a :class:`DecoupledAdamW`,
    ``shared/exp_avg`` for one state serving both (a plain torch optimizer, :class:`SharedOptim`, a moment
    :class:`DecoupledAdamW` keeps shared). These are the quantities behind the paper's argument that one state
    mixes the two objectives' gradient statistics. Step counts and non-float (8-bit) buffers are skipped.
    """
    forget = getattr(optimizer, "forget_optimizer", optimizer)
    retain = getattr(optimizer, "retain_optimizer", optimizer)
    sources = {"shared": forget} if forget is retain else {"forget": forget, "retain": retain}
    squares: Dict[str, float] = {}
    for label, torch_optimizer in sources.items():
        for param, state in torch_optimizer.state.items():
            for key, value in state.items():
                if not torch.is_tensor(value) or not value.is_floating_point() or value.shape != param.shape:
                    continue
                objective = label
                for name in OBJECTIVES:
                    if key.endswith("_" + name):
                        objective, key = name, key[:-len(name) - 1]
                squares[f"{objective}/{key}"] = squares.get(f"{objective}/{key}", 0.0) + float(
                    value.detach().float().square().sum())
    return {key: squares[key] ** 0.5 for key in sorted(squares)}
