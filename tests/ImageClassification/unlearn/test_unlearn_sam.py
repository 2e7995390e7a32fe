"""SAM (common/sam.py) against its maths written out by hand, in the training loop, and retrain_sam."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dualoptim.optimizers import SharedOptim
from common.errors import UsageError
from common.sam import SAM
from ImageClassification.unlearn import get_unlearn_method
from ImageClassification.unlearn.engine import UnlearnRun, make_epoch_scheduler, sam_sgd

CPU = torch.device("cpu")


def quadratic_grad(w, a, b):
    """Gradient of L(w) = sum(a * (w - b)^2)."""
    return 2 * a * (w - b)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_sgd_matches_the_two_pass_update_by_hand(adaptive):
    torch.manual_seed(0)
    a, b = torch.rand(5) + 0.5, torch.randn(5)
    w = torch.nn.Parameter(torch.randn(5))
    rho, lr, mu, wd = 0.05, 0.1, 0.9, 5e-4
    opt = SAM([w], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=mu, weight_decay=wd)

    ref, buf = w.detach().clone(), None
    for _ in range(3):
        # by hand: e = rho T^2 g / ||T g|| (T = |w| for ASAM), gradient at w + e, SGD from w
        start = ref
        g = quadratic_grad(ref, a, b)
        t = ref.abs() if adaptive else torch.ones_like(ref)
        e = rho * t * t * g / ((t * g).norm() + 1e-12)
        d = quadratic_grad(ref + e, a, b) + wd * ref
        buf = d if buf is None else mu * buf + d
        ref = ref - lr * buf

        w.grad = quadratic_grad(w.detach(), a, b)
        opt.first_step()
        assert torch.allclose(w.detach(), start + e, atol=1e-6)  # moved to the worst case w + e
        w.grad = quadratic_grad(w.detach(), a, b)
        opt.step()
        assert torch.allclose(w.detach(), ref, atol=1e-6)


def test_sam_first_step_moves_to_the_worst_case_and_step_returns():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.5, lr=0.0)
    w.grad = torch.tensor([3.0, 4.0])
    opt.first_step()
    assert torch.allclose(w.detach(), torch.tensor([3.3, 4.4]))  # w + 0.5 * g / ||g|| (||g|| = 5)
    opt.step()  # lr 0: back to w exactly
    assert torch.equal(w.detach(), torch.tensor([3.0, 4.0]))


def test_sam_state_dict_is_the_base_optimizers():
    w = torch.nn.Parameter(torch.ones(3))
    opt = SAM([w], torch.optim.SGD, lr=0.1, momentum=0.9)
    w.grad = torch.ones(3)
    opt.first_step()
    opt.step()
    state = opt.state_dict()
    assert torch.equal(state["state"][0]["momentum_buffer"], torch.ones(3))
    other = SAM([torch.nn.Parameter(torch.ones(3))], torch.optim.SGD, lr=0.5, momentum=0.9)
    other.load_state_dict(state)
    assert other.param_groups is other.base_optimizer.param_groups and other.param_groups[0]["lr"] == 0.1


def test_unlearn_run_sam_step_uses_masked_gradients_at_the_perturbed_weights(model, loaders, make_args):
    """UnlearnRun.update with SAM: gradient at w (masked) -> w + e; gradient there (masked) -> SGD step."""
    args = make_args(unlearn="retrain_sam", unlearn_lr=0.1, weight_decay=0.0)
    mask = {name: (torch.rand_like(p) > 0.5).float() for name, p in model.named_parameters()}
    x, y = next(iter(loaders.retain_loader))
    manual = copy.deepcopy(model).train()

    def loss_of(net):
        return F.cross_entropy(net(x), y)

    params = list(manual.parameters())
    names = [name for name, _ in manual.named_parameters()]
    grads = [g * mask[n] for g, n in zip(torch.autograd.grad(loss_of(manual), params), names)]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        old = [p.clone() for p in params]
        for p, g in zip(params, grads):
            p.add_(0.05 * g / (norm + 1e-12))
    grads = [g * mask[n] for g, n in zip(torch.autograd.grad(loss_of(manual), params), names)]
    with torch.no_grad():
        for p, o, g in zip(params, old, grads):
            p.copy_(o - 0.1 * g)

    model.train()
    run = UnlearnRun(model, sam_sgd(model, args, 0.1), args, CPU, mask)
    run.update(loss_of(model), "retain", recompute=lambda: loss_of(model))
    for (name, p), q in zip(model.named_parameters(), manual.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    with pytest.raises(ValueError, match="recompute"):
        run.update(loss_of(model), "retain")


def test_retrain_sam_is_registered_and_trains_with_sam(model, loaders, make_args, tmp_path):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = make_args(unlearn="retrain_sam", optim="dual", unlearn_lr=0.05, unlearn_epochs=1, save_dir=str(tmp_path))
    steps = []
    first_step = SAM.first_step

    def spy(self):
        steps.append(self)
        return first_step(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SAM, "first_step", spy)
        get_unlearn_method("retrain_sam")(loaders, model, args, None, CPU)
    assert len(steps) == len(loaders.retain_loader)  # one SAM step per retain batch, whatever --optim says
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert (tmp_path / "checkpoint_1.pt").is_file()


def test_sam_refuses_float16_loss_scaling(model, make_args):
    with pytest.raises(UsageError, match="--amp_dtype float16"):
        sam_sgd(model, make_args(amp=True, amp_dtype="float16"), 0.1)
    assert isinstance(sam_sgd(model, make_args(), 0.1), SharedOptim)


def test_retrain_trains_the_model_it_is_given(model, loaders, make_args):
    """No re-initialisation inside retrain: the pipeline hands it the constructed model."""
    reference = copy.deepcopy(model)
    args = make_args(unlearn="retrain", optim="dual", retain_lr=0.0, weight_decay=0.0, unlearn_epochs=1)
    get_unlearn_method("retrain")(loaders, model, args, None, CPU)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)  # retain-side SGD at lr 0: still the weights it came with


def test_sfron_adam_takes_beta1_from_momentum(model, loaders, make_args, recorder):
    args = make_args(unlearn="SFRon", optim="adam", momentum=0.5, unlearn_lr=1e-3, retain_lr=1e-3,
                     sfron_iters=2, sfron_freq=2)
    get_unlearn_method("SFRon")(loaders, model, args, None, CPU)
    (opt,) = recorder.optimizers
    assert opt.retain_optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    dual = make_args(unlearn="SFRon", optim="dual", momentum=0.5, sfron_iters=2, sfron_freq=2)
    get_unlearn_method("SFRon")(loaders, copy.deepcopy(model), dual, None, CPU)
    assert recorder.optimizers[1].forget_optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # dual*: torch's
    with pytest.raises(UsageError, match="--momentum"):
        get_unlearn_method("SFRon")(loaders, model, make_args(unlearn="SFRon", optim="adam", momentum=1.0),
                                    None, CPU)


def scheduled_lrs(args, epochs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_epoch_scheduler(opt, args)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: only keeps the scheduler's call order
        sched.step()
    return lrs


def test_main_train_schedules_as_the_research_code(make_args):
    """main_train.py (unlearn "train"): its intended schedulers -- MultiStepLR for sgd and sam, cosine
    annealing over --epochs for any other --optim, warmup + cosine for --imagenet_arch -- and
    --periodic_cosine_lr, the lr it actually set every epoch."""
    train = dict(unlearn="train", unlearn_epochs=4, decreasing_lr="2")
    assert scheduled_lrs(make_args(optim="sam", **train), 4) == pytest.approx([1, 1, .1, .1])
    cosine = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert scheduled_lrs(make_args(optim="foo", **train), 4) == pytest.approx(cosine)
    assert scheduled_lrs(make_args(optim="adam", **train), 4) == pytest.approx(cosine)
    assert scheduled_lrs(make_args(optim="sgd", imagenet_arch=True, warmup=1, **train), 4) == \
        pytest.approx([1] + [(1 + math.cos(math.pi * (e - 1) / 3)) / 2 for e in range(1, 4)])
    periodic = scheduled_lrs(make_args(optim="adam", periodic_cosine_lr=True, **train), 21)
    assert periodic[0] == 0.0 and periodic[10] == 1.0 and periodic[20] == pytest.approx(0.0, abs=1e-15)
    assert periodic[5] == pytest.approx(0.5) and periodic[15] == pytest.approx(0.5)
