"""Gradient statistics and masks for forgetting a class of a trained DDPM.

``--mode salun``  SalUn saliency: ``|mean gradient|`` of the forget class's guided diffusion
                  loss; keeps the top ``--threshold`` fractions -> ``with_<t>.pt``.
``--mode sfron``  SFR-on: Fisher diagonals of the forget and remain data
                  (``forget_fisher.pt``, ``remain_fisher.pt``) and the masks
                  ``(F_f + 1e-15) / (F_r + 1e-15) >= --threshold`` -> ``fisher_<t>.pt``.
                  With ``--fisher_dir`` the stored diagonals are thresholded again.
``--mode sa_fim`` Selective Amnesia's Fisher information of the generated ``class_samples``
                  (from ``sample.py --mode sample_classes``) -> ``<ckpt_folder>/fisher_dict.pt``.

Masks go to ``<ckpt_folder>/mask_<label_to_forget>/`` unless ``--save_dir`` is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float, positive_int
from common.io import atomic_torch_save, ensure_writable_dir, load_torch_file, write_run_record
from common.saliency import accumulate_gradients, check_mask, save_masks, top_fraction_masks
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, load_image_folder
from common.saliency import fisher_ratio_masks
from ImageGeneration.DDPM.data import add_data_args, load_arrays, make_loader, split_forget
from ImageGeneration.DDPM.model import load_config, load_run_checkpoint
from ImageGeneration.DDPM.training import elbo_fisher_loss_fn, guided_loss_fn

MODES = ("salun", "sfron", "sa_fim")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", type=str, default="salun", help=" | ".join(MODES))
    parser.add_argument("--ckpt_folder", type=str, required=True, help="run folder of the model to unlearn")
    parser.add_argument("--config", type=str, default=None, help="YAML config (default <dataset>_fisher.yml)")
    parser.add_argument("--label_to_forget", type=int, default=0)
    parser.add_argument("--threshold", type=non_negative_float, nargs="+", default=None,
                        help="salun: fractions of weights kept (default 0.5); sfron: ratio thresholds (default 1.0)")
    parser.add_argument("--cond_scale", type=non_negative_float, default=2.0,
                        help="guidance scale of the scored prediction")
    parser.add_argument("--fisher_dir", type=str, default=None,
                        help="sfron: folder with forget_fisher.pt/remain_fisher.pt to threshold instead of computing")
    parser.add_argument("--fim_timesteps", type=positive_int, default=None,
                        help="sa_fim: timesteps summed per sample (evenly spaced; default all)")
    parser.add_argument("--save_dir", type=str, default=None)
    add_data_args(parser)
    return parse_run_args(parser, argv)


def _load_fisher_pair(fisher_dir: Path, unet):
    forget = load_torch_file(fisher_dir / "forget_fisher.pt", "--fisher_dir")
    remain = load_torch_file(fisher_dir / "remain_fisher.pt", "--fisher_dir")
    if set(forget) != set(remain):
        raise UsageError(f"--fisher_dir {fisher_dir}: forget_fisher.pt and remain_fisher.pt cover different parameters")
    return (check_mask(forget, unet, f"--fisher_dir {fisher_dir / 'forget_fisher.pt'}"),
            check_mask(remain, unet, f"--fisher_dir {fisher_dir / 'remain_fisher.pt'}"))


def _class_samples(ckpt_folder: Path, ckpt_config):
    """The generated ``class_samples/<label>/`` images Selective Amnesia's Fisher is taken over."""
    samples_dir = ckpt_folder / "class_samples"
    images, labels = [], []
    for label in range(ckpt_config.data.n_classes):
        if (samples_dir / str(label)).is_dir():
            x = load_image_folder(samples_dir / str(label), "--ckpt_folder", ckpt_config.data.channels,
                                  ckpt_config.data.image_size)
            images.append(x)
            labels.append(np.full(len(x), label, dtype=np.int64))
    if not images:
        raise UsageError(f"--ckpt_folder {ckpt_folder}: no class_samples/<label>/ folders; run "
                         "sample.py --mode sample_classes first")
    return np.concatenate(images), np.concatenate(labels)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    if args.mode not in MODES:
        raise UsageError(f"--mode {args.mode!r}: expected one of {', '.join(MODES)}")
    if args.mode == "salun" and args.threshold and not all(t <= 1 for t in args.threshold):
        raise UsageError("--threshold: salun keeps a fraction of weights, expected values in [0, 1]")
    device = start_run(args)
    loaded = load_run_checkpoint(args, device)
    unet, ckpt_config = loaded.unet, loaded.config
    config = load_config(args.config, args.dataset, "fisher")
    check_label(args.label_to_forget, ckpt_config.data.n_classes, "--label_to_forget")
    ckpt_folder = Path(args.ckpt_folder)
    unet.eval()  # the research code scores saliency without dropout

    # every input is read before the first file (or folder) is written
    stored_fishers = forget_loader = remain_loader = samples = None
    if args.mode == "sa_fim":
        samples = _class_samples(ckpt_folder, ckpt_config)
    elif args.mode == "sfron" and args.fisher_dir:
        stored_fishers = _load_fisher_pair(Path(args.fisher_dir), unet)
    else:
        images, labels = load_arrays(args.dataset, args.data_path, "train", ckpt_config.data.image_size,
                                     ckpt_config.data.channels)
        (remain_x, remain_y), (forget_x, forget_y) = split_forget(images, labels, args.label_to_forget)
        forget_loader = make_loader(forget_x, forget_y, config.training.batch_size, args.seed, shuffle=False)
        remain_loader = make_loader(remain_x, remain_y, config.training.batch_size, args.seed, shuffle=False)
    save_dir = ckpt_folder if args.mode == "sa_fim" else ensure_writable_dir(
        args.save_dir or ckpt_folder / f"mask_{args.label_to_forget}", "--save_dir")
    metrics = {}

    if args.mode == "sa_fim":
        loader = make_loader(*samples, 1, args.seed)
        n_steps = ckpt_config.diffusion.num_diffusion_timesteps
        count = args.fim_timesteps or n_steps
        timesteps = torch.linspace(0, n_steps - 1, count).round().long().unique()
        fisher = accumulate_gradients(unet, loader, elbo_fisher_loss_fn(ckpt_config, timesteps), power=2)
        out = atomic_torch_save({k: v.cpu() for k, v in fisher.items()}, ckpt_folder / "fisher_dict.pt")
        metrics = {"fisher_dict": str(out), "n_samples": len(loader.dataset), "n_timesteps": len(timesteps)}
    else:
        loss_fn = guided_loss_fn(ckpt_config, args.cond_scale)
        if args.mode == "salun":
            gradients = accumulate_gradients(unet, forget_loader, loss_fn, power=1)
            masks = top_fraction_masks({k: v.abs() for k, v in gradients.items()}, args.threshold or [0.5])
            written = save_masks(masks, save_dir)
        else:
            if stored_fishers is not None:
                forget_fisher, remain_fisher = stored_fishers
            else:
                forget_fisher = accumulate_gradients(unet, forget_loader, loss_fn, power=2)
                remain_fisher = accumulate_gradients(unet, remain_loader, loss_fn, power=2)
                atomic_torch_save({k: v.cpu() for k, v in forget_fisher.items()}, save_dir / "forget_fisher.pt")
                atomic_torch_save({k: v.cpu() for k, v in remain_fisher.items()}, save_dir / "remain_fisher.pt")
            masks = fisher_ratio_masks(forget_fisher, remain_fisher, args.threshold or [1.0])
            written = [atomic_torch_save({k: v.cpu() for k, v in mask.items()}, save_dir / f"fisher_{t}.pt")
                       for t, mask in masks.items()]
        for (threshold, mask), path in zip(masks.items(), written):
            kept = sum(float(v.sum()) for v in mask.values()) / sum(v.numel() for v in mask.values())
            print(f"threshold {threshold}: kept {kept * 100:.2f}% of weights -> {path}")
            metrics[f"kept_fraction_{threshold}"] = kept
    write_run_record(save_dir, args, metrics, filename=f"run_{args.mode}.json")
    return str(save_dir)


if __name__ == "__main__":
    main()
