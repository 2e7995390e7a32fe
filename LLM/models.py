"""Loading, adapting and saving Hugging Face causal LMs with one-line errors."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from common.errors import Bounded, UsageError, positive_int
from common.io import atomic_directory, atomic_write_json, read_json, refuse_pickled_weights
from common.precision import PRECISIONS as DTYPES, check_precision

LOW_PRECISION_WEIGHTS_HELP = (
    "keep the trained weights, their gradients and the optimizer state in --dtype itself, with no float32 "
    "master copy: about half the memory, but a weight moves only by multiples of its unit in the last place, "
    "so an update below half of it rounds away (in bfloat16 a weight of 0.02 cannot move by less than about "
    "6e-5: at lr 1e-5 most weights never change). Default: float32 weights, --dtype autocast, as the original")


def _reason(err: Exception) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def check_model_path(path: Optional[str], flag: str = "--model_path") -> str:
    """A local folder with ``config.json`` or a hub id (``owner/name``)."""
    if not path:
        raise UsageError(f"{flag}: a model path is required")
    local = Path(path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise UsageError(f"{flag} {path}: not a Hugging Face model folder (no config.json)")
    elif path.count("/") != 1 or path.startswith(("/", ".")):
        raise UsageError(f"{flag} {path}: folder not found")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as err:  # transformers raises OSError/ValueError/... for bad or unreachable models
        raise UsageError(f"{flag} {path}: cannot read the model config ({_reason(err)})") from None
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise UsageError(f"{flag} {path}: model type {config.model_type!r} is not a causal language model")
    return path


def load_tokenizer(path: str, flag: str = "--model_path"):
    """The model's tokenizer; the end-of-sequence token doubles as padding, as in TOFU."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise UsageError(f"{flag} {path}: cannot load a tokenizer ({_reason(err)})") from None
    if tokenizer.eos_token_id is None:
        raise UsageError(f"{flag} {path}: the tokenizer has no end-of-sequence token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_dtype_arg(parser: argparse.ArgumentParser, training: bool = False) -> None:
    """``--dtype``: the weights' precision of an evaluation; the compute precision of a training run."""
    if training:
        text = ("compute precision: float32 weights and optimizer state, forward passes under torch.autocast in "
                "this dtype (float16 adds a GradScaler); the saved model is written in it. Default: bfloat16 on "
                "CUDA, as the original's Trainer(bf16=True); float32 on CPU")
    else:
        text = "precision of the weights (default: bfloat16 on CUDA, as the original; float32 on CPU)"
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help=text)


def resolve_precision(args: argparse.Namespace, device) -> None:
    """Fill ``args.dtype`` and ``args.attn_implementation`` for ``device``; both go into ``run.json``.

    As the original (``torch_dtype=torch.bfloat16, attn_implementation="flash_attention_2"`` in
    ``forget.py`` and ``eval.py``): bfloat16 weights on CUDA unless ``--dtype`` says otherwise, float32
    elsewhere, and FlashAttention-2 for 16-bit weights on CUDA when the ``flash-attn`` package is
    installed and ``--deterministic`` is off (its backward pass is not deterministic).  Otherwise
    ``attn_implementation`` is None: transformers' default (SDPA where the model supports it).
    """
    from transformers.utils import is_flash_attn_2_available
    cuda = torch.device(device).type == "cuda"
    if args.dtype is None:
        args.dtype = "bfloat16" if cuda else "float32"
    check_precision(device, args.dtype, "--dtype")
    flash = (cuda and args.dtype in ("bfloat16", "float16") and not args.deterministic
             and is_flash_attn_2_available())
    args.attn_implementation = "flash_attention_2" if flash else None


def load_causal_lm(path: str, dtype: str = "float32", flag: str = "--model_path",
                   attn_implementation: Optional[str] = None):
    """The model in ``dtype`` (a :data:`DTYPES` name); ``attn_implementation`` None: transformers' default."""
    check_model_path(path, flag)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=False, **extra)
    except Exception as err:
        refuse_pickled_weights(path, flag)
        raise UsageError(f"{flag} {path}: cannot load the model weights ({_reason(err)})") from None
    model.config.use_cache = False
    return model


def add_weight_args(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--low_precision_weights`` and the LoRA flags of the scripts that train a model."""
    add_dtype_arg(parser, training=True)
    parser.add_argument("--low_precision_weights", action="store_true", help=LOW_PRECISION_WEIGHTS_HELP)
    parser.add_argument("--use_LoRA", action="store_true")
    parser.add_argument("--LoRA_r", type=positive_int, default=8)
    parser.add_argument("--LoRA_alpha", type=positive_int, default=32)
    parser.add_argument("--LoRA_dropout", type=Bounded(float, 0, 1, high_open=True), default=0.05)


def trained_weights_dtype(dtype: str, low_precision_weights: bool) -> str:
    """The :data:`DTYPES` name a trained model's weights are loaded in: float32 (the master copy that
    ``--dtype`` autocast computes from), or ``--dtype`` itself under ``--low_precision_weights``."""
    return dtype if low_precision_weights else "float32"


def linear_module_names(model) -> List[str]:
    """Short names of the linear layers LoRA adapts (all but the output head)."""
    names = {name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    names.discard("lm_head")
    return sorted(names)


def apply_lora(model, r: int, alpha: int, dropout: float):
    from peft import LoraConfig, get_peft_model
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=linear_module_names(model))
    return get_peft_model(model, config)


def decay_parameter_groups(model, weight_decay: float) -> list:
    """Weight decay on matrices; none on biases and normalisation weights (as HF ``Trainer``)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_pretrained_atomic(model, tokenizer, path: Path, state_dict=None, dtype: Optional[str] = None) -> Path:
    """Save model (LoRA merged) and tokenizer into ``path``, replacing it only once complete.

    ``state_dict`` is the gathered full state of a sharded model
    (``accelerator.get_state_dict``); LoRA models are merged instead.  ``dtype`` (a :data:`DTYPES` name)
    rounds the floating-point weights to it once, at save, and records it as the model's ``dtype`` in
    ``config.json``, so ``from_pretrained(path)`` loads them as written; ``None``: as they are.
    """
    if hasattr(model, "merge_and_unload"):
        model, state_dict = model.merge_and_unload(), None
    if dtype is not None:
        state_dict = {name: value.to(DTYPES[dtype]) if value.is_floating_point() else value
                      for name, value in (state_dict if state_dict is not None else model.state_dict()).items()}
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        if dtype is not None:  # save_pretrained records the live (float32 master) weights' dtype
            config = read_json(Path(tmp) / "config.json", "config.json")
            config["dtype"] = dtype
            atomic_write_json(config, Path(tmp) / "config.json")
        tokenizer.save_pretrained(tmp)
    return Path(path)
