"""Write ``optimizer_states_ca5312e.pt``: every optimizer recipe's ``state_dict`` as commit ca5312e saved it.

The file was written by running this script on the tree of commit ca5312e (before the optimizer module was
split by family, #27)::

    git archive ca5312e | tar -x -C /tmp/ca5312e
    PYTHONPATH=/tmp/ca5312e python tests/data/make_optimizer_states.py tests/data/optimizer_states_ca5312e.pt

For each recipe it builds the optimizer over two small tensors, takes :data:`STEPS` steps (objectives
forget, retain, retain, ...) on the gradients of :func:`gradients`, saves the parameters and a copy of the
optimizer's ``state_dict`` (its tensors are the live state), then takes :data:`STEPS` more steps and saves the parameters again.
``tests/common/test_optimizer_states.py`` loads each state into an optimizer of today's code and checks
that it continues to the same parameters.
"""
from __future__ import annotations

import copy
import sys

import torch

#: (flag, recipe) pairs saved: every recipe of --optim and --optim_cfg that needs no optional package.
RECIPES = [("--optim", name) for name in ("sgd", "adam", "dual", "dual_aa", "dual_sa", "dual_ss", "dual_ls",
                                          "dual_ll", "dual_sl", "dual_share", "dual_aa_m", "dual_aa_v")] + [
    ("--optim_cfg", "dual_adam")]
OBJECTIVES = ("forget", "retain", "retain")
STEPS = 4
#: forget, retain and shared learning rates of every saved recipe
FORGET_LR, RETAIN_LR = 0.02, 0.01


def initial_parameters():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator)]


def gradients(step: int, params):
    """Step ``step``'s gradients, drawn from a generator seeded by the step (independent of the parameters)."""
    generator = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=generator) for p in params]


def run_steps(optimizer, params, first: int, count: int) -> None:
    for step in range(first, first + count):
        for p, grad in zip(params, gradients(step, params)):
            p.grad = grad
        optimizer.step(OBJECTIVES[step % len(OBJECTIVES)])


def settings():
    from dualoptim.recipes import RecipeSettings
    return RecipeSettings(FORGET_LR, RETAIN_LR, (FORGET_LR, RETAIN_LR))


def main(path: str) -> None:
    from dualoptim.recipes import build_recipe

    saved = {}
    for flag, name in RECIPES:
        params = [p.requires_grad_() for p in initial_parameters()]
        optimizer = build_recipe(flag, name, params, settings())
        run_steps(optimizer, params, 0, STEPS)
        entry = {"params": [p.detach().clone() for p in params], "state_dict": copy.deepcopy(optimizer.state_dict())}
        run_steps(optimizer, params, STEPS, STEPS)
        entry["params_after"] = [p.detach().clone() for p in params]
        saved[f"{flag} {name}"] = entry
    torch.save(saved, path)


if __name__ == "__main__":
    main(sys.argv[1])
