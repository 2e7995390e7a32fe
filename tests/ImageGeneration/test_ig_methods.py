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


def test_a_registered_method_reaches_both_scripts_with_its_own_defaults(monkeypatch):
    """Adding a method is one registered function with its table entry: ``main_forget.py --mode`` of the DDPM
    and the DiT accept it at once, ``--unlearn_loss`` defaults to the loss it declares (not its name), its
    config kind and run folder follow the entry."""
    from ImageGeneration.core.methods import MethodEntry
    from ImageGeneration.DDPM import main_forget
    from ImageGeneration.DDPM.unlearn import ForgetSpec, config_kind, plan_forgetting
    from ImageGeneration.DDPM.config import to_namespace
    from ImageGeneration.DDPM.networks import build_unet
    from ImageGeneration.DDPM.run_config import ForgetRunConfig
    from ImageGeneration.DiT.unlearn import DiTForgetSpec, dit_methods, validate_spec
    from ig_fixtures import TINY_CONFIG

    def toy(spec, objectives):
        return METHODS.get("ga").plan(spec, objectives)

    monkeypatch.setitem(METHODS._entries, "toy", MethodEntry(toy, loss="ga", config_kind="sfron"))
    args = main_forget.parse_args(["--ckpt_folder", "x", "--mode", "toy", "--method", "bogus"])
    run = ForgetRunConfig.from_args(args, "digits")  # no update methods: --method is not read
    assert run.unlearn_loss == "ga" and args.unlearn_loss is None and config_kind("toy") == "sfron"
    assert main_forget.run_parts(run, to_namespace(TINY_CONFIG))[2] == "toy"
    config = to_namespace(TINY_CONFIG)
    plan = plan_forgetting(ForgetSpec("toy", 0), build_unet(config.model, config.data), config, None, None,
                           dual=True)
    assert plan.schedule == "alternate"
    assert "toy" in dit_methods() and "sa" not in dit_methods()
    validate_spec(DiTForgetSpec(forget_class=0, mode="toy", unlearn_loss="bogus"))  # reads_loss=False
    with pytest.raises(UsageError, match="--unlearn-loss 'bogus'"):
        validate_spec(DiTForgetSpec(forget_class=0, mode="sfron", unlearn_loss="bogus"))
    with pytest.raises(UsageError, match="--mode 'sa': expected one of"):
        validate_spec(DiTForgetSpec(forget_class=0, mode="sa"))


def test_registering_a_method_needs_its_loss():
    from ImageGeneration.core.methods import register_method

    with pytest.raises(TypeError, match="loss"):
        register_method("toy")


def test_the_table_holds_each_methods_defaults():
    from ImageGeneration.core.methods import SA_FISHER, SFRON_METHODS

    table = {name: (e.loss, e.reads_loss, e.update_methods, e.config_kind, e.inputs)
             for name, e in ((name, METHODS.get(name)) for name in METHODS)}
    assert table == {"salun": ("rl", True, (), "saliency_unlearn", frozenset()),
                     "ga": ("ga", False, (), "saliency_unlearn", frozenset()),
                     "rl": ("rl", False, (), "saliency_unlearn", frozenset()),
                     "sfron": ("adaga", True, SFRON_METHODS, "sfron", frozenset()),
                     "sa": ("sa", False, (), "sa", frozenset({SA_FISHER}))}


def test_dual_means_the_same_for_both_models():
    """``--optim``, ``--dual`` and ``--forget_lr`` come from one parser helper; both models' optimizers get
    DualOptim's forget state at ``--forget_lr`` with ``--dual`` (``dual_native``), one shared state without it."""
    from ImageGeneration.core.optim import forget_recipe
    from ImageGeneration.DDPM import main_forget as ddpm_forget
    from ImageGeneration.DDPM.config import to_namespace
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


def test_the_ddpm_run_config_is_built_once_and_frozen():
    """``main_forget.py``'s flags become one frozen config: the record keeps the parser's keys in order with
    ``--unlearn_loss`` completed; a flag without a field is refused; the YAML config is not changed by adopting a
    checkpoint's architecture."""
    import copy
    import dataclasses

    from ImageGeneration.DDPM import main_forget
    from ImageGeneration.DDPM.config import to_namespace
    from ImageGeneration.DDPM.run_config import ForgetRunConfig
    from ImageGeneration.DDPM.unlearn import adopt_architecture
    from ig_fixtures import TINY_CONFIG

    args = main_forget.parse_args(["--ckpt_folder", "x", "--mode", "salun", "--optim", "dual_sa"])
    run = ForgetRunConfig.from_args(args, "digits")
    assert list(run.record()) == list(vars(args))
    assert run.record() == {**vars(args), "unlearn_loss": "rl", "dataset": "digits"} and run.recipe == "dual_sa"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.mode = "ga"
    args.extra_flag = 1
    with pytest.raises(TypeError, match="extra_flag"):
        ForgetRunConfig.from_args(args, "digits")
    with pytest.raises(UsageError, match="--dual: means --optim dual_native"):
        ForgetRunConfig.from_args(main_forget.parse_args(["--ckpt_folder", "x", "--optim", "sgd", "--dual"]), "digits")
    ours, ckpt = to_namespace(copy.deepcopy(TINY_CONFIG)), copy.deepcopy(TINY_CONFIG)
    ckpt["model"]["ch"], ckpt["data"]["n_classes"] = 16, 7
    adopted = adopt_architecture(ours, to_namespace(ckpt))
    assert (adopted.model.ch, adopted.data.n_classes, adopted.optim.lr) == (16, 7, TINY_CONFIG["optim"]["lr"])
    assert (ours.model.ch, ours.data.n_classes) == (TINY_CONFIG["model"]["ch"], TINY_CONFIG["data"]["n_classes"])
