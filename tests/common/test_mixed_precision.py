"""common.precision: float32 weights under low-precision autocast, the float16 loss scaler, and one-line
refusals of a precision the device cannot run."""
from __future__ import annotations

import pytest
import torch

from common.errors import UsageError
from common.precision import MixedPrecision, amp_precision, check_precision
from dualoptim import DecoupledAdamW


def train_matrix(weight_dtype: torch.dtype, precision: MixedPrecision, steps: int = 20, lr: float = 1e-5):
    """Fraction of a 0.02-scale 64x64 matrix's entries that ``steps`` Adam steps at ``lr`` move."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter((0.02 * torch.randn(64, 64, generator=generator)).to(weight_dtype))
    start = weight.detach().clone()
    optimizer = DecoupledAdamW([weight], lr=lr, weight_decay=0.0)
    inputs, targets = torch.randn(32, 64, generator=generator), torch.randn(32, 64, generator=generator)
    for _ in range(steps):
        with precision.autocast():
            loss = ((inputs.to(weight_dtype) @ weight - targets) ** 2).mean()
        precision.scale(loss).backward()
        precision.step(optimizer)
        optimizer.zero_grad()
    return (weight.detach() != start).float().mean().item()


def test_float32_master_weights_take_updates_that_bf16_weights_round_away():
    """An lr-1e-5 Adam step moves a weight by ~1e-5, below half a bf16 ulp of a 0.02 weight (6.1e-5)."""
    bf16 = MixedPrecision("cpu", "bfloat16")
    assert train_matrix(torch.float32, bf16) == 1.0                  # every entry moves
    assert train_matrix(torch.float32, MixedPrecision("cpu")) == 1.0
    assert train_matrix(torch.bfloat16, bf16) < 0.3                  # most updates are lost


def test_autocast_computes_low_precision_from_float32_weights():
    weight = torch.randn(4, 4)
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        with MixedPrecision("cpu", name).autocast():
            assert (torch.ones(2, 4) @ weight).dtype == dtype
    with MixedPrecision("cpu", "float32").autocast():
        assert (torch.ones(2, 4) @ weight).dtype == torch.float32
    assert weight.dtype == torch.float32


def test_only_float16_scales_the_loss():
    assert not MixedPrecision("cpu", "bfloat16").scaler.is_enabled()
    assert not MixedPrecision("cpu", "float32").scaler.is_enabled()
    half = MixedPrecision("cpu", "float16")
    assert half.scaler.is_enabled() and float(half.scale(torch.tensor(1.0))) == 2.0 ** 16
    assert not MixedPrecision("cpu", "float16", scaler=False).scaler.is_enabled()   # accelerate scales instead


def test_float16_skips_an_overflowed_step_and_halves_the_scale():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    half = MixedPrecision("cpu", "float16")
    half.scale((weight * float("inf")).sum()).backward()
    half.step(optimizer)
    assert torch.equal(weight.detach(), torch.ones(3)) and half.scaler.get_scale() == 2.0 ** 15


def test_amp_flags_name_the_precision():
    assert amp_precision(False, "float16") == "float32"
    assert amp_precision(True, "float16") == "float16"


def test_a_gpu_without_bf16_is_refused_naming_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(UsageError, match=r"^--amp_dtype bfloat16: Tesla V100 has no native bfloat16 .* use float16$"):
        check_precision("cuda:0", "bfloat16", "--amp_dtype")
    check_precision("cuda:0", "float16", "--amp_dtype")
    with pytest.raises(UsageError, match="^--dtype int8: expected one of float32, bfloat16, float16$"):
        check_precision("cpu", "int8", "--dtype")
