"""Fisher diagonals and saliency masks for forgetting a class of a DiT.

    python -m ImageGeneration.DiT.generate_mask --ckpt facebook/DiT-XL-2-256 --data-path $IMAGENET \\
        --forget-class 207 --mask-path mask --n-iters 2000 --thresholds 0.5 1 3 5 10

Writes ``<mask-path>/<class>/forget_fisher.pt`` and ``remain_fisher.pt`` (mean squared gradients
of the diffusion loss over ``--n-iters`` batches; reused when already there unless ``--recompute``)
and the masks: ``--method sfron``: ``fisher_<t>.pt`` keeps weights with
``(F_f + 1e-15) / (F_r + 1e-15) >= t``; ``--method salun``: ``with_<t>.pt`` keeps the top
fraction ``t`` of weights by forget Fisher.
"""
from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

from common.checkpointing import EndlessLoader
from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float, non_negative_int, positive_int
from common.io import (atomic_torch_save, check_writable_dir, ensure_writable_dir, load_state_dict_file,
                       write_run_record)
from common.saliency import (accumulate_gradients, fisher_mask_filename, fisher_ratio_masks, kept_fraction, save_masks,
                             top_fraction_masks)
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.DiT.dit import add_model_args, check_forget_class, forget_remain_loaders, load_latent_dit
from ImageGeneration.DiT.run_config import DiTMaskRunConfig
from ImageGeneration.DiT.unlearn import add_vb_arg, latent_loss_fn, resolve_vb

METHODS = ("sfron", "salun")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", type=str, default="sfron", help=" | ".join(METHODS))
    parser.add_argument("--mask-path", type=str, default="./mask")
    parser.add_argument("--forget-class", type=int, nargs="+", required=True)
    parser.add_argument("--thresholds", type=non_negative_float, nargs="+", default=[0.5, 1, 3, 5, 10])
    add_model_args(parser)
    parser.add_argument("--data-path", type=str, default=None,
                        help="ImageFolder tree, <data-path>/train/<class>/ or <data-path>/<class>/ (needed to "
                             "compute Fishers)")
    parser.add_argument("--n-iters", type=positive_int, default=2000, help="batches per Fisher diagonal")
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--num-workers", type=non_negative_int, default=4)
    parser.add_argument("--recompute", action="store_true", help="recompute Fishers even if stored")
    add_vb_arg(parser)
    return parse_run_args(parser, argv, seed=0)


@cli_main
def main(argv=None) -> str:
    run = DiTMaskRunConfig.from_args(parse_args(argv))  # the run's settings, frozen
    if run.method not in METHODS:
        raise UsageError(f"--method {run.method!r}: expected one of {', '.join(METHODS)}")
    if run.method == "salun" and not all(t <= 1 for t in run.thresholds):
        raise UsageError("--thresholds: salun keeps a fraction of weights, expected values in [0, 1]")
    device = start_run(run, tf32=True)
    # every class's inputs are checked before the first file is written
    out_dirs = {c: check_writable_dir(Path(run.mask_path) / str(c), "--mask-path") for c in run.forget_class}
    to_compute = [c for c, out_dir in out_dirs.items() if run.recompute or not (
        (out_dir / "forget_fisher.pt").exists() and (out_dir / "remain_fisher.pt").exists())]
    loaders = {}
    if to_compute:
        if not run.data_path:
            raise UsageError(f"--data-path: required to compute the Fisher diagonals of class {to_compute[0]} "
                             f"(none stored in {out_dirs[to_compute[0]]})")
        model = load_latent_dit(run.ckpt, device, vae=run.vae)
        for forget_class in to_compute:
            check_forget_class(forget_class, model.num_classes)
            loaders[forget_class] = forget_remain_loaders(run.data_path, forget_class, model.image_size,
                                                          run.batch_size, run.num_workers, run.seed,
                                                          model.num_classes)
        model.transformer.eval()  # as the research code: no label dropout in the Fisher
        loss_fn = latent_loss_fn(model, resolve_vb(run.vb_loss, model))
    metrics = {}
    for forget_class, out_dir in out_dirs.items():
        ensure_writable_dir(out_dir, "--mask-path")
        if forget_class in loaders:
            forget_loader, remain_loader = loaders[forget_class]
            forget_fisher = accumulate_gradients(model.transformer, islice(EndlessLoader(forget_loader), run.n_iters),
                                                 loss_fn, power=2)
            remain_fisher = accumulate_gradients(model.transformer, islice(EndlessLoader(remain_loader), run.n_iters),
                                                 loss_fn, power=2)
            atomic_torch_save({k: v.cpu() for k, v in forget_fisher.items()}, out_dir / "forget_fisher.pt")
            atomic_torch_save({k: v.cpu() for k, v in remain_fisher.items()}, out_dir / "remain_fisher.pt")
        else:
            forget_fisher = load_state_dict_file(out_dir / "forget_fisher.pt", "--mask-path")
            remain_fisher = load_state_dict_file(out_dir / "remain_fisher.pt", "--mask-path")
        if run.method == "sfron":
            masks = fisher_ratio_masks(forget_fisher, remain_fisher, run.thresholds)
            save_masks(masks, out_dir, fisher_mask_filename)
        else:
            masks = top_fraction_masks(forget_fisher, run.thresholds)
            save_masks(masks, out_dir)
        for threshold, mask in masks.items():
            kept = kept_fraction(mask)
            print(f"class {forget_class} threshold {threshold}: kept {kept * 100:.2f}% of weights")
            metrics[f"{forget_class}/kept_fraction_{threshold}"] = kept
        write_run_record(out_dir, run.record(), metrics, filename=f"run_{run.method}.json")
    return str(Path(run.mask_path))


if __name__ == "__main__":
    main()
