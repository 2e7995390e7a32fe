"""--amp (autocast, GradScaler with DualOptim's two optimizers) and --channels_last in the shared loop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dualoptim.recipes import make_unlearn_optimizer
from ImageClassification.models import build_model_from_config
from ImageClassification.unlearn import get_unlearn_method
from ImageClassification.unlearn.engine import UnlearnRun
from ImageClassification.unlearn.scrub import frozen_teacher

CPU = torch.device("cpu")


def conv_model(channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    return model.to(memory_format=torch.channels_last) if channels_last else model  # as build_model_from_config


def test_channels_last_models_are_built_in_it_and_copies_keep_it(make_args):
    args = make_args(arch="resnet20s", channels_last=True)
    model = build_model_from_config(args)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    teacher = frozen_teacher(model)  # SCRUB's teacher, a deep copy
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in teacher.modules() if isinstance(m, nn.Conv2d))
    args = args.replace(channels_last=False)
    assert all(m.weight.is_contiguous() for m in build_model_from_config(args).modules() if isinstance(m, nn.Conv2d))


def test_bfloat16_autocast_and_channels_last_in_train_on(make_args, make_loaders):
    model = conv_model(channels_last=True)
    args = make_args(amp=True, amp_dtype="bfloat16", channels_last=True)
    run = UnlearnRun(model, make_unlearn_optimizer("dual", model.parameters(), 1e-3, 0.01), args, CPU)
    assert not run.scaler.is_enabled()          # bfloat16 needs no loss scaling
    seen = []

    def batch_loss(images, targets):
        seen.append(images.is_contiguous(memory_format=torch.channels_last))
        logits = model(images)
        seen.append(logits.dtype)
        return F.cross_entropy(logits, targets), logits

    before = [p.detach().clone() for p in model.parameters()]
    run.train_on(make_loaders().retain_loader, batch_loss, "retain", "retain")
    assert seen[:2] == [True, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())   # master weights stay float32
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_defaults_are_the_plain_step(make_args, make_loaders):
    """Without --amp/--channels_last the loop is bit-identical to backward + DualOptim.step."""
    x, y = next(iter(make_loaders().forget_loader))
    results = []
    for through_run in (True, False):
        model = conv_model()
        optimizer = make_unlearn_optimizer("dual", model.parameters(), 1e-3, 0.01)
        if through_run:
            run = UnlearnRun(model, optimizer, make_args(), CPU)
            for objective in ("forget", "retain"):
                run.update(F.cross_entropy(model(x), y), objective, max_grad_norm=0.5)
        else:
            for objective in ("forget", "retain"):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
                optimizer.step(objective)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_float16_grad_scaler_skips_overflow_per_objective_and_keeps_shared_lrs(make_args, make_loaders):
    x, y = next(iter(make_loaders().forget_loader))
    model = conv_model()
    optimizer = make_unlearn_optimizer("dual", model.parameters(), 1e-3, 0.01)
    run = UnlearnRun(model, optimizer, make_args(amp=True, amp_dtype="float16"), CPU)
    assert run.scaler.is_enabled() and run.scaler.get_scale() == 2.0 ** 16
    before = [p.detach().clone() for p in model.parameters()]
    with run.autocast():
        overflow = model(x).float().sum() * 1e30       # scaled by 2**16 this is inf in every gradient
    run.update(overflow, "forget")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # step skipped
    assert not optimizer.forget_optimizer.state and run.scaler.get_scale() == 2.0 ** 15
    for objective in ("forget", "retain"):
        with run.autocast():
            loss = F.cross_entropy(model(x), y)
        run.update(loss, objective, max_grad_norm=1.0)
    assert int(optimizer.forget_optimizer.state[model[0].weight]["step"]) == 1
    assert "momentum_buffer" in optimizer.retain_optimizer.state[model[0].weight]

    # SharedOptim (--optim sgd) under the scaler: forget steps at unlearn_lr, retain steps at retain_lr
    for objective, lr in (("forget", 0.1), ("retain", 0.01)):
        model = conv_model()
        shared = make_unlearn_optimizer("sgd", model.parameters(), 0.1, 0.01, momentum=0.0, weight_decay=0.0)
        run = UnlearnRun(model, shared, make_args(amp=True, amp_dtype="float16"), CPU)
        start = model[3].bias.detach().clone()
        with run.autocast():
            loss = F.cross_entropy(model(x), y)
        run.update(loss, objective)
        grad = model[3].bias.grad                        # unscaled by the scaler before the step
        assert torch.allclose(model[3].bias, start - lr * grad, atol=1e-6)


def test_every_method_family_runs_under_amp_and_channels_last(make_args, make_loaders):
    for name, extra in (("RL", {}), ("SCRUB", {}), ("SFRon", {"sfron_iters": 4, "sfron_freq": 2})):
        model = conv_model(channels_last=True)
        args = make_args(unlearn=name, optim="dual", unlearn_epochs=1, amp=True, channels_last=True, **extra)
        get_unlearn_method(name)(make_loaders(), model, args, None, CPU)
        assert all(torch.isfinite(p).all() for p in model.parameters())
