"""--dtype and the attention implementation (bfloat16 + FlashAttention-2 on CUDA as the original, fp32 on CPU),
and the evaluation's generation length per model family."""
from __future__ import annotations

import argparse

import pytest
import transformers.utils

from LLM import eval as eval_script
from LLM.models import resolve_precision


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
