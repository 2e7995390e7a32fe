"""The interface every two-objective optimizer implements, and the helpers the families share.

Unlearning methods minimise two objectives over the same parameters :math:`\\theta`: a *forget* objective
:math:`L_f` and a *retain* objective :math:`L_r`.  A two-objective optimizer applies the current gradients as
an update for one of them:

.. math::
    \\theta_{t+1} = \\begin{cases}
        \\theta_t - \\mathrm{Opt}_f(\\nabla L_f(\\theta_t); s_f) & \\text{forget step} \\\\
        \\theta_t - \\mathrm{Opt}_r(\\nabla L_r(\\theta_t); s_r) & \\text{retain step}
    \\end{cases}

The families differ in the states :math:`s_f, s_r` (disjoint, one state for both, or partly shared) and in
how many torch optimizers hold them; training loops, schedulers, ``GradScaler`` and checkpoints see only
:class:`TwoObjectiveOptimizer`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, Union

import torch
from torch.optim import Optimizer

__all__ = ["OBJECTIVES", "ObjectiveView", "Params", "TwoObjectiveOptimizer", "check_objective", "eval_weights",
           "evaluation_weights", "train_weights"]

Params = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]

OBJECTIVES = ("forget", "retain")


def check_objective(objective: str) -> str:
    """``objective`` itself; anything but ``"forget"`` or ``"retain"`` is a ``ValueError``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected 'forget' or 'retain'")
    return objective


def train_weights(optimizer: Any) -> None:
    """Put the weights ``optimizer`` trains on into the parameters.

    A schedule-free torch optimizer (``schedulefree.AdamWScheduleFree``) trains on an interpolation
    :math:`y = (1 - \\beta_1) z + \\beta_1 x` of its gradient-step sequence :math:`z` and its average
    :math:`x`, and evaluates :math:`x`; its ``train()`` / ``eval()`` swap them in place (as do those of
    ``accelerate``'s wrapper around it).  Any optimizer with those methods is swapped; the others have one
    set of weights and are left alone.
    """
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()


def eval_weights(optimizer: Any) -> None:
    """Put the weights to evaluate or save into the parameters (see :func:`train_weights`)."""
    if callable(getattr(optimizer, "eval", None)):
        optimizer.eval()


@contextlib.contextmanager
def evaluation_weights(*optimizers: Any) -> Iterator[None]:
    """The weights to evaluate or save inside the block (:func:`eval_weights`), those to train on after it."""
    for optimizer in optimizers:
        eval_weights(optimizer)
    try:
        yield
    finally:
        for optimizer in optimizers:
            train_weights(optimizer)


def closure_loss(closure: Optional[Callable[[], Any]]) -> Any:
    """The loss a ``step(closure)`` returns: ``closure()`` evaluated with gradients enabled, or ``None``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def materialize(params: Params) -> list:
    """Turn a parameter iterable into a list several optimizers can consume.

    A generator (``model.parameters()``) can be iterated once only; param-group
    dicts are shallow-copied so two optimizers do not share hyperparameters.
    """
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if isinstance(params[0], dict):
        return [dict(group, params=list(group["params"])) for group in params]
    return params


class TwoObjectiveOptimizer(ABC):
    """What every two-objective optimizer is: a forget step, a retain step, and the torch optimizers behind them.

    A family sets two attributes in its ``__init__``:

    * ``forget_optimizer`` / ``retain_optimizer`` -- the torch optimizer that steps each objective (the same
      object when one torch optimizer serves both);

    and implements :attr:`is_dual`, :meth:`lr`, :meth:`forget_step` and :meth:`retain_step`.  Everything else
    follows from these:

    * :attr:`optimizers` -- the distinct torch optimizers (attach one scheduler to each);
    * :meth:`for_objective` -- one objective's torch optimizer as ``torch.amp.GradScaler`` sees it;
    * :meth:`state_dict` -- ``{"forget": ..., "retain": ...}`` for two torch optimizers, ``{"shared": ...}``
      for one (the key says that one torch optimizer serves both objectives, whatever state it keeps);
    * :meth:`train_mode` / :meth:`eval_mode` / :meth:`evaluation_weights` -- the weights to train on and
      those to evaluate or save, which differ for a schedule-free torch optimizer (no-ops for every other).

    Why not a ``torch.optim.Optimizer``: a torch optimizer keeps one ``state[p]`` per parameter and refuses a
    parameter in two param groups, yet two states for every parameter is the point.  Subclassing one while
    bypassing its ``__init__`` (param groups = the forget groups + the retain groups) would make every
    caller that walks ``param_groups`` see each parameter twice: ``GradScaler.unscale_`` would divide each
    gradient by the scale twice, and a scheduler built on it would move both learning rates together (SCRUB
    schedules only its retain side).  So each family composes real torch optimizers.
    """

    forget_optimizer: Optimizer
    retain_optimizer: Optimizer

    @property
    @abstractmethod
    def is_dual(self) -> bool:
        """Whether the optimizer keeps a state per objective (what ``--optim dual`` is about)."""

    @abstractmethod
    def lr(self, objective: str) -> float:
        """The learning rate the next ``objective`` step uses (first param group)."""

    @abstractmethod
    def forget_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Apply the current gradients as a forget-objective update."""

    @abstractmethod
    def retain_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Apply the current gradients as a retain-objective update."""

    @property
    def optimizers(self) -> Tuple[Optimizer, ...]:
        """The distinct underlying torch optimizers (attach one scheduler to each)."""
        if self.forget_optimizer is self.retain_optimizer:
            return (self.retain_optimizer,)
        return (self.forget_optimizer, self.retain_optimizer)

    def torch_optimizer(self, objective: str) -> Optimizer:
        """The torch optimizer that steps ``objective`` (``forget`` or ``retain``)."""
        return self.forget_optimizer if check_objective(objective) == "forget" else self.retain_optimizer

    def for_objective(self, objective: str) -> "ObjectiveView":
        """The torch optimizer of ``objective`` as ``torch.amp.GradScaler`` sees it.

        ``GradScaler.unscale_`` / ``step`` need the param groups that hold the gradients and a ``step()``;
        stepping through :meth:`step` keeps what a family does around a step (a per-objective learning
        rate, the objective of a per-objective-state optimizer) under AMP.
        """
        return ObjectiveView(self, objective)

    def step(self, objective: str, closure: Optional[Callable[[], Any]] = None) -> Any:
        """``forget_step`` or ``retain_step`` chosen by name."""
        if check_objective(objective) == "forget":
            return self.forget_step(closure)
        return self.retain_step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        # Every torch optimizer holds the same tensors: clearing once is enough.
        self.retain_optimizer.zero_grad(set_to_none=set_to_none)

    def train_mode(self) -> None:
        """Put the weights the next steps train on into the parameters (see :func:`train_weights`; call it
        before stepping again after :meth:`eval_mode`)."""
        for optimizer in self.optimizers:
            train_weights(optimizer)

    def eval_mode(self) -> None:
        """Put the weights to evaluate or save into the parameters (see :func:`train_weights`)."""
        for optimizer in self.optimizers:
            eval_weights(optimizer)

    def evaluation_weights(self) -> contextlib.AbstractContextManager:
        """The weights to evaluate or save in the parameters inside the block, those to train on after it."""
        return evaluation_weights(*self.optimizers)

    def _state_keys(self) -> Tuple[str, ...]:
        return ("shared",) if len(self.optimizers) == 1 else OBJECTIVES

    def state_dict(self) -> Dict[str, Any]:
        return {key: optimizer.state_dict() for key, optimizer in zip(self._state_keys(), self.optimizers)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        keys = self._state_keys()
        if set(state_dict) != set(keys):
            raise ValueError(f"{type(self).__name__} state_dict must have the keys {list(keys)}, "
                             f"got {sorted(state_dict)}")
        for key, optimizer in zip(keys, self.optimizers):
            optimizer.load_state_dict(state_dict[key])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(forget={type(self.forget_optimizer).__name__}, "
                f"retain={type(self.retain_optimizer).__name__})")


class ObjectiveView:
    """One objective of a :class:`TwoObjectiveOptimizer`, for ``torch.amp.GradScaler``
    (see :meth:`TwoObjectiveOptimizer.for_objective`)."""

    def __init__(self, optimizer: TwoObjectiveOptimizer, objective: str) -> None:
        self.param_groups = optimizer.torch_optimizer(objective).param_groups
        self._optimizer, self._objective = optimizer, objective

    def step(self) -> Any:
        return self._optimizer.step(self._objective)
