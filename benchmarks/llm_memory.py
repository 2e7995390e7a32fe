"""Bytes per parameter of each LLM ``--optim_cfg`` recipe, measured on a small Llama, and the GPU memory plan
they give for phi-1.5 and Llama-2-7B (the table in LLM/README.md).

    python benchmarks/llm_memory.py > benchmarks/results/llm_memory.txt

Measured: the optimizer state each recipe holds after a forget and a retain step (every state tensor with
at least one dimension, counted once), split into the embedding matrices (which the 8-bit recipes keep in
32 bits, as bitsandbytes advises) and every other parameter.  Not measured but fixed by the dtypes: float32
master weights (4 bytes), float32 gradients (4) and the bf16 copy autocast casts each weight to for the
forward and backward passes (2; torch caches it for the length of the autocast region).  Activations,
the CUDA context (about 0.5-1 GB) and the reference model of NPO/DPO/KL (2 bytes per parameter in bf16)
come on top.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from LLM.trainer import build_optimizer  # noqa: E402
from dualoptim.optimizers import set_objective  # noqa: E402

RECIPES = ("sgd", "adam", "dual_adam", "adam_8bit", "dual_adam_8bit")
GB = 1e9
#: (total parameters, embedding-matrix parameters) -- phi-1.5: vocab 51200 x 2048 (input embedding; its
#: untied output head is a linear layer); Llama-2-7B: 32000 x 4096
MODELS = {"phi-1.5": (1_418_270_720, 51200 * 2048), "Llama-2-7B": (6_738_415_616, 32000 * 4096)}


def small_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False))


def state_bytes_per_param(recipe: str) -> tuple:
    """(bytes per embedding parameter, bytes per other parameter) of ``recipe``'s state after two steps."""
    model = small_llama()
    optimizer = build_optimizer(recipe, model, 1e-5, 2e-5, 0.01)
    for objective in ("forget", "retain"):
        for param in model.parameters():
            param.grad = torch.randn_like(param)
        set_objective(optimizer, objective)
        optimizer.step()
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    totals = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for param in model.parameters():
        is_embedding = id(param) in embeddings
        counts[is_embedding] += param.numel()
        seen = set()
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and id(value) not in seen:
                seen.add(id(value))
                totals[is_embedding] += value.numel() * value.element_size()
    return totals[True] / counts[True], totals[False] / counts[False]


def plan(total: int, embedding: int, state: tuple, gpus: int, scheme: str) -> float:
    """GB per GPU of weights + gradients + optimizer state + bf16 compute copy (see LLM/README.md).

    ``single``: everything on one GPU.  ``zero2`` (DeepSpeed ZeRO-2 / FSDP SHARD_GRAD_OP, the original's
    ``fsdp="shard_grad_op"``): master weights, gradients and optimizer state sharded over ``gpus``, the
    bf16 weights whole on every GPU.  ``zero3`` (ZeRO-3 / FSDP FULL_SHARD): everything sharded; the bf16
    weights of one layer are gathered at a time (left out).
    """
    optimizer = embedding * state[0] + (total - embedding) * state[1]
    master_and_grads = total * (4 + 4)
    bf16_copy = total * 2
    if scheme == "single":
        return (master_and_grads + optimizer + bf16_copy) / GB
    if scheme == "zero2":
        return ((master_and_grads + optimizer) / gpus + bf16_copy) / GB
    return (master_and_grads + optimizer + bf16_copy) / gpus / GB


def main() -> None:
    measured = {}
    try:
        import bitsandbytes  # noqa: F401
        recipes = RECIPES
    except ImportError:
        recipes = tuple(r for r in RECIPES if not r.endswith("_8bit"))
    print(f"# optimizer state after one forget and one retain step, {sum(p.numel() for p in small_llama().parameters()):,}-"
          f"parameter Llama (torch {torch.__version__})")
    print("| recipe | state B/param (embeddings) | state B/param (other) | total B/param with fp32 weights, "
          "fp32 grads, bf16 copy |")
    print("|---|---|---|---|")
    for recipe in recipes:
        measured[recipe] = state_bytes_per_param(recipe)
        print(f"| {recipe} | {measured[recipe][0]:.3f} | {measured[recipe][1]:.3f} | {10 + measured[recipe][1]:.2f} |")
    print()
    print("# GB per GPU: weights + gradients + optimizer state + bf16 compute copy (no activations, no reference "
          "model, no CUDA context)")
    header = ["1 GPU"] + [f"{scheme} x{n}" for scheme in ("zero2", "zero3") for n in (2, 4, 8)]
    print("| model | recipe | " + " | ".join(header) + " |")
    print("|---|---|" + "---|" * len(header))
    for model, (total, embedding) in MODELS.items():
        for recipe in recipes:
            cells = [plan(total, embedding, measured[recipe], 1, "single")]
            cells += [plan(total, embedding, measured[recipe], n, scheme) for scheme in ("zero2", "zero3")
                      for n in (2, 4, 8)]
            print(f"| {model} | {recipe} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
