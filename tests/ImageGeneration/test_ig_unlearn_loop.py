"""The forget/remain loop: DualOptim keeps two optimizer states, masks freeze weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dualoptim.optimizers import DualOptim, SharedOptim
from common.precision import MixedPrecision
from common.saliency import GradientMask
from ImageGeneration.core.unlearn import run_unlearning


def scalar_model(value: float = 1.0) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def linear_losses(model, forget_slope=3.0, remain_slope=-1.0):
    """Losses with constant gradients: forget 3 per step, remain -1 per step."""
    return (lambda step: forget_slope * model.weight.sum(),
            lambda step: remain_slope * model.weight.sum())


def test_dual_optim_states_see_only_their_own_gradients():
    model = scalar_model()
    optimizer = DualOptim(model.parameters(), forget_optim="adam", forget_lr=0.1, forget_weight_decay=0.0,
                          retain_optim="sgd", retain_lr=0.01, momentum=0.9, retain_weight_decay=0.0)
    forget, remain = linear_losses(model)
    history = run_unlearning(model, optimizer, 2, forget, remain, schedule="alternate", grad_clip=None, log_freq=0)
    assert len(history) == 2
    forget_state = optimizer.forget_optimizer.state[model.weight]
    retain_state = optimizer.retain_optimizer.state[model.weight]
    # Adam's first moment from forget gradients only: 0.1 * 3 * 0.9 + 0.1 * 3
    assert forget_state["exp_avg"].item() == pytest.approx(0.57)
    assert forget_state["exp_avg_sq"].item() == pytest.approx(0.001 * 9 * 0.999 + 0.001 * 9)
    # SGD momentum from remain gradients only: -1 * 0.9 + -1
    assert retain_state["momentum_buffer"].item() == pytest.approx(-1.9)


def test_shared_optimizer_mixes_both_gradients():
    model = scalar_model()
    optimizer = SharedOptim(torch.optim.Adam(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    forget, remain = linear_losses(model)
    run_unlearning(model, optimizer, 1, forget, remain, schedule="alternate", grad_clip=None, log_freq=0)
    state = optimizer.forget_optimizer.state[model.weight]
    # one state, two steps: 0.1 * 3 * 0.9 + 0.1 * (-1)
    assert state["exp_avg"].item() == pytest.approx(0.17)
    assert optimizer.forget_optimizer is optimizer.retain_optimizer


def test_joint_schedule_takes_one_step_on_the_summed_loss():
    model = scalar_model(1.0)
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    forget, remain = linear_losses(model)
    run_unlearning(model, optimizer, 1, forget, remain, schedule="joint", grad_clip=None, log_freq=0)
    assert model.weight.item() == pytest.approx(1.0 - 0.1 * (3.0 - 1.0))


@pytest.mark.parametrize("clip_remain,expected", [
    (True, 1.0 - 0.1 * 0.5 - 0.1 * -0.5),      # both steps clipped to norm 0.5
    (False, 1.0 - 0.1 * 0.5 - 0.1 * -1.0),     # the DiT research code: only the forget step clipped
])
def test_remain_step_clipping(clip_remain, expected):
    model = scalar_model(1.0)
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    forget, remain = linear_losses(model)
    run_unlearning(model, optimizer, 1, forget, remain, schedule="alternate", grad_clip=0.5, log_freq=0,
                   clip_remain=clip_remain)
    assert model.weight.item() == pytest.approx(expected)


def test_mask_freezes_unselected_weights_in_forget_step():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.5), forget_lr=0.5, retain_lr=0.5)
    mask = GradientMask(model, {"weight": torch.tensor([[1.0, 0.0]])})
    run_unlearning(model, optimizer, 1, lambda s: model.weight.sum(), lambda s: 0.0 * model.weight.sum(),
                   schedule="alternate", forget_mask=mask, grad_clip=None, log_freq=0)
    assert model.weight.flatten().tolist() == pytest.approx([0.5, 1.0])


def test_snapshots_and_unknown_schedule():
    model = scalar_model()
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    forget, remain = linear_losses(model)
    seen = []
    run_unlearning(model, optimizer, 5, forget, remain, snapshot_freq=2, on_snapshot=seen.append, log_freq=0)
    assert seen == [1, 3, 4]
    with pytest.raises(ValueError):
        run_unlearning(model, optimizer, 1, forget, remain, schedule="sometimes")


@pytest.mark.parametrize("schedule", ["alternate", "joint"])
def test_amp_computes_in_low_precision_and_steps_float32_weights(schedule):
    model = scalar_model(1.0)
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    seen = []

    def forget(step):
        out = model(torch.ones(1, 1))
        seen.append(out.dtype)
        return 3.0 * out.sum()

    run_unlearning(model, optimizer, 1, forget, lambda step: -model(torch.ones(1, 1)).sum(), schedule=schedule,
                   grad_clip=None, log_freq=0, precision=MixedPrecision("cpu", "bfloat16"))
    assert seen == [torch.bfloat16] and model.weight.dtype == torch.float32
    assert model.weight.item() == pytest.approx(1.0 - 0.1 * (3.0 - 1.0))


def test_float16_scaler_skips_an_overflowed_forget_step_only():
    model = scalar_model(1.0)
    optimizer = SharedOptim(torch.optim.SGD(model.parameters(), lr=0.1), forget_lr=0.1, retain_lr=0.1)
    precision = MixedPrecision("cpu", "float16")
    # the forget loss 1000 * w (computed in float16) has a float16 gradient 1000 x 65536 = inf once scaled:
    # that step is skipped and the scale halved; the remain step (gradient -1) is then applied at its true scale
    run_unlearning(model, optimizer, 1, lambda step: 1e3 * model(torch.ones(1, 1)).sum(),
                   lambda step: -model(torch.ones(1, 1)).sum(), schedule="alternate", grad_clip=1.0, log_freq=0,
                   precision=precision)
    assert model.weight.item() == pytest.approx(1.0 + 0.1)
    assert precision.scaler.get_scale() == 2.0 ** 15
