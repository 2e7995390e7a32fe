"""Time per optimizer step and optimizer-state bytes per parameter on ResNet-18's parameters.

    python benchmarks/optimizer_step.py [--device cpu|cuda] [--steps 30] [--arch resnet18]

Prints a markdown table.  Targets: a DualOptim forget/retain step costs within 3% of
the torch optimizer it delegates to; DualOptim(AdamW + SGD-momentum) holds exactly
the state of the two optimizers, 12 bytes per fp32 parameter.  With the ``lrfree`` extra
installed (prodigyopt, schedulefree) it also times the learning-rate-free recipes
``dual_prodigy`` and ``dual_sf`` against the package optimizers they delegate to.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from common.device import add_device_args, get_device
from dualoptim.optimizers import DecoupledAdamW, DualOptim
from dualoptim.recipes import LR_FREE_DEFAULT_LR, make_unlearn_optimizer


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


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


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
    configs = []  # (name, step, optimizers)

    def bench(name, build):
        """``build(params) -> (step callable, optimizers holding the state)``."""
        step, optimizers = build(fresh_params())
        configs.append((name, step, optimizers))
        return name

    def plain(optimizer_class, **kwargs):
        def build(params):
            optimizer = optimizer_class(params, **kwargs)
            return optimizer.step, [optimizer]
        return build

    def two_objective(params, optim):
        """``DualOptim``'s defaults, or the ``--optim`` recipe at its default forget lr."""
        if optim == "dual":
            return DualOptim(params)
        return make_unlearn_optimizer(optim, params, LR_FREE_DEFAULT_LR[optim], 0.01)

    def dual(objective, optim="dual"):
        def build(params):
            opt = two_objective(params, optim)
            return getattr(opt, f"{objective}_step"), list(opt.optimizers)
        return build

    def decoupled(objective):
        def build(params):
            opt = DecoupledAdamW(params, lr=1e-3, weight_decay=0.05)
            opt.set_objective(objective)
            return opt.step, [opt]
        return build

    def dual_both(optim="dual"):
        def build(params):
            opt = two_objective(params, optim)

            def step():
                opt.forget_step()
                opt.retain_step()
            return step, list(opt.optimizers)
        return build

    # the plain optimizers use DualOptim's defaults, so each pair differs only in the wrapper
    bench("SGD (momentum 0.9)", plain(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4))
    bench("AdamW", plain(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    bench("DualOptim.forget_step (AdamW)", dual("forget"))
    bench("DualOptim.retain_step (SGD)", dual("retain"))
    bench("DualOptim forget + retain step", dual_both())
    bench("DecoupledAdamW, forget objective", decoupled("forget"))
    bench("DecoupledAdamW, retain objective", decoupled("retain"))
    lrfree = []
    try:
        import prodigyopt
        import schedulefree
    except ImportError:
        print("prodigyopt / schedulefree not installed (pip install '.[lrfree]'): lr-free recipes skipped\n")
    else:
        def schedule_free(params):
            optimizer = schedulefree.AdamWScheduleFree(params, lr=LR_FREE_DEFAULT_LR["dual_sf"], weight_decay=0.05)
            optimizer.train()  # built in eval mode, where it refuses to step
            return optimizer.step, [optimizer]

        # the package optimizers at the recipes' settings (default lr, the research code's wd 0.05)
        bench("Prodigy", plain(prodigyopt.Prodigy, lr=LR_FREE_DEFAULT_LR["dual_prodigy"], weight_decay=0.05))
        bench("AdamWScheduleFree", schedule_free)
        lrfree = [("dual_prodigy", "Prodigy"), ("dual_sf", "AdamWScheduleFree")]
        for optim, _ in lrfree:
            bench(f"{optim}.forget_step", dual("forget", optim))
            bench(f"{optim} forget + retain step", dual_both(optim))
    # Round-robin so drift in machine load hits every configuration alike; keep each one's
    # fastest step (the estimate least disturbed by other work).
    best = {name: float("inf") for name, _, _ in configs}
    for round_index in range(args.steps + 3):
        for name, step, _ in configs:
            seconds = timed(step, device)
            if round_index >= 3:  # warm-up rounds allocate state and caches
                best[name] = min(best[name], seconds)
    rows = [(name, best[name], state_bytes(*optimizers) / n_params) for name, _, optimizers in configs]
    sgd, adamw = best["SGD (momentum 0.9)"], best["AdamW"]
    dual_forget, dual_retain = best["DualOptim.forget_step (AdamW)"], best["DualOptim.retain_step (SGD)"]
    dec_forget = best["DecoupledAdamW, forget objective"]

    print(f"{args.arch}: {n_params:,} parameters on {device} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), best of {args.steps} steps\n")
    print("| optimizer step | ms / step | state bytes / param |")
    print("|---|---:|---:|")
    for name, seconds, bytes_per_param in rows:
        print(f"| {name} | {seconds * 1e3:.2f} | {bytes_per_param:.1f} |")
    print()
    print(f"DualOptim forget / AdamW: {dual_forget / adamw:.3f}x; retain / SGD: {dual_retain / sgd:.3f}x; "
          f"DecoupledAdamW / AdamW: {dec_forget / adamw:.3f}x")
    for optim, package in lrfree:
        print(f"{optim}.forget_step / {package}: {best[f'{optim}.forget_step'] / best[package]:.3f}x")


if __name__ == "__main__":
    main()
