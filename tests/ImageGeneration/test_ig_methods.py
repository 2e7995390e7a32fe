"""The registry of diffusion forgetting methods (``ImageGeneration.core.methods``) on stub objectives,
and its use by the DDPM and the DiT."""
from __future__ import annotations

import math

import pytest
import torch

from dualoptim.optimizers import DualOptim, SharedOptim
from common.errors import ArgumentParser, UsageError
from ImageGeneration.core.methods import METHODS, ForgetObjectives, no_mask, plan_method
from ImageGeneration.core.optim import add_optim_args
from ImageGeneration.core.unlearn import ForgetWeights


class StubObjectives(ForgetObjectives):
    """Loss terms of fixed values that record which term was asked for."""

    n_iters = 4

    def __init__(self):
        self.calls = []
        self.masker = lambda: self.calls.append("mask")

    def forget_term(self, kind):
        self.calls.append(("forget", kind))
        return torch.tensor(3.0)

    def remain_term(self):
        self.calls.append("remain")
        return torch.tensor(5.0)


class AmnesiaObjectives(StubObjectives):
    def amnesia_batch(self):
        self.calls.append("draw")
        return len(self.calls)

    def noise_term(self, batch):
        self.calls.append(("noise", batch))
        return torch.tensor(7.0)

    def replay_term(self, batch):
        self.calls.append(("replay", batch))
        return torch.tensor(11.0)


def test_the_methods_of_the_research_code_are_registered():
    assert METHODS.names() == ["ga", "rl", "sa", "salun", "sfron"]


# method, flags, forget kind, forget loss at step 2 of 4, schedule, remain masked
@pytest.mark.parametrize("name,flags,kind,forget,schedule,remain_masked", [
    ("salun", {"unlearn_loss": "rl", "forget_alpha": 2.0}, "rl", 6.0, "joint", True),
    ("salun", {"unlearn_loss": "ga", "decay_forget_alpha": True}, "ga", 3.0, "joint", True),  # no decay in SalUn
    ("ga", {"unlearn_loss": "rl"}, "ga", 3.0, "joint", True),
    ("rl", {"unlearn_loss": "ga", "forget_alpha": 0.5}, "rl", 1.5, "joint", True),
    ("sfron", {"unlearn_loss": "adaga", "forget_alpha": 2.0}, "adaga", 6.0, "alternate", False),
    # cosine decay: alpha * (1 + cos(pi * 2 / 4)) / 2 = alpha / 2
    ("sfron", {"unlearn_loss": "ga", "forget_alpha": 2.0, "decay_forget_alpha": True}, "ga", 3.0, "alternate", False),
    ("sfron", {"unlearn_loss": "rl", "method": "joint"}, "rl", 3.0, "joint", True),
])
def test_plans(name, flags, kind, forget, schedule, remain_masked):
    for dual in (False, True):
        objectives = StubObjectives()
        plan = plan_method(name, ForgetWeights(remain_alpha=0.1, **flags), objectives, dual)
        assert plan.forget_loss(2).item() == pytest.approx(forget)
        assert plan.remain_loss(2).item() == pytest.approx(0.5)
        assert objectives.calls == [("forget", kind), "remain"]
        assert plan.schedule == ("alternate" if dual else schedule)
        assert plan.forget_mask == objectives.masker
        assert (plan.remain_mask == objectives.masker) == remain_masked
        assert remain_masked or plan.remain_mask is no_mask


def test_cosine_decay_of_sfron_follows_the_step():
    objectives = StubObjectives()
    plan = plan_method("sfron", ForgetWeights(forget_alpha=2.0, decay_forget_alpha=True), objectives)
    assert [plan.forget_loss(s).item() for s in range(4)] == pytest.approx(
        [3.0 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])


def test_selective_amnesia_uses_the_noise_and_replay_terms_unweighted():
    objectives = AmnesiaObjectives()
    plan = plan_method("sa", ForgetWeights(forget_alpha=9.0, remain_alpha=9.0), objectives)
    assert (plan.forget_loss(0).item(), plan.remain_loss(0).item(), plan.schedule) == (7.0, 11.0, "joint")
    plan.forget_loss(1), plan.remain_loss(1)
    # one draw per step, read by both terms of that step
    assert objectives.calls == ["draw", ("noise", 1), ("replay", 1), "draw", ("noise", 4), ("replay", 4)]
    with pytest.raises(UsageError, match="Selective Amnesia is not available"):
        plan_method("sa", ForgetWeights(), StubObjectives()).forget_loss(0)


def test_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError, match="--mode: unknown value 'bogus'"):
        plan_method("bogus", ForgetWeights(), StubObjectives())


def test_a_registered_method_reaches_the_ddpm_script(monkeypatch):
    """Adding a method is one registered function: ``main_forget.py --mode`` accepts it at once."""
    from ImageGeneration.DDPM import main_forget
    from ImageGeneration.DDPM.unlearn import ForgetSpec, config_kind, plan_forgetting
    from ImageGeneration.DDPM.model import build_unet, to_namespace
    from ig_fixtures import TINY_CONFIG

    def toy(spec, objectives):
        return METHODS.get("ga")(spec, objectives)

    monkeypatch.setitem(METHODS._entries, "toy", toy)
    args = main_forget.parse_args(["--ckpt_folder", "x", "--mode", "toy"])
    main_forget.validate(args)
    assert args.unlearn_loss == "toy" and config_kind("toy") == "saliency_unlearn"
    config = to_namespace(TINY_CONFIG)
    plan = plan_forgetting(ForgetSpec("toy", 0), build_unet(config.model, config.data), config, None, None,
                           dual=True)
    assert plan.schedule == "alternate"


def test_dual_means_the_same_for_both_models():
    """``--optim``, ``--dual`` and ``--forget_lr`` come from one parser helper; both models' optimizers get
    DualOptim's forget state at ``--forget_lr`` with ``--dual`` (``dual_native``), one shared state without it."""
    from ImageGeneration.core.optim import forget_recipe
    from ImageGeneration.DDPM import main_forget as ddpm_forget
    from ImageGeneration.DDPM.model import to_namespace
    from ImageGeneration.DDPM.optimizers import build_unlearn_optimizer
    from ImageGeneration.DiT import main_forget as dit_forget
    from ImageGeneration.DiT.unlearn import dit_optimizer
    from ig_fixtures import TINY_CONFIG

    parser = ArgumentParser()
    add_optim_args(parser)
    reference = vars(parser.parse_args(["--dual", "--forget_lr", "3e-4"]))
    ddpm = ddpm_forget.parse_args(["--ckpt_folder", "x", "--dual", "--forget_lr", "3e-4"])
    dit = dit_forget.parse_args(["--data-path", "x", "--forget-class", "1", "--dual", "--forget_lr", "3e-4"])
    for args in (ddpm, dit):
        assert {k: getattr(args, k) for k in reference} == reference
    model = torch.nn.Linear(2, 2)
    for dual in (False, True):
        recipe = forget_recipe(None, dual)
        for optimizer in (build_unlearn_optimizer(to_namespace(TINY_CONFIG), model, recipe, 3e-4),
                          dit_optimizer(model, 1e-3, recipe, 3e-4)):
            assert isinstance(optimizer, DualOptim if dual else SharedOptim)
            assert (optimizer.forget_optimizer is optimizer.retain_optimizer) == (not dual)
            if dual:
                assert optimizer.forget_optimizer.param_groups[0]["lr"] == 3e-4
