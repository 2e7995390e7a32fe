"""Time per optimizer step and optimizer-state bytes per parameter on ResNet-18's parameters.

    python benchmarks/optimizer_step.py [--device cpu|cuda] [--steps 30] [--arch resnet18]

Prints a markdown table.  Targets: a DualOptim forget/retain step costs within 3% of
the torch optimizer it delegates to; DualOptim(AdamW + SGD-momentum) holds exactly
the state of the two optimizers, 12 bytes per fp32 parameter.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from common.device import add_device_args, get_device
from common.dualoptim import DecoupledAdamW, DualOptim


def state_bytes(*optimizers) -> int:
    seen, total = set(), 0
    for optimizer in optimizers:
        for state in optimizer.state.values():
            for value in state.values():
                # step counters are 0-d bookkeeping scalars, not per-parameter state
                if isinstance(value, torch.Tensor) and value.dim() > 0 and id(value) not in seen:
                    seen.add(id(value))
                    total += value.numel() * value.element_size()
    return total


def time_steps(step, device, steps: int, warmup: int = 3) -> float:
    """Fastest seconds per call of ``step`` (the minimum is the estimate least disturbed
    by other work on the machine; the ratios below compare minima)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--arch", default="resnet18")
    add_device_args(parser)
    args = parser.parse_args(argv)
    device = get_device(args.device, args.gpu)
    torch.manual_seed(0)

    def fresh_params():
        model = getattr(torchvision.models, args.arch)(num_classes=10).to(device)
        params = [p for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        return params

    n_params = sum(p.numel() for p in fresh_params())
    rows = []

    def bench(name, build):
        """``build(params) -> (step callable, optimizers holding the state)``."""
        step, optimizers = build(fresh_params())
        seconds = time_steps(step, device, args.steps)
        rows.append((name, seconds, state_bytes(*optimizers) / n_params))
        return seconds

    def plain(optimizer_class, **kwargs):
        def build(params):
            optimizer = optimizer_class(params, **kwargs)
            return optimizer.step, [optimizer]
        return build

    def dual(objective):
        def build(params):
            opt = DualOptim(params)
            return getattr(opt, f"{objective}_step"), list(opt.optimizers)
        return build

    def decoupled(objective):
        def build(params):
            opt = DecoupledAdamW(params, lr=1e-3)
            opt.set_objective(objective)
            return opt.step, [opt]
        return build

    def dual_both(params):
        opt = DualOptim(params)

        def step():
            opt.forget_step()
            opt.retain_step()
        return step, list(opt.optimizers)

    sgd = bench("SGD (momentum 0.9)", plain(torch.optim.SGD, lr=0.01, momentum=0.9))
    adamw = bench("AdamW", plain(torch.optim.AdamW, lr=1e-3))
    dual_forget = bench("DualOptim.forget_step (AdamW)", dual("forget"))
    dual_retain = bench("DualOptim.retain_step (SGD)", dual("retain"))
    bench("DualOptim forget + retain step", dual_both)
    dec_forget = bench("DecoupledAdamW, forget objective", decoupled("forget"))
    bench("DecoupledAdamW, retain objective", decoupled("retain"))

    print(f"{args.arch}: {n_params:,} parameters on {device} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), best of {args.steps} steps\n")
    print("| optimizer step | ms / step | state bytes / param |")
    print("|---|---:|---:|")
    for name, seconds, bytes_per_param in rows:
        print(f"| {name} | {seconds * 1e3:.2f} | {bytes_per_param:.1f} |")
    print()
    print(f"DualOptim forget / AdamW: {dual_forget / adamw:.3f}x; retain / SGD: {dual_retain / sgd:.3f}x; "
          f"DecoupledAdamW / AdamW: {dec_forget / adamw:.3f}x")


if __name__ == "__main__":
    main()
