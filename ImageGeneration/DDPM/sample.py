"""Sample a trained (or unlearned) conditional DDPM with classifier-free guidance.

``--mode sample_classes``  ``<ckpt_folder>/class_samples/<class>/<id>.png`` for each of
                           ``--classes_to_generate`` (classifier evaluation, SA replay).
``--mode sample_fid``      ``<ckpt_folder>/fid_samples_guidance_<s>[_excluded_class_<k>]/<id>.png``,
                           e.g. ``--classes_to_generate x0`` for every class but 0.
``--mode visualization``   ``<ckpt_folder>/sample-<s>.png``: one row per class, ``training.visualization_samples``
                           images in all (``--n_samples_per_class`` is not used).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float, positive_int
from common.io import write_run_record
from common.seed import make_generator
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.diffusion import beta_schedule
from ImageGeneration.core.images import parse_class_list, save_grid_png, save_pngs, to_uint8_images
from ImageGeneration.core.sampling import SAMPLE_TYPES, generate, make_scheduler
from ImageGeneration.DDPM.data import DATASETS
from ImageGeneration.DDPM.checkpoints import load_run_checkpoint
from ImageGeneration.DDPM.config import load_config
from ImageGeneration.DDPM.networks import noise_predictor, null_label
from ImageGeneration.DDPM.run_config import SampleRunConfig

MODES = ("sample_classes", "sample_fid", "visualization")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=str, default=None, help="YAML config (default <dataset>_sample.yml)")
    parser.add_argument("--dataset", type=str, default=None, choices=DATASETS,
                        help="selects the default config (default: the checkpoint's dataset)")
    parser.add_argument("--ckpt_folder", type=str, required=True)
    parser.add_argument("--mode", type=str, default="sample_classes", help=" | ".join(MODES))
    parser.add_argument("--classes_to_generate", type=str, default=None,
                        help="'0,3' or 'x0' (all but 0); default every class")
    parser.add_argument("--n_samples_per_class", type=positive_int, default=1000)
    parser.add_argument("--cond_scale", type=non_negative_float, default=2.0, help="classifier-free guidance strength")
    parser.add_argument("--sample_type", type=str, default="generalized", help=" | ".join(SAMPLE_TYPES))
    parser.add_argument("--timesteps", type=positive_int, default=1000, help="number of sampling steps")
    parser.add_argument("--eta", type=non_negative_float, default=1.0, help="DDIM eta (0: deterministic)")
    return parse_run_args(parser, argv)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    if args.mode not in MODES:
        raise UsageError(f"--mode {args.mode!r}: expected one of {', '.join(MODES)}")
    if args.sample_type not in SAMPLE_TYPES:
        raise UsageError(f"--sample_type {args.sample_type!r}: expected one of {', '.join(SAMPLE_TYPES)}")
    device = start_run(args)
    loaded = load_run_checkpoint(args, device, "sample")
    run = SampleRunConfig.from_args(args, dataset=loaded.dataset)  # the run's settings from here on, frozen
    config = load_config(run.config, run.dataset, "sample")
    used_ema = bool(config.model.ema) and loaded.use_ema_weights()
    model_config = loaded.config
    n_classes = model_config.data.n_classes
    classes, excluded = parse_class_list(run.classes_to_generate or ",".join(map(str, range(n_classes))), n_classes)
    never_trained = [c for c in classes if c not in loaded.trained_classes]
    if never_trained:
        raise UsageError(f"--classes_to_generate: the model in {run.ckpt_folder} was never trained on class(es) "
                         f"{never_trained} (trained on {loaded.trained_classes})")
    n_train = model_config.diffusion.num_diffusion_timesteps
    if run.timesteps > n_train:
        raise UsageError(f"--timesteps {run.timesteps}: expected 1..{n_train} (the model's diffusion steps)")

    d = model_config.diffusion
    scheduler = make_scheduler(run.sample_type, beta_schedule(d.beta_schedule, d.beta_start, d.beta_end, n_train),
                               run.timesteps)
    ckpt_folder = Path(run.ckpt_folder)
    unet = loaded.unet.eval()
    shape = (model_config.data.channels, model_config.data.image_size, model_config.data.image_size)

    def draw(n_per_class: int, on_batch) -> int:
        return generate(noise_predictor(unet), classes, n_per_class, config.sampling.batch_size, null_label(unet),
                        shape, scheduler, run.cond_scale, run.eta, device, make_generator(run.seed),
                        on_batch=on_batch)

    if run.mode == "visualization":
        per_class = config.training.visualization_samples // len(classes)
        if per_class < 1:
            raise UsageError(f"--config: training.visualization_samples {config.training.visualization_samples} "
                             f"is fewer than the {len(classes)} classes to show")
        batches = []
        total = draw(per_class, lambda label, images: batches.append(images.cpu()))
        out = save_grid_png(torch.cat(batches), per_class, ckpt_folder / f"sample-{run.cond_scale}.png")
        write_run_record(ckpt_folder, run.record(),
                         {"n_images": total, "classes": classes, "ema_weights": used_ema,
                          "checkpoint_format": loaded.source_format, "grid": str(out)},
                         filename="run_visualization.json")
        print(out)
        return str(out)

    if run.mode == "sample_classes":
        out_dir = ckpt_folder / "class_samples"
    else:
        name = f"fid_samples_guidance_{run.cond_scale}"
        if excluded:
            name += "_excluded_class_" + "_".join(map(str, excluded))
        out_dir = ckpt_folder / name
    next_id = 0

    def write(label: int, images: torch.Tensor) -> None:
        nonlocal next_id
        folder = out_dir / str(label) if run.mode == "sample_classes" else out_dir
        next_id = save_pngs(to_uint8_images(images), folder, next_id)

    total = draw(run.n_samples_per_class, write)
    write_run_record(out_dir, run.record(), {"n_images": total, "classes": classes, "ema_weights": used_ema,
                                             "checkpoint_format": loaded.source_format, "out_dir": str(out_dir)},
                     filename=f"run_{run.mode}.json")
    print(out_dir)
    return str(out_dir)


if __name__ == "__main__":
    main()
