"""Gradient statistics and masks for forgetting a class of a trained DDPM.

``--mode salun``  SalUn saliency: ``|mean gradient|`` of the forget class's guided diffusion
                  loss; keeps the top ``--threshold`` fractions -> ``with_<t>.pt``.
``--mode sfron``  SFR-on: Fisher diagonals of the forget and remain data
                  (``forget_fisher.pt``, ``remain_fisher.pt``) and the masks
                  ``(F_f + 1e-15) / (F_r + 1e-15) >= --threshold`` -> ``fisher_<t>.pt``.
                  Given a ``--ckpt_folder`` that holds the two diagonals (a ``mask_<k>/`` folder, as
                  the research code's ``generate_fisher_mask.py`` takes it), thresholds them again;
                  this is the default mode for such a folder.
``--mode sa_fim`` Selective Amnesia's Fisher information of the generated ``class_samples``
                  (from ``sample.py --mode sample_classes``) -> ``<ckpt_folder>/fisher_dict.pt``.

The research code's ``train.py`` mode names work too: ``--mode generate_mask`` (SalUn) and
``--mode generate_fisher`` (SFR-on).  As there, every batch's gradient is clipped to
``optim.grad_clip`` of ``--config`` before it is accumulated.  Masks go to
``<ckpt_folder>/mask_<label_to_forget>/`` unless ``--save_dir`` is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float, positive_int
from common.io import atomic_torch_save, ensure_writable_dir, load_state_dict_file, write_run_record
from common.saliency import (accumulate_gradients, fisher_mask_filename, fisher_ratio_masks, kept_fraction, save_masks,
                             top_fraction_masks)
from ImageGeneration.core.images import check_label
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.DDPM.data import add_data_args, load_arrays, load_class_samples, make_loader, split_forget
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, load_run_checkpoint
from ImageGeneration.DDPM.config import load_config
from ImageGeneration.DDPM.run_config import MaskRunConfig
from ImageGeneration.DDPM.unlearn import elbo_fisher_loss_fn, guided_loss_fn

MODES = ("salun", "sfron", "sa_fim")
#: The research code's ``train.py --mode`` names for the same statistics.
MODE_ALIASES = {"generate_mask": "salun", "generate_fisher": "sfron"}
FISHER_FILES = ("forget_fisher.pt", "remain_fisher.pt")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", type=str, default=None,
                        help=" | ".join(MODES + tuple(MODE_ALIASES)) + " (default: sfron for a folder of stored "
                             "Fisher diagonals, else salun)")
    parser.add_argument("--ckpt_folder", type=str, required=True,
                        help="run folder of the model to unlearn (sfron: or a folder with stored Fisher diagonals)")
    parser.add_argument("--config", type=str, default=None,
                        help="YAML config (default <dataset>_fisher.yml; sa_fim reads nothing from it, the "
                             "model's own config applies)")
    parser.add_argument("--label_to_forget", type=int, default=0)
    parser.add_argument("--threshold", type=non_negative_float, nargs="+", default=None,
                        help="salun: fractions of weights kept (default 0.5); sfron: ratio thresholds (default 1.0)")
    parser.add_argument("--cond_scale", type=non_negative_float, default=2.0,
                        help="guidance scale of the scored prediction")
    parser.add_argument("--fim_timesteps", type=positive_int, default=None,
                        help="sa_fim: timesteps summed per sample (evenly spaced; default all)")
    parser.add_argument("--n_chunks", type=positive_int, default=20,
                        help="sa_fim: backpropagate the timestep sum in this many chunks (more: less memory)")
    parser.add_argument("--save_dir", type=str, default=None)
    add_data_args(parser)
    return parse_run_args(parser, argv)


def stored_fishers(folder: Path) -> bool:
    """Whether ``folder`` holds Fisher diagonals to threshold rather than a model to score."""
    return all((folder / name).is_file() for name in FISHER_FILES) and not (folder / CKPT_RELPATH).is_file()


def threshold_stored_fishers(run: MaskRunConfig, fisher_dir: Path):
    """SFR-on masks from the diagonals in ``fisher_dir``, written next to them (or to ``--save_dir``)."""
    forget, remain = (load_state_dict_file(fisher_dir / name, "--ckpt_folder") for name in FISHER_FILES)
    if set(forget) != set(remain):
        raise UsageError(f"--ckpt_folder {fisher_dir}: forget_fisher.pt and remain_fisher.pt cover different "
                         "parameters")
    save_dir = ensure_writable_dir(run.save_dir or fisher_dir, "--save_dir")
    return save_dir, fisher_ratio_masks(forget, remain, run.threshold or [1.0])


def report_masks(masks: dict, paths) -> dict:
    """Print and return the fraction of weights each mask keeps."""
    metrics = {}
    for (threshold, mask), path in zip(masks.items(), paths):
        kept = kept_fraction(mask)
        print(f"threshold {threshold}: kept {kept * 100:.2f}% of weights -> {path}")
        metrics[f"kept_fraction_{threshold}"] = kept
    return metrics


def fisher_information(run: MaskRunConfig, unet, ckpt_config, ckpt_folder: Path) -> dict:
    """Selective Amnesia's FIM over the model's own ``class_samples`` -> ``<ckpt_folder>/fisher_dict.pt``."""
    images, labels = load_class_samples(
        ckpt_folder, ckpt_config, "no class_samples/<label>/ folders; run sample.py --mode sample_classes first")
    loader = make_loader(images, labels, 1, run.seed)
    n_steps = ckpt_config.diffusion.num_diffusion_timesteps
    timesteps = torch.linspace(0, n_steps - 1, run.fim_timesteps or n_steps).round().long().unique()
    fisher = accumulate_gradients(unet, loader, elbo_fisher_loss_fn(ckpt_config, timesteps, run.n_chunks), power=2)
    out = atomic_torch_save({k: v.cpu() for k, v in fisher.items()}, ckpt_folder / "fisher_dict.pt")
    return {"fisher_dict": str(out), "n_samples": len(loader.dataset), "n_timesteps": len(timesteps)}


def model_masks(run: MaskRunConfig, unet, ckpt_config, ckpt_folder: Path):
    """SalUn's saliency mask or SFR-on's Fisher diagonals and masks of a model; returns the folder and metrics.

    The data and config are read before the folder is created, so a bad input leaves nothing behind.
    """
    config = load_config(run.config, run.dataset, "fisher")
    images, labels = load_arrays(run.dataset, run.data_path, "train", ckpt_config.data.image_size,
                                 ckpt_config.data.channels)
    (remain_x, remain_y), (forget_x, forget_y) = split_forget(images, labels, run.label_to_forget)
    save_dir = ensure_writable_dir(run.save_dir or ckpt_folder / f"mask_{run.label_to_forget}", "--save_dir")
    batch_size, clip = config.training.batch_size, config.optim.grad_clip
    forget_loader = make_loader(forget_x, forget_y, batch_size, run.seed)
    loss_fn = guided_loss_fn(ckpt_config, run.cond_scale)
    if run.mode == "salun":
        gradients = accumulate_gradients(unet, forget_loader, loss_fn, power=1, grad_clip=clip)
        masks = top_fraction_masks({k: v.abs() for k, v in gradients.items()}, run.threshold or [0.5])
        written = save_masks(masks, save_dir)
    else:
        remain_loader = make_loader(remain_x, remain_y, batch_size, run.seed + 1)
        fishers = [accumulate_gradients(unet, loader, loss_fn, power=2, grad_clip=clip)
                   for loader in (forget_loader, remain_loader)]
        for name, fisher in zip(FISHER_FILES, fishers):
            atomic_torch_save({k: v.cpu() for k, v in fisher.items()}, save_dir / name)
        masks = fisher_ratio_masks(*fishers, run.threshold or [1.0])
        written = save_masks(masks, save_dir, fisher_mask_filename)
    return save_dir, report_masks(masks, written)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    ckpt_folder = Path(args.ckpt_folder)
    mode = args.mode if args.mode is not None else "sfron" if stored_fishers(ckpt_folder) else "salun"
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: expected one of {', '.join(MODES + tuple(MODE_ALIASES))}")
    if mode == "salun" and args.threshold and not all(t <= 1 for t in args.threshold):
        raise UsageError("--threshold: salun keeps a fraction of weights, expected values in [0, 1]")
    device = start_run(args)
    rethreshold = mode == "sfron" and stored_fishers(ckpt_folder)
    loaded = None if rethreshold else load_run_checkpoint(args, device, "fisher")
    run = MaskRunConfig.from_args(args, mode=mode, dataset=loaded.dataset if loaded else args.dataset)  # frozen
    if rethreshold:
        save_dir, masks = threshold_stored_fishers(run, ckpt_folder)
        metrics = report_masks(masks, save_masks(masks, save_dir, fisher_mask_filename))
    else:
        check_label(run.label_to_forget, loaded.config.data.n_classes, "--label_to_forget")
        unet = loaded.unet.eval()  # the research code scores saliency and Fisher information without dropout
        if run.mode == "sa_fim":
            save_dir, metrics = ckpt_folder, fisher_information(run, unet, loaded.config, ckpt_folder)
        else:
            save_dir, metrics = model_masks(run, unet, loaded.config, ckpt_folder)
    write_run_record(save_dir, run.record(), metrics, filename=f"run_{run.mode}.json")
    return str(save_dir)


if __name__ == "__main__":
    main()
