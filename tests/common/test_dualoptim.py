"""DualOptim / SharedOptim / make_unlearn_optimizer (dualoptim.recipes) against plain torch optimizers."""
import copy

import pytest
import torch
from torch import nn

from dualoptim.optimizers import DecoupledAdamW, DualOptim, SharedOptim, set_objective
from common.errors import UsageError
from dualoptim.recipes import make_unlearn_optimizer


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def forget_loss(model, x, y):
    # gradient ascent on the forget batch, as GA does
    return -nn.functional.cross_entropy(model(x), y)


def retain_loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def run_alternating(model, forget_step, retain_step, zero_grad, steps=50):
    data = batches(steps)
    for i, (x, y) in enumerate(data):
        if i % 2 == 0:
            forget_loss(model, x, y).backward()
            forget_step()
        else:
            retain_loss(model, x, y).backward()
            retain_step()
        zero_grad()
    return model


def assert_same_params(a, b, atol=1e-6):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=atol, rtol=1e-5, msg=name)


def test_dualoptim_matches_two_torch_optimizers_over_50_alternating_steps():
    model = small_net()
    reference = copy.deepcopy(model)
    opt = DualOptim(model.parameters(), forget_optim="adamw", forget_lr=1e-3, forget_weight_decay=0.05,
                    retain_optim="sgd", retain_lr=0.01, momentum=0.9, retain_weight_decay=5e-4)
    ref_forget = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=0.05)
    ref_retain = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def ref_zero():
        ref_forget.zero_grad()
        ref_retain.zero_grad()

    run_alternating(model, opt.forget_step, opt.retain_step, opt.zero_grad)
    run_alternating(reference, ref_forget.step, ref_retain.step, ref_zero)
    assert_same_params(model, reference, atol=0)
    # the parameters really moved
    assert not torch.allclose(model[0].weight, small_net()[0].weight)


def test_states_are_separate_and_sized_as_the_two_optimizers():
    model = small_net()
    opt = DualOptim(model.parameters())
    x, y = batches(1)[0]
    forget_loss(model, x, y).backward()
    opt.forget_step()
    opt.zero_grad()
    weight = model[0].weight
    assert set(opt.forget_optimizer.state[weight]) == {"step", "exp_avg", "exp_avg_sq"}
    assert len(opt.retain_optimizer.state) == 0  # a forget step leaves the retain state untouched
    retain_loss(model, x, y).backward()
    opt.retain_step()
    assert set(opt.retain_optimizer.state[weight]) == {"momentum_buffer"}
    assert opt.forget_optimizer.state[weight]["step"].item() == 1


def test_dualoptim_state_dict_round_trip_resumes_identically():
    model = small_net()
    opt = DualOptim(model.parameters(), forget_lr=3e-3, retain_lr=0.05)
    run_alternating(model, opt.forget_step, opt.retain_step, opt.zero_grad, steps=10)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run_alternating(model, opt.forget_step, opt.retain_step, opt.zero_grad, steps=10)

    resumed = small_net(seed=5)
    resumed.load_state_dict(saved_model)
    resumed_opt = DualOptim(resumed.parameters(), forget_lr=3e-3, retain_lr=0.05)
    resumed_opt.load_state_dict(saved_opt)
    run_alternating(resumed, resumed_opt.forget_step, resumed_opt.retain_step, resumed_opt.zero_grad, steps=10)
    assert_same_params(resumed, model, atol=0)


def test_dualoptim_with_schedulers_on_each_optimizer():
    model = small_net()
    opt = DualOptim(model.parameters(), forget_lr=1e-2, retain_lr=0.1)
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2], gamma=0.1) for o in opt.optimizers]
    for x, y in batches(3):
        forget_loss(model, x, y).backward()
        opt.forget_step()
        opt.zero_grad()
        retain_loss(model, x, y).backward()
        opt.retain_step()
        opt.zero_grad()
        for s in schedulers:
            s.step()
    assert opt.forget_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert opt.retain_optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)


def test_param_groups_are_shared_tensors_but_separate_hyperparameters():
    model = small_net()
    groups = [{"params": model[0].parameters(), "lr": 0.5}, {"params": model[3].parameters()}]
    opt = DualOptim(groups, forget_lr=1e-3, retain_lr=0.1)
    assert opt.forget_optimizer.param_groups[0]["params"][0] is model[0].weight
    assert opt.retain_optimizer.param_groups[0]["params"][0] is model[0].weight
    opt.forget_optimizer.param_groups[0]["lr"] = 0.25
    assert opt.retain_optimizer.param_groups[0]["lr"] == 0.5


def test_shared_sgd_uses_one_state_and_per_objective_learning_rates():
    """--optim sgd: one SGD for both objectives, forget steps at unlearn_lr, retain steps at retain_lr."""
    model = small_net()
    reference = copy.deepcopy(model)
    opt = make_unlearn_optimizer("sgd", model.parameters(), unlearn_lr=0.04, retain_lr=0.01,
                                 momentum=0.9, weight_decay=5e-4)
    assert isinstance(opt, SharedOptim) and opt.forget_optimizer is opt.retain_optimizer
    ref = torch.optim.SGD(reference.parameters(), lr=0.04, momentum=0.9, weight_decay=5e-4)

    def ref_step(lr):
        def step():
            ref.param_groups[0]["lr"] = lr
            ref.step()
        return step

    run_alternating(model, opt.forget_step, opt.retain_step, opt.zero_grad, steps=20)
    run_alternating(reference, ref_step(0.04), ref_step(0.01), ref.zero_grad, steps=20)
    assert_same_params(model, reference, atol=1e-7)
    assert opt.retain_optimizer.param_groups[0]["lr"] == 0.04  # the base lr is restored after each step


@pytest.mark.parametrize("name,forget_type,retain_type", [
    ("dual", torch.optim.AdamW, torch.optim.SGD),
    ("dual_as", torch.optim.AdamW, torch.optim.SGD),
    ("dual_aa", torch.optim.AdamW, torch.optim.AdamW),
    ("adam", torch.optim.AdamW, torch.optim.AdamW),
    ("sgd", torch.optim.SGD, torch.optim.SGD),
])
def test_factory_builds_the_research_code_optimizers(name, forget_type, retain_type):
    model = small_net()
    opt = make_unlearn_optimizer(name, model.parameters(), unlearn_lr=0.02, retain_lr=0.01,
                                 momentum=0.8, weight_decay=1e-4)
    assert type(opt.forget_optimizer) is forget_type and type(opt.retain_optimizer) is retain_type
    forget_group = opt.forget_optimizer.param_groups[0]
    assert forget_group["lr"] == 0.02
    if forget_type is torch.optim.AdamW:
        assert forget_group["weight_decay"] == 0.05
    if name.startswith("dual"):
        retain_group = opt.retain_optimizer.param_groups[0]
        assert retain_group["lr"] == 0.01
        if retain_type is torch.optim.SGD:
            assert (retain_group["momentum"], retain_group["weight_decay"]) == (0.8, 1e-4)


def test_unknown_optim_name_is_one_line_error_listing_choices():
    with pytest.raises(UsageError) as err:
        make_unlearn_optimizer("rmsprop", small_net().parameters(), unlearn_lr=0.1, retain_lr=0.1)
    message = str(err.value)
    assert "\n" not in message and "--optim" in message
    for choice in ("sgd", "adam", "dual", "dual_as", "dual_aa"):
        assert choice in message


# ---------------------------------------------------------------- DecoupledAdamW

def _loss_on(model, x, y, sign):
    return sign * nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("objective", ["forget", "retain"])
def test_decoupled_adamw_fixed_objective_is_adamw(foreach, objective):
    model = small_net()
    reference = copy.deepcopy(model)
    ratio = 2.5
    opt = DecoupledAdamW(model.parameters(), lr=1e-3, weight_decay=0.01, forget_lr_ratio=ratio, foreach=foreach)
    opt.set_objective(objective)
    lr = 1e-3 * (ratio if objective == "forget" else 1.0)
    ref = torch.optim.AdamW(reference.parameters(), lr=lr, weight_decay=0.01, foreach=foreach)
    for x, y in batches(20):
        for m, o in ((model, opt), (reference, ref)):
            _loss_on(m, x, y, 1).backward()
            o.step()
            o.zero_grad()
    assert_same_params(model, reference, atol=1e-7)


def test_decoupled_adamw_alternating_equals_two_independent_adamw():
    model = small_net()
    reference = copy.deepcopy(model)
    opt = DecoupledAdamW(model.parameters(), lr=1e-3, weight_decay=0.01, forget_lr_ratio=3.0)
    ref_forget = torch.optim.AdamW(reference.parameters(), lr=3e-3, weight_decay=0.01)
    ref_retain = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=0.01)
    # irregular schedule: 2 forget steps then 3 retain steps
    for i, (x, y) in enumerate(batches(30)):
        objective = "forget" if i % 5 < 2 else "retain"
        sign = -1 if objective == "forget" else 1
        opt.set_objective(objective)
        _loss_on(model, x, y, sign).backward()
        opt.step()
        opt.zero_grad()
        ref = ref_forget if objective == "forget" else ref_retain
        _loss_on(reference, x, y, sign).backward()
        ref.step()
        reference.zero_grad()
    assert_same_params(model, reference, atol=1e-7)
    state = opt.state[model[0].weight]
    assert state["step_forget"].item() == 12 and state["step_retain"].item() == 18


def test_decoupled_adamw_forget_step_leaves_retain_moments_untouched_and_vice_versa():
    model = small_net()
    opt = DecoupledAdamW(model.parameters(), lr=1e-2)
    (x, y), (x2, y2) = batches(2)
    opt.set_objective("retain")
    _loss_on(model, x, y, 1).backward()
    opt.step()
    opt.zero_grad()
    weight = model[0].weight
    retain_snapshot = {k: v.clone() for k, v in opt.state[weight].items() if k.endswith("_retain")}
    forget_snapshot = {k: v.clone() for k, v in opt.state[weight].items() if k.endswith("_forget")}
    assert all(torch.count_nonzero(v) == 0 for v in forget_snapshot.values())

    opt.set_objective("forget")
    _loss_on(model, x2, y2, -1).backward()
    opt.step()
    opt.zero_grad()
    for key, value in retain_snapshot.items():
        assert torch.equal(opt.state[weight][key], value), key
    assert torch.count_nonzero(opt.state[weight]["exp_avg_forget"]) > 0
    retain_snapshot = {k: v.clone() for k, v in opt.state[weight].items() if k.endswith("_forget")}
    opt.set_objective("retain")
    _loss_on(model, x, y, 1).backward()
    opt.step()
    for key, value in retain_snapshot.items():
        assert torch.equal(opt.state[weight][key], value), key


def test_decoupled_adamw_shared_second_moment():
    model = small_net()
    opt = DecoupledAdamW(model.parameters(), decouple_m=True, decouple_v=False)
    x, y = batches(1)[0]
    _loss_on(model, x, y, 1).backward()
    opt.step()
    keys = set(opt.state[model[0].weight])
    assert keys == {"step_forget", "step_retain", "exp_avg_forget", "exp_avg_retain", "exp_avg_sq"}
    coupled = DecoupledAdamW(small_net().parameters(), decouple_m=False, decouple_v=False)
    net = coupled.param_groups[0]["params"]
    loss = sum(p.sum() for p in net)
    loss.backward()
    coupled.step()
    assert set(coupled.state[net[0]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_decoupled_adamw_state_dict_round_trip_and_objective_persist():
    model = small_net()
    opt = DecoupledAdamW(model.parameters(), lr=1e-3, forget_lr_ratio=2.0)
    data = batches(12)

    def run(m, o, chunk):
        for i, (x, y) in enumerate(chunk):
            o.set_objective("forget" if i % 2 == 0 else "retain")
            _loss_on(m, x, y, -1 if i % 2 == 0 else 1).backward()
            o.step()
            o.zero_grad()

    run(model, opt, data[:6])
    opt.set_objective("forget")
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, data[6:])

    resumed = small_net(seed=3)
    resumed.load_state_dict(saved_model)
    resumed_opt = DecoupledAdamW(resumed.parameters(), lr=1e-3, forget_lr_ratio=2.0)
    resumed_opt.load_state_dict(saved_opt)
    assert resumed_opt.objective == "forget"
    run(resumed, resumed_opt, data[6:])
    assert_same_params(resumed, model, atol=0)


def test_decoupled_adamw_follows_lr_scheduler_for_both_objectives():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = DecoupledAdamW(model.parameters(), lr=0.1, weight_decay=0.0, forget_lr_ratio=2.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    # first Adam step moves by exactly lr * sign(grad) (bias-corrected m/sqrt(v) = 1)
    opt.set_objective("forget")
    model.weight.grad = torch.ones_like(model.weight)
    opt.step()
    assert model.weight.item() == pytest.approx(1.0 - 2.0 * 0.05, abs=1e-6)
    opt.set_objective("retain")
    model.weight.grad = torch.ones_like(model.weight)
    opt.step()
    assert model.weight.item() == pytest.approx(1.0 - 0.1 - 0.05, abs=1e-6)
    scheduler.step()


def test_set_objective_reaches_through_wrappers_and_rejects_bad_names():
    model = small_net()
    opt = DecoupledAdamW(model.parameters())

    class Wrapper:  # like accelerate's AcceleratedOptimizer: shares param_groups
        def __init__(self, inner):
            self.optimizer = inner

        @property
        def param_groups(self):
            return self.optimizer.param_groups

    set_objective(Wrapper(opt), "forget")
    assert opt.objective == "forget"
    plain = torch.optim.AdamW(model.parameters())
    set_objective(plain, "forget")  # no-op on optimizers without objectives
    assert "objective" not in plain.param_groups[0]
    with pytest.raises(ValueError, match="objective"):
        opt.set_objective("both")


def test_lr_of_each_objective_is_the_rate_its_next_step_uses():
    from dualoptim.optimizers import DecoupledAdamW, ObjectiveOptim, SharedOptim

    weight = torch.nn.Parameter(torch.zeros(3))
    dual = DualOptim([weight], "adamw", 1e-3, 0.05, "sgd", 0.01, 0.9, 5e-4)
    assert (dual.lr("forget"), dual.lr("retain")) == (1e-3, 0.01)
    shared = SharedOptim(torch.optim.SGD([weight], lr=0.1), 0.1, 0.02)
    assert shared.lr("forget") == pytest.approx(0.1) and shared.lr("retain") == pytest.approx(0.02)
    decoupled = ObjectiveOptim(DecoupledAdamW([weight], lr=1e-5, forget_lr_ratio=2.0))
    assert decoupled.lr("forget") == pytest.approx(2e-5) and decoupled.lr("retain") == pytest.approx(1e-5)


def test_the_package_and_the_documented_common_path_expose_the_same_objects():
    import dualoptim
    import common
    import common.dualoptim
    import common.errors
    for name in ("DualOptim", "DecoupledAdamW", "SharedOptim", "ObjectiveOptim", "set_objective",
                 "make_unlearn_optimizer"):
        assert getattr(dualoptim, name) is getattr(common.dualoptim, name)
    assert common.DualOptim is dualoptim.DualOptim and common.__version__ == dualoptim.__version__
    assert dualoptim.UsageError is common.errors.UsageError is UsageError  # one error class, one CLI line
    assert dualoptim.make_unlearn_optimizer is make_unlearn_optimizer
    with pytest.raises(AttributeError):
        dualoptim.no_such_name
