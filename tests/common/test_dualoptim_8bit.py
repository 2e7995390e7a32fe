"""DecoupledAdamW8bit against bitsandbytes' own AdamW8bit (on CPU, where bitsandbytes' kernels also run)."""
import copy
import io

import pytest
import torch
from torch import nn

bnb = pytest.importorskip("bitsandbytes")

from dualoptim.optimizers import set_objective  # noqa: E402
from dualoptim.optimizers_8bit import AdamW8bit, DecoupledAdamW8bit, embedding_weights  # noqa: E402


def net(seed=0):
    """First weight (64*96 elements) gets 8-bit states; the smaller tensors stay 32-bit (min_8bit_size 4096)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.Tanh(), nn.Linear(96, 3))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 64, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def backward(model, x, y, objective):
    loss = nn.functional.cross_entropy(model(x), y)
    (-loss if objective == "forget" else loss).backward()  # gradient ascent on forget batches


def assert_identical(a, b):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


def irregular(i):
    """2 forget steps, then 3 retain steps."""
    return "forget" if i % 5 < 2 else "retain"


@pytest.mark.parametrize("objective", ["forget", "retain"])
def test_fixed_objective_is_bitsandbytes_adamw8bit(objective):
    model, reference = net(), net()
    opt = DecoupledAdamW8bit(model.parameters(), lr=1e-3, weight_decay=0.01, forget_lr_ratio=2.5)
    opt.set_objective(objective)
    ref = bnb.optim.AdamW8bit(reference.parameters(), lr=1e-3 * (2.5 if objective == "forget" else 1.0),
                              weight_decay=0.01)
    start = model[0].weight.detach().clone()
    for x, y in batches(12):
        for m, o in ((model, opt), (reference, ref)):
            backward(m, x, y, objective)
            o.step()
            o.zero_grad()
    assert not torch.equal(model[0].weight, start)
    assert_identical(model, reference)
    state = opt.state[model[0].weight]
    assert state[f"state1_{objective}"].dtype == torch.uint8 and state[f"absmax1_{objective}"].dtype == torch.float32
    assert opt.state[model[0].bias][f"state1_{objective}"].dtype == torch.float32
    assert state[f"step_{objective}"] == 12


def test_alternating_equals_two_independent_adamw8bit():
    model, reference = net(), net()
    opt = DecoupledAdamW8bit(model.parameters(), lr=1e-3, weight_decay=0.01, forget_lr_ratio=3.0)
    ref_forget = bnb.optim.AdamW8bit(reference.parameters(), lr=3e-3, weight_decay=0.01)
    ref_retain = bnb.optim.AdamW8bit(reference.parameters(), lr=1e-3, weight_decay=0.01)
    for i, (x, y) in enumerate(batches(20)):
        objective = irregular(i)
        opt.set_objective(objective)
        backward(model, x, y, objective)
        opt.step()
        opt.zero_grad()
        backward(reference, x, y, objective)
        (ref_forget if objective == "forget" else ref_retain).step()
        reference.zero_grad()
    assert_identical(model, reference)
    state = opt.state[model[0].weight]
    assert (state["step_forget"], state["step_retain"]) == (8, 12)
    ref_state = ref_forget.state[reference[0].weight]
    assert torch.equal(state["state1_forget"], ref_state["state1"])
    assert torch.equal(state["absmax2_forget"], ref_state["absmax2"])


def test_fully_coupled_is_one_adamw8bit_with_forget_lr_on_forget_steps():
    model, reference = net(), net()
    opt = DecoupledAdamW8bit(model.parameters(), lr=1e-3, forget_lr_ratio=2.0, decouple_m=False,
                             decouple_v=False)
    ref = bnb.optim.AdamW8bit(reference.parameters(), lr=1e-3)
    for i, (x, y) in enumerate(batches(10)):
        objective = irregular(i)
        set_objective(opt, objective)
        backward(model, x, y, objective)
        opt.step()
        opt.zero_grad()
        ref.param_groups[0]["lr"] = 2e-3 if objective == "forget" else 1e-3
        backward(reference, x, y, objective)
        ref.step()
        ref.zero_grad()
    assert_identical(model, reference)
    assert set(opt.state[model[0].weight]) == set(ref.state[reference[0].weight])


def test_forget_steps_use_lr_times_ratio_and_follow_the_scheduler():
    # the first Adam step of either objective moves a weight by exactly its lr (m / sqrt(v) = sign(grad))
    weight = nn.Parameter(torch.ones(1))
    opt = DecoupledAdamW8bit([weight], lr=0.1, weight_decay=0.0, forget_lr_ratio=2.0)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    opt.set_objective("forget")
    weight.grad = torch.ones(1)
    opt.step()
    assert weight.item() == pytest.approx(1.0 - 2.0 * 0.05, abs=1e-6)
    opt.set_objective("retain")
    weight.grad = torch.ones(1)
    opt.step()
    assert weight.item() == pytest.approx(1.0 - 0.1 - 0.05, abs=1e-6)


def test_state_dict_round_trip_resumes_identically():
    model = net()
    opt = DecoupledAdamW8bit(model.parameters(), lr=1e-3, forget_lr_ratio=2.0)
    data = batches(12)

    def run(m, o, steps):
        for i, (x, y) in steps:
            o.set_objective(irregular(i))
            backward(m, x, y, irregular(i))
            o.step()
            o.zero_grad()

    run(model, opt, list(enumerate(data))[:6])
    opt.set_objective("forget")
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    run(model, opt, list(enumerate(data))[6:])

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = net(seed=3)
    resumed.load_state_dict(saved["model"])
    resumed_opt = DecoupledAdamW8bit(resumed.parameters(), lr=1e-3, forget_lr_ratio=2.0)
    resumed_opt.load_state_dict(saved["optimizer"])
    assert resumed_opt.objective == "forget"
    run(resumed, resumed_opt, list(enumerate(data))[6:])
    assert_identical(resumed, model)


def test_loading_into_bf16_parameters_keeps_quantisation_scales_float32():
    weight = nn.Parameter(torch.randn(64, 80, dtype=torch.bfloat16))
    opt = DecoupledAdamW8bit([weight])
    weight.grad = torch.randn_like(weight)
    opt.step()
    loaded = DecoupledAdamW8bit([weight])
    loaded.load_state_dict(copy.deepcopy(opt.state_dict()))
    state = loaded.state[weight]
    assert {state[f"absmax{i}_{o}"].dtype for i in (1, 2) for o in ("forget", "retain")} == {torch.float32}
    assert state["state1_retain"].dtype == torch.uint8


def test_bad_objective_and_ratio_are_rejected():
    opt = DecoupledAdamW8bit(net().parameters())
    with pytest.raises(ValueError, match="objective"):
        opt.set_objective("both")
    with pytest.raises(ValueError, match="forget_lr_ratio"):
        DecoupledAdamW8bit(net().parameters(), forget_lr_ratio=-1.0)


@pytest.mark.parametrize("make", [lambda params, **kw: AdamW8bit(params, **kw),
                                  lambda params, **kw: DecoupledAdamW8bit(params, **kw)])
def test_fp32_params_stay_32bit_in_their_optimizer_only(make):
    embedded = nn.Sequential(nn.Embedding(100, 64), nn.Linear(64, 96))  # both above the 4096-element threshold
    opt = make(embedded.parameters(), fp32_params=embedding_weights(embedded))
    embedded(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()

    def moment_dtypes(optimizer, param):
        return {value.dtype for key, value in optimizer.state[param].items() if key.startswith(("state1", "state2"))}

    assert moment_dtypes(opt, embedded[0].weight) == {torch.float32}
    assert moment_dtypes(opt, embedded[1].weight) == {torch.uint8}
    # a later optimizer over another model is not affected (bitsandbytes' global manager would be,
    # through the parameter's position)
    other = net()
    later = make(other.parameters())
    backward(other, *batches(1)[0], "retain")
    later.step()
    assert moment_dtypes(later, other[0].weight) == {torch.uint8}
