"""Saved optimizer states of earlier releases load into today's optimizers and continue identically.

``tests/data/optimizer_states_ca5312e.pt`` holds, for every recipe, the ``state_dict`` commit ca5312e saved
after a few steps and the parameters it reached after a few more (``tests/data/make_optimizer_states.py``
says how it was written).  Each state is loaded into a fresh optimizer of the current code, which must take
the same steps to the same parameters -- a resumed run of an earlier checkpoint goes on as it would have.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dualoptim import DualOptim, ObjectiveOptim, SharedOptim, TwoObjectiveOptimizer
from dualoptim.recipes import build_recipe

DATA = Path(__file__).resolve().parents[1] / "data"
_spec = importlib.util.spec_from_file_location("make_optimizer_states", DATA / "make_optimizer_states.py")
states = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(states)
SAVED = torch.load(DATA / "optimizer_states_ca5312e.pt", weights_only=True)


def assert_same(now, then, where="state_dict"):
    """``now`` equals ``then`` exactly: tensors element for element (and dtype), everything else by ``==``."""
    assert type(now) is type(then), where
    if isinstance(now, dict):
        assert list(now) == list(then), where
        for key in now:
            assert_same(now[key], then[key], f"{where}[{key!r}]")
    elif isinstance(now, (list, tuple)):
        assert len(now) == len(then), where
        for index, (a, b) in enumerate(zip(now, then)):
            assert_same(a, b, f"{where}[{index}]")
    elif torch.is_tensor(now):
        assert now.dtype == then.dtype and torch.equal(now, then), where
    else:
        assert now == then, where


def test_every_recipe_of_the_fixture_is_saved():
    assert sorted(SAVED) == sorted(f"{flag} {name}" for flag, name in states.RECIPES)


@pytest.mark.parametrize("flag,name", states.RECIPES)
def test_a_state_saved_before_the_split_loads_and_continues_identically(flag, name):
    saved = SAVED[f"{flag} {name}"]
    params = [p.clone().requires_grad_() for p in saved["params"]]
    optimizer = build_recipe(flag, name, params, states.settings())
    optimizer.load_state_dict(saved["state_dict"])
    # What it saves again is what was saved (same keys, same tensors, same hyperparameters).
    assert_same(optimizer.state_dict(), saved["state_dict"])
    states.run_steps(optimizer, params, states.STEPS, states.STEPS)
    assert_same([p.detach() for p in params], saved["params_after"], "parameters")


def test_the_fixture_is_not_trivial():
    """The continued steps moved every parameter, so the comparison above can fail."""
    for saved in SAVED.values():
        assert all(not torch.equal(a, b) for a, b in zip(saved["params"], saved["params_after"]))


@pytest.mark.parametrize("flag,name,family,is_dual,keys", [
    ("--optim", "sgd", SharedOptim, False, ["shared"]),
    ("--optim", "dual", DualOptim, True, ["forget", "retain"]),
    ("--optim", "dual_aa_m", ObjectiveOptim, True, ["shared"]),
    ("--optim_cfg", "dual_adam", ObjectiveOptim, True, ["shared"])])
def test_families_compose_torch_optimizers_behind_one_interface(flag, name, family, is_dual, keys):
    """A shared optimizer is never dual and a per-objective one is not a SharedOptim (#27)."""
    optimizer = build_recipe(flag, name, [torch.zeros(2, requires_grad=True)], states.settings())
    assert type(optimizer) is family and isinstance(optimizer, TwoObjectiveOptimizer)
    assert optimizer.is_dual is is_dual and sorted(optimizer.state_dict()) == keys
    assert not isinstance(optimizer, SharedOptim) or not optimizer.is_dual
    with pytest.raises(ValueError, match=r"state_dict must have the keys"):
        optimizer.load_state_dict({"something": {}})
