"""The learning-rate-free forget recipes (``--optim dual_prodigy`` / ``dual_sf``) against the packages they name.

Each recipe's forget steps must be the package optimizer's (``prodigyopt.Prodigy``,
``schedulefree.AdamWScheduleFree``) and its retain steps torch's SGD with momentum, to the last bit,
over interleaved forget and retain steps; the state must survive a ``weights_only`` save and load; the
schedule-free average must be what is evaluated; and an absent package must be one line.
"""
import copy
import inspect
import io
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("prodigyopt")
pytest.importorskip("schedulefree")
import prodigyopt  # noqa: E402
import schedulefree  # noqa: E402

from common import tracking  # noqa: E402
from common.errors import UsageError  # noqa: E402
from dualoptim.optimizers import PairedOptimizer, evaluation_weights, set_objective, step_size_estimates  # noqa: E402
from dualoptim.recipes import (IMAGE_FLAG, LLM_FLAG, LR_FREE_DEFAULT_LR, LR_FREE_MULTIPLIERS,  # noqa: E402
                               RecipeSettings, build_recipe, get_recipe)

RETAIN_LR, MOMENTUM, WEIGHT_DECAY = 2.0 ** -6, 0.8, 1e-3
PACKAGE_OPTIMIZER = {"dual_prodigy": prodigyopt.Prodigy, "dual_sf": schedulefree.AdamWScheduleFree}


def settings(name):
    forget_lr = LR_FREE_DEFAULT_LR[name]
    return RecipeSettings(forget_lr=forget_lr, retain_lr=RETAIN_LR, shared_lrs=(forget_lr, RETAIN_LR),
                          momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def reference_pair(name, model):
    """The recipe written out: the package's optimizer at its default lr and wd 0.05 (the research code's
    weight decay of adaptive optimizers), torch's SGD with momentum for retain steps."""
    forget = PACKAGE_OPTIMIZER[name](model.parameters(), lr=LR_FREE_DEFAULT_LR[name], weight_decay=0.05)
    if hasattr(forget, "train"):
        forget.train()  # schedule-free optimizers are built in eval mode
    retain = torch.optim.SGD(model.parameters(), RETAIN_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return {"forget": forget, "retain": retain}


def step_on_batch(model, step, objective, g):
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    (-loss if objective == "forget" else loss).backward()
    step(objective)


def schedule(steps, forget_only):
    return ["forget" if forget_only or i % 3 == 0 else "retain" for i in range(steps)]


def assert_params_equal(a, b):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("forget_only", [True, False], ids=["forget_steps", "interleaved"])
@pytest.mark.parametrize("name", ["dual_prodigy", "dual_sf"])
def test_steps_are_the_package_optimizer_and_torch_sgd(name, forget_only):
    model = small_net()
    reference = copy.deepcopy(model)
    optimizer = build_recipe(IMAGE_FLAG, name, model.parameters(), settings(name))
    assert type(optimizer.forget_optimizer) is PACKAGE_OPTIMIZER[name] and optimizer.is_dual
    hand = reference_pair(name, reference)
    g, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for objective in schedule(12, forget_only):
        step_on_batch(model, optimizer.step, objective, g)
        step_on_batch(reference, lambda o: hand[o].step(), objective, g_ref)
        assert_params_equal(model, reference)
    start = next(small_net().parameters())
    assert not torch.equal(next(model.parameters()), start)  # the steps moved the weights
    if name == "dual_prodigy":  # d grew from d0 = 1e-6 on the forget gradients only
        assert step_size_estimates(optimizer) == {"forget/d": hand["forget"].param_groups[0]["d"]}
        assert step_size_estimates(optimizer)["forget/d"] > 1e-6


@pytest.mark.parametrize("name", ["dual_prodigy", "dual_sf"])
def test_state_round_trips_through_a_weights_only_load(name):
    """Six steps, save model and optimizer, load both into fresh objects, six more: the straight run's bits."""
    model = small_net()
    optimizer = build_recipe(IMAGE_FLAG, name, model.parameters(), settings(name))
    g = torch.Generator().manual_seed(2)
    steps = schedule(12, forget_only=False)
    for objective in steps[:6]:
        step_on_batch(model, optimizer.step, objective, g)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    generator_state = g.get_state()
    for objective in steps[6:]:
        step_on_batch(model, optimizer.step, objective, g)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved["optimizer"]) == {"forget", "retain"}
    resumed = small_net(seed=5)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = build_recipe(IMAGE_FLAG, name, resumed.parameters(), settings(name))
    resumed_optimizer.load_state_dict(saved["optimizer"])
    g.set_state(generator_state)
    for objective in steps[6:]:
        step_on_batch(resumed, resumed_optimizer.step, objective, g)
    assert_params_equal(resumed, model)
    assert step_size_estimates(resumed_optimizer) == step_size_estimates(optimizer)


def test_schedule_free_evaluates_its_average_and_trains_on_its_interpolation():
    """eval_mode puts x = (y - (1 - beta1) z) / beta1 in the parameters; evaluation_weights swaps back."""
    model = small_net()
    optimizer = build_recipe(IMAGE_FLAG, "dual_sf", model.parameters(), settings("dual_sf"))
    g = torch.Generator().manual_seed(3)
    for objective in schedule(6, forget_only=False):
        step_on_batch(model, optimizer.step, objective, g)
    param = next(model.parameters())
    y = param.detach().clone()
    z = optimizer.forget_optimizer.state[param]["z"]
    with optimizer.evaluation_weights():
        torch.testing.assert_close(param, (y - 0.1 * z) / 0.9)
        assert not torch.allclose(param, y)
    torch.testing.assert_close(param, y)
    step_on_batch(model, optimizer.step, "forget", g)  # back in train mode: stepping is allowed


def test_optimizers_with_one_set_of_weights_ignore_the_swap():
    model = small_net()
    optimizer = build_recipe(IMAGE_FLAG, "dual", model.parameters(), settings("dual_prodigy"))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.eval_mode()
    optimizer.train_mode()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert step_size_estimates(optimizer) == {}


def test_report_to_logs_prodigys_step_size_estimate():
    class Recorder(tracking.Tracker):
        def __init__(self):
            self.logged = {}

        def scalars(self, step, values):
            self.logged[step] = dict(values)

    model = small_net()
    optimizer = build_recipe(IMAGE_FLAG, "dual_prodigy", model.parameters(), settings("dual_prodigy"))
    reporter = tracking.StepReporter(Recorder(), every=2)
    g = torch.Generator().manual_seed(4)
    for objective in ["forget", "retain", "forget", "forget"]:
        step_on_batch(model, optimizer.step, objective, g)
        reporter.step({objective: 0.0}, optimizer)
    assert sorted(reporter.tracker.logged) == [2, 4]
    assert reporter.tracker.logged[4]["estimate/forget/d"] == optimizer.forget_optimizer.param_groups[0]["d"]
    assert reporter.tracker.logged[4]["estimate/forget/d"] > reporter.tracker.logged[2]["estimate/forget/d"]
    assert "estimate/retain/d" not in reporter.tracker.logged[4]


def test_prodigys_estimate_grows_without_bound_on_an_ascent_loss_unless_its_growth_rate_is_capped():
    """Why Prodigy's default fails with ascent forget losses (SFR-on, SCRUB on the CIFAR-10 subset): cross-entropy
    ascent has no minimum whose distance ``d`` could estimate. Prodigy's own ``growth_rate`` (through
    ``forget_kwargs``) bounds ``d_{t+1} <= growth_rate * d_t`` after its first estimate."""
    from dualoptim import DualOptim
    estimates = {}
    for growth_rate in (float("inf"), 1.05):
        model = small_net()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        optimizer = DualOptim(model.parameters(), forget_optim="prodigy", forget_lr=1.0,
                              forget_kwargs={"growth_rate": growth_rate})
        estimates[growth_rate] = []
        for _ in range(25):
            model.zero_grad()
            (-nn.functional.cross_entropy(model(x), y)).backward()
            optimizer.forget_step()
            estimates[growth_rate].append(optimizer.forget_optimizer.param_groups[0]["d"])
    capped = estimates[1.05]
    assert all(later <= 1.05 * earlier * (1 + 1e-12) for earlier, later in zip(capped[1:], capped[2:]))
    assert estimates[float("inf")][-1] > 1e6 * capped[-1]  # uncapped: many orders of magnitude in 25 steps


@pytest.mark.parametrize("flag,name,package", [
    (IMAGE_FLAG, "dual_prodigy", "prodigyopt"), (IMAGE_FLAG, "dual_sf", "schedulefree"),
    (LLM_FLAG, "dual_prodigy_adam", "prodigyopt"), (LLM_FLAG, "dual_sf_adam", "schedulefree")])
def test_a_missing_package_is_one_line_naming_it_and_the_extra(flag, name, package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # what an environment without it gives an import
    with pytest.raises(UsageError) as raised:
        get_recipe(flag, name)
    assert str(raised.value) == (f"{flag} {name}: needs the {package} package "
                                 f"(pip install {package}, or pip install 'dualoptim[lrfree]')")


def test_a_missing_package_stops_an_entry_script_before_it_loads_anything(monkeypatch, tmp_path, capsys):
    from ImageClassification import main_random

    monkeypatch.setitem(sys.modules, "schedulefree", None)
    with pytest.raises(SystemExit):
        main_random.main(["--unlearn", "RL", "--optim", "dual_sf", "--dataset", "digits",
                          "--save_dir", str(tmp_path / "run"), "--model_path", str(tmp_path / "absent.pth.tar")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optim dual_sf: needs the schedulefree package" in err
    assert not (tmp_path / "run").exists()


def test_default_lrs_are_the_packages_and_the_grid_is_three_points_per_decade_around_them():
    assert LR_FREE_DEFAULT_LR["dual_prodigy"] == LR_FREE_DEFAULT_LR["dual_prodigy_adam"] == inspect.signature(prodigyopt.Prodigy).parameters["lr"].default
    assert LR_FREE_DEFAULT_LR["dual_sf"] == LR_FREE_DEFAULT_LR["dual_sf_adam"] == inspect.signature(
        schedulefree.AdamWScheduleFree).parameters["lr"].default
    assert 1.0 in LR_FREE_MULTIPLIERS and len(LR_FREE_MULTIPLIERS) == 11
    steps = [b / a for a, b in zip(LR_FREE_MULTIPLIERS, LR_FREE_MULTIPLIERS[1:])]
    assert all(abs(step - 10 ** (1 / 3)) < 0.01 for step in steps)


# --optim_cfg dual_prodigy_adam / dual_sf_adam: one torch optimizer (PairedOptimizer) for the LLM loop
LLM_RETAIN_LR = 2.0 ** -10   # forget_lr / retain_lr = 1024 * default: exact in floats
LLM_PACKAGE_OPTIMIZER = {"dual_prodigy_adam": prodigyopt.Prodigy, "dual_sf_adam": schedulefree.AdamWScheduleFree}


def decay_groups(model):
    """Weight decay on matrices only, as the LLM's ``decay_parameter_groups``."""
    return [{"params": [p for p in model.parameters() if p.dim() > 1], "weight_decay": 0.05},
            {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def llm_pair(name, model):
    forget_lr = LR_FREE_DEFAULT_LR[name]
    settings = RecipeSettings(forget_lr=forget_lr, retain_lr=LLM_RETAIN_LR, shared_lrs=(LLM_RETAIN_LR,) * 2,
                              momentum=0.0)
    (optimizer,) = build_recipe(LLM_FLAG, name, decay_groups(model), settings).optimizers
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 16)


@pytest.mark.parametrize("name", ["dual_prodigy_adam", "dual_sf_adam"])
def test_llm_pair_steps_are_the_package_optimizer_and_torch_adamw_under_the_schedule(name):
    """Objectives told with set_objective, as LLM/trainer.py does; forget steps run at the default lr times
    the schedule's factor, retain steps at the scheduled retain lr."""
    model = small_net()
    reference = copy.deepcopy(model)
    optimizer, scheduler = llm_pair(name, model)
    assert type(optimizer) is PairedOptimizer and optimizer.is_dual
    forget = LLM_PACKAGE_OPTIMIZER[name](decay_groups(reference), lr=LR_FREE_DEFAULT_LR[name], weight_decay=0.05)
    if hasattr(forget, "train"):
        forget.train()
    retain = torch.optim.AdamW(decay_groups(reference), lr=LLM_RETAIN_LR, weight_decay=0.05)
    g, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i, objective in enumerate(schedule(12, forget_only=False)):
        set_objective(optimizer, objective)
        step_on_batch(model, lambda o: optimizer.step(), objective, g)
        scheduler.step()
        factor = 1.0 - i / 16
        for group in forget.param_groups:
            group["lr"] = LR_FREE_DEFAULT_LR[name] * factor
        step_on_batch(reference, lambda o: (forget if o == "forget" else retain).step(), objective, g_ref)
        for group in retain.param_groups:
            group["lr"] = LLM_RETAIN_LR * (1.0 - (i + 1) / 16)
        assert_params_equal(model, reference)
    assert optimizer.param_groups[0]["lr"] == retain.param_groups[0]["lr"]
    if name == "dual_prodigy_adam":
        assert step_size_estimates(optimizer) == {"forget/d": forget.param_groups[0]["d"]}


@pytest.mark.parametrize("name", ["dual_prodigy_adam", "dual_sf_adam"])
def test_llm_pair_state_round_trips_and_the_schedule_keeps_moving_it(name):
    model = small_net()
    optimizer, scheduler = llm_pair(name, model)
    g = torch.Generator().manual_seed(2)
    steps = schedule(12, forget_only=False)

    def run(net, opt, sched, objectives):
        for objective in objectives:
            set_objective(opt, objective)
            step_on_batch(net, lambda o: opt.step(), objective, g)
            sched.step()

    run(model, optimizer, scheduler, steps[:6])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, buffer)
    generator_state = g.get_state()
    run(model, optimizer, scheduler, steps[6:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = small_net(seed=5)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer, resumed_scheduler = llm_pair(name, resumed)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert resumed_optimizer.param_groups is resumed_optimizer.retain_optimizer.param_groups
    g.set_state(generator_state)
    run(resumed, resumed_optimizer, resumed_scheduler, steps[6:])
    assert_params_equal(resumed, model)
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_llm_sf_pair_swaps_weights_through_accelerates_wrapper():
    """LLM/trainer.py hands run_schedule accelerate's AcceleratedOptimizer: its eval()/train() reach the pair."""
    from accelerate import Accelerator

    model = small_net()
    optimizer, _ = llm_pair("dual_sf_adam", model)
    model, wrapped = Accelerator(cpu=True).prepare(model, optimizer)
    g = torch.Generator().manual_seed(3)
    for objective in schedule(4, forget_only=False):
        set_objective(wrapped, objective)
        step_on_batch(model, lambda o: wrapped.step(), objective, g)
    param = next(model.parameters())
    y = param.detach().clone()
    z = optimizer.forget_optimizer.state[param]["z"]
    with evaluation_weights(wrapped):
        torch.testing.assert_close(param, (y - 0.1 * z) / 0.9)
    torch.testing.assert_close(param, y)
