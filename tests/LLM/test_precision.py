"""--dtype and the attention implementation (bfloat16 + FlashAttention-2 on CUDA as the original, fp32 on CPU),
and the evaluation's generation length per model family."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import transformers.utils
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from LLM import eval as eval_script
from LLM import main_forget
from LLM import unlearn as unlearn_module
from LLM.models import resolve_precision
from common.errors import UsageError
from LLM.trainer import check_launch_precision, save_model


def resolved(device, dtype=None, deterministic=False):
    args = argparse.Namespace(dtype=dtype, deterministic=deterministic)
    resolve_precision(args, device)
    return args.dtype, args.attn_implementation


@pytest.mark.parametrize("flash", [False, True])
def test_precision_defaults(monkeypatch, flash):
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: flash)
    assert resolved("cpu") == ("float32", None)
    assert resolved("cpu", "bfloat16") == ("bfloat16", None)
    assert resolved("cuda") == ("bfloat16", "flash_attention_2" if flash else None)
    assert resolved("cuda:1", "float16") == ("float16", "flash_attention_2" if flash else None)
    assert resolved("cuda", "float32") == ("float32", None)
    assert resolved("cuda", deterministic=True) == ("bfloat16", None)  # flash backward is not deterministic


@pytest.mark.parametrize("family, length", [("phi1.5", 256), ("llama2-7b", 200), ("llama3-8b", 200)])
def test_eval_max_length_follows_the_family(family, length):
    assert eval_script.parse_args(["--model_family", family]).max_length == length
    assert eval_script.parse_args(["--model_family", family, "--max_length", "64"]).max_length == 64


# --------------------------------------------------------------------------- float32 master weights


def unlearn_at_lr_1e5(tmp_path, tofu_dir, tiny_model, monkeypatch, *dtype_flags, epochs=10):
    """``2 * epochs`` alternating dual_adam steps at lr 1e-5 through main_forget; returns the run record, the trained
    weights as held in memory at the end (before the save rounds them to --dtype) and the saved folder."""
    master = {}

    def spy_save(accelerator, model, tokenizer, path, dtype=None):
        master.update({name: value.detach().clone() for name, value in
                       accelerator.unwrap_model(model).state_dict().items()})
        save_model(accelerator, model, tokenizer, path, dtype)

    monkeypatch.setattr(unlearn_module, "save_model", spy_save)
    save = tmp_path / "_".join(dtype_flags).replace("--", "")
    main_forget.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split", "forget01",
                      "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", "dual_adam", "--alternate", "--retain_freq", "1",
                      "--lr", "1e-5", "--forget_lr", "1e-5", "--num_epochs", str(epochs), "--batch_size", "2",
                      "--gradient_accumulation_steps", "1", "--max_length", "48", "--max_grad_norm", "0",
                      "--save_dir", str(save), "--device", "cpu", *dtype_flags])
    out = save / "1" / "unlearn_times_1"
    return json.loads((out / "run.json").read_text()), master, out / "checkpoint-last"


def moved_fraction(start, end) -> float:
    """Fraction of the weight-matrix entries (2-D tensors) whose value changed (``start`` read in ``end``'s dtype,
    as the run loaded it)."""
    moved = total = 0
    for name, before in start.items():
        if before.ndim == 2:
            moved += int((end[name] != before.to(end[name].dtype)).sum())
            total += before.numel()
    return moved / total


def test_bf16_training_keeps_float32_master_weights_and_saves_bf16(tmp_path, tofu_dir, tiny_model, monkeypatch):
    record, master, saved_dir = unlearn_at_lr_1e5(tmp_path, tofu_dir, tiny_model, monkeypatch, "--dtype", "bfloat16",
                                                  epochs=2)
    assert record["config"]["dtype"] == "bfloat16" and not record["config"]["low_precision_weights"]
    assert [h["objective"] for h in record["history"]] == ["forget", "retain"] * 2
    assert master and all(value.dtype == torch.float32 for value in master.values())
    # saved in --dtype, and recorded so: from_pretrained(path) loads bf16, as the original's evaluation does
    assert json.loads((saved_dir / "config.json").read_text())["dtype"] == "bfloat16"
    saved = load_file(str(saved_dir / "model.safetensors"))
    assert all(saved[name].dtype == torch.bfloat16 and torch.equal(saved[name], master[name].bfloat16())
               for name in saved)
    assert AutoModelForCausalLM.from_pretrained(saved_dir).dtype == torch.bfloat16


@pytest.mark.slow
def test_bf16_autocast_moves_every_weight_and_follows_float32(tmp_path, tofu_dir, tiny_model, monkeypatch):
    """With float32 master weights under bf16 autocast, lr-1e-5 Adam updates land; with pure bf16 weights
    most of them round away (an update below half a bf16 ulp -- 6e-5 for a weight of 0.02 -- is lost).
    Measured (20 steps, 2-layer Llama at init scale 0.02): 99.9% of the matrix entries move under float32
    and under bf16 autocast, 11.4% with --low_precision_weights; the bf16-autocast losses differ from
    float32's by at most 2.2e-5 relative (tolerance 1e-3)."""
    start = load_file(str(tiny_model / "model.safetensors"))
    f32, f32_weights, _ = unlearn_at_lr_1e5(tmp_path, tofu_dir, tiny_model, monkeypatch, "--dtype", "float32")
    amp, amp_weights, _ = unlearn_at_lr_1e5(tmp_path, tofu_dir, tiny_model, monkeypatch, "--dtype", "bfloat16")
    _, pure_weights, _ = unlearn_at_lr_1e5(tmp_path, tofu_dir, tiny_model, monkeypatch,
                                           "--dtype", "bfloat16", "--low_precision_weights")
    assert len(f32["history"]) == len(amp["history"]) == 20
    assert all(value.dtype == torch.float32 for value in amp_weights.values())  # the master copy
    assert all(value.dtype == torch.bfloat16 for value in pure_weights.values())
    assert moved_fraction(start, f32_weights) > 0.99
    assert moved_fraction(start, amp_weights) > 0.99
    assert moved_fraction(start, pure_weights) < 0.3, moved_fraction(start, pure_weights)
    f32_losses = torch.tensor([h["loss"] for h in f32["history"]])
    amp_losses = torch.tensor([h["loss"] for h in amp["history"]])
    assert torch.allclose(amp_losses, f32_losses, rtol=1e-3, atol=0.0), (amp_losses - f32_losses).abs().max()


class LaunchedAccelerator:
    """What check_launch_precision reads of an ``accelerate.Accelerator`` launched with a mixed-precision config."""

    def __init__(self, mixed_precision):
        self.mixed_precision = mixed_precision


@pytest.mark.parametrize("dtype, launched, ok", [("bfloat16", "bf16", True), ("float32", "no", True),
                                                 ("bfloat16", "no", True), ("float32", "bf16", False),
                                                 ("float16", "bf16", False)])
def test_dtype_must_agree_with_the_launch_config(dtype, launched, ok):
    if ok:
        check_launch_precision(LaunchedAccelerator(launched), dtype)
    else:
        with pytest.raises(UsageError, match=f"--dtype {dtype}: the accelerate launch config runs mixed_precision "
                                             f"{launched}; pass --dtype bfloat16"):
            check_launch_precision(LaunchedAccelerator(launched), dtype)
