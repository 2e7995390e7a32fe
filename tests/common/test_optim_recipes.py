"""The --optim / --optim_cfg recipes (dualoptim.recipes), each against its definition written out by hand.

The paper's optimizer ablations are checked step for step, over alternating forget and retain
steps, against the research code's definitions (``unlearn/sfron.py`` and ``optim.py`` /
``optim8bit.py`` of the original) rebuilt from plain torch (or bitsandbytes) optimizers and, where
torch has none (Lion, the shared first moment of ``dual_share``), from the update written out in
tensor operations.  The learning rates are powers of two, so ``forget_lr / retain_lr * retain_lr``
is exact and the decoupled optimizers must agree to the last bit where they run the same kernels.
"""
import copy

import pytest
import torch
from torch import nn

from dualoptim.optimizers import DualOptim, HybridAdamSGD, Lion, ObjectiveOptim, SharedOptim
from common.errors import UsageError
from dualoptim.recipes import (IMAGE_FLAG, LLM_FLAG, RecipeSettings, build_recipe, get_recipe, is_dual_recipe,
                                  recipe_names)

FORGET_LR, RETAIN_LR = 2.0 ** -9, 2.0 ** -6
MOMENTUM, WEIGHT_DECAY = 0.8, 1e-3      # reach the SGD optimizers only
SETTINGS = RecipeSettings(forget_lr=FORGET_LR, retain_lr=RETAIN_LR, shared_lrs=(FORGET_LR, RETAIN_LR),
                          momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
ABLATIONS = ["dual_sa", "dual_ss", "dual_ls", "dual_ll", "dual_sl", "dual_share", "dual_aa_m", "dual_aa_v",
             "dual_aa_8bit"]


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def objective(i):
    """SFR-on's order with --sfron_freq 2: a forget step, then two retain steps."""
    return "forget" if i % 3 == 0 else "retain"


def backward(model, x, y, i):
    """Gradient ascent on forget batches, cross-entropy on retain batches."""
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    (-loss if objective(i) == "forget" else loss).backward()


def train(model, step, steps=24, seed=1, first=0):
    """Steps ``first`` to ``steps - 1`` of the batch stream ``seed``, each ``step(objective)``."""
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        if i >= first:
            backward(model, x, y, i)
            step(objective(i))
    return model


def lockstep(model, step, reference, reference_step, exact=True, steps=24, features=6, seed=1):
    """Train both models on the same batches, ``step`` and ``reference_step``; compare after every step."""
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        x, y = torch.randn(8, features, generator=g), torch.randint(0, 3, (8,), generator=g)
        for net, net_step in ((model, step), (reference, reference_step)):
            backward(net, x, y, i)
            net_step(objective(i))
        assert_params(model, reference, exact)


def assert_params(a, b, exact=True):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if exact:
            assert torch.equal(pa, pb), name
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=name)


class HandLion:
    """lion_pytorch.Lion's update, written out (the research code's ``Lion(lr, weight_decay=1e-2)``)."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.99)):
        self.params, self.lr, self.wd, self.betas = list(params), lr, weight_decay, betas
        self.exp_avg = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        for p, exp_avg in zip(self.params, self.exp_avg):
            p.mul_(1 - self.lr * self.wd)
            update = exp_avg * beta1 + p.grad * (1 - beta1)
            p.add_(torch.sign(update), alpha=-self.lr)
            exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def hand_optimizer(kind, params, lr):
    """The research code's optimizer of each kind in its SFR-on ablations."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=0.05)
    return HandLion(params, lr, weight_decay=1e-2)


@pytest.mark.parametrize("name,forget,retain", [
    ("dual_sa", "sgd", "adamw"), ("dual_ss", "sgd", "sgd"), ("dual_ls", "lion", "sgd"),
    ("dual_ll", "lion", "lion"), ("dual_sl", "sgd", "lion"),
    ("dual", "adamw", "sgd"), ("dual_as", "adamw", "sgd"), ("dual_aa", "adamw", "adamw"),
])
def test_pairs_match_their_two_optimizers_step_for_step(name, forget, retain):
    model = small_net()
    reference = copy.deepcopy(model)
    optimizer = build_recipe(IMAGE_FLAG, name, model.parameters(), SETTINGS)
    assert type(optimizer) is DualOptim and optimizer.is_dual
    hand = {"forget": hand_optimizer(forget, reference.parameters(), FORGET_LR),
            "retain": hand_optimizer(retain, reference.parameters(), RETAIN_LR)}
    lockstep(model, optimizer.step, reference, lambda objective: hand[objective].step())


def test_lion_decays_then_steps_by_the_sign_of_the_interpolated_momentum():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    lion = Lion([p], lr=0.1, betas=(0.5, 0.9), weight_decay=0.2)
    lion.state[p]["exp_avg"] = torch.tensor([1.0, 1.0, -1.0])
    p.grad = torch.tensor([-4.0, 0.5, 3.0])
    lion.step()
    # interpolation 0.5 m + 0.5 g = [-1.5, 0.75, 1.0]; theta (1 - 0.02) - 0.1 sign(.)
    assert torch.allclose(p.detach(), torch.tensor([0.98 + 0.1, -1.96 - 0.1, 0.49 - 0.1]))
    assert torch.allclose(lion.state[p]["exp_avg"], torch.tensor([0.9 - 0.4, 0.9 + 0.05, -0.9 + 0.3]))


def test_dual_share_is_the_research_codes_hybrid_adam_sgd():
    """HybridAdamSGD of the original (optim.py): one m for both sides; v and t for the Adam (forget) side."""
    model = small_net()
    reference = copy.deepcopy(model)
    optimizer = build_recipe(IMAGE_FLAG, "dual_share", model.parameters(), SETTINGS)
    assert type(optimizer) is HybridAdamSGD and optimizer.is_dual
    params = list(reference.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = 0
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    @torch.no_grad()
    def hybrid_step(objective):
        nonlocal t
        if objective == "forget":
            t += 1
        for p, m_p, v_p in zip(params, m, v):
            grad = p.grad + WEIGHT_DECAY * p
            m_p.mul_(beta1).add_(grad, alpha=1 - beta1)
            if objective == "retain":  # step_sgd, at --retain_lr
                p.add_(m_p, alpha=-RETAIN_LR)
            else:                      # step_adam, at --unlearn_lr
                v_p.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v_p.sqrt() / (1 - beta2 ** t) ** 0.5).add_(eps)
                p.addcdiv_(m_p, denom, value=-FORGET_LR / (1 - beta1 ** t))

    lockstep(model, optimizer.step, reference, hybrid_step, exact=False)  # torch's Adam updates m with lerp_


def test_dual_share_keeps_its_shared_moment_across_state_dict():
    """A resumed dual_share run continues exactly like an unbroken one, its first moment shared again."""
    whole, first = small_net(), small_net()
    train(whole, build_recipe(IMAGE_FLAG, "dual_share", whole.parameters(), SETTINGS).step, steps=24)
    optimizer = build_recipe(IMAGE_FLAG, "dual_share", first.parameters(), SETTINGS)
    train(first, optimizer.step, steps=12)
    # copied side by side, as a load onto another device does: the two sides' moment tensors come apart
    saved = {side: copy.deepcopy(state) for side, state in optimizer.state_dict().items()}
    resumed = copy.deepcopy(first)
    optimizer = build_recipe(IMAGE_FLAG, "dual_share", resumed.parameters(), SETTINGS)
    optimizer.load_state_dict(saved)
    train(resumed, optimizer.step, steps=24, first=12)
    assert_params(resumed, whole)


def tied_adamw(params, shared):
    """Two AdamW (forget, retain; wd 0.05) whose ``shared`` state tensor is one tensor: one moment for both."""
    params = list(params)
    forget = torch.optim.AdamW(params, FORGET_LR, weight_decay=0.05)
    retain = torch.optim.AdamW(params, RETAIN_LR, weight_decay=0.05)
    for p in params:
        for opt in (forget, retain):
            opt.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        retain.state[p][shared] = forget.state[p][shared]
    return {"forget": forget, "retain": retain}


@pytest.mark.parametrize("name,shared", [("dual_aa_m", "exp_avg_sq"), ("dual_aa_v", "exp_avg")])
def test_one_decoupled_moment_matches_two_adamw_sharing_the_other(name, shared):
    model = small_net()
    reference = copy.deepcopy(model)
    optimizer = build_recipe(IMAGE_FLAG, name, model.parameters(), SETTINGS)
    assert type(optimizer) is ObjectiveOptim and optimizer.is_dual
    group = optimizer.optimizers[0].param_groups[0]
    assert (group["decouple_m"], group["decouple_v"]) == (name == "dual_aa_m", name == "dual_aa_v")
    hand = tied_adamw(reference.parameters(), shared)
    lockstep(model, optimizer.step, reference, lambda objective: hand[objective].step())


def test_dual_aa_8bit_matches_two_bitsandbytes_adamw8bit():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.Tanh(), nn.Linear(96, 3))  # 6144 > 4096: 8-bit states
    reference = copy.deepcopy(model)
    optimizer = build_recipe(IMAGE_FLAG, "dual_aa_8bit", model.parameters(), SETTINGS)
    assert type(optimizer) is ObjectiveOptim and optimizer.is_dual
    hand = {"forget": bnb.optim.AdamW8bit(reference.parameters(), lr=FORGET_LR, weight_decay=0.05),
            "retain": bnb.optim.AdamW8bit(reference.parameters(), lr=RETAIN_LR, weight_decay=0.05)}
    lockstep(model, optimizer.step, reference, lambda objective: hand[objective].step(), steps=12, features=64)
    assert optimizer.optimizers[0].state[model[0].weight]["state1_forget"].dtype == torch.uint8


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_single_optimizer_recipes_are_not_dual(name):
    optimizer = build_recipe(IMAGE_FLAG, name, small_net().parameters(), SETTINGS)
    assert type(optimizer) is SharedOptim and not optimizer.is_dual
    assert optimizer.optimizers[0].param_groups[0]["lr"] == FORGET_LR  # base lr: shared_lrs[0]


def test_flags_accept_their_research_codes_names():
    assert recipe_names(IMAGE_FLAG) == sorted(["sgd", "adam", "dual", "dual_as", "dual_aa", "dual_prodigy", "dual_sf",
                                               *ABLATIONS])
    assert recipe_names(LLM_FLAG) == ["adam", "adam_8bit", "dual_adam", "dual_adam_8bit", "dual_prodigy_adam",
                                      "dual_sf_adam", "sgd"]
    assert [name for name in recipe_names(IMAGE_FLAG) if get_recipe(IMAGE_FLAG, name).ablation] == sorted(ABLATIONS)
    with pytest.raises(UsageError, match=r"^--optim_cfg: unknown value 'dual'; expected one of adam, adam_8bit"):
        get_recipe(LLM_FLAG, "dual")
    with pytest.raises(UsageError, match=r"^--optim: unknown value 'dual_adam'"):
        get_recipe(IMAGE_FLAG, "dual_adam")


def test_is_dual_recipe_asks_the_built_optimizer():
    assert not is_dual_recipe(IMAGE_FLAG, "sgd") and not is_dual_recipe(IMAGE_FLAG, "adam")
    assert is_dual_recipe(IMAGE_FLAG, "dual") and is_dual_recipe(IMAGE_FLAG, "dual_share")
    assert is_dual_recipe(LLM_FLAG, "dual_adam") and not is_dual_recipe(LLM_FLAG, "adam")
