"""Sample a (pretrained or unlearned) DiT with classifier-free guidance.

    python -m ImageGeneration.DiT.sample --ckpt facebook/DiT-XL-2-256 \\
        --transformer-path results/000-.../checkpoints/0000500/transformer \\
        --class-labels 207 --n-samples-per-class 50 --sample-dir samples

Writes ``<sample-dir>/<class>/<id>.png``.  ``--cfg-scale`` is DiT's guidance weight
``w`` (``eps = eps_null + w (eps_c - eps_null)``; 1 disables guidance).
"""
from __future__ import annotations

import argparse

from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float, positive_int
from common.io import check_writable_dir, write_run_record
from common.seed import make_generator
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, save_pngs, to_uint8_images
from ImageGeneration.core.sampling import SAMPLE_TYPES, generate, make_scheduler
from ImageGeneration.DiT.dit import add_model_args, NUM_TIMESTEPS, dit_betas, load_latent_dit


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, transformer_path=True)
    parser.add_argument("--class-labels", type=int, nargs="+", required=True)
    parser.add_argument("--n-samples-per-class", type=positive_int, default=50)
    parser.add_argument("--batch-size", type=positive_int, default=25)
    parser.add_argument("--cfg-scale", type=non_negative_float, default=4.0)
    parser.add_argument("--num-sampling-steps", type=positive_int, default=250)
    parser.add_argument("--sample-type", type=str, default="ddpm_noisy", help=" | ".join(SAMPLE_TYPES))
    parser.add_argument("--eta", type=non_negative_float, default=1.0, help="DDIM eta for --sample-type generalized")
    parser.add_argument("--sample-dir", type=str, default="samples")
    return parse_run_args(parser, argv, seed=0)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    if args.sample_type not in SAMPLE_TYPES:
        raise UsageError(f"--sample-type {args.sample_type!r}: expected one of {', '.join(SAMPLE_TYPES)}")
    if args.num_sampling_steps > NUM_TIMESTEPS:
        raise UsageError(f"--num-sampling-steps {args.num_sampling_steps}: expected 1..{NUM_TIMESTEPS}")
    sample_dir = check_writable_dir(args.sample_dir, "--sample-dir")
    device = start_run(args)
    model = load_latent_dit(args.ckpt, device, args.transformer_path, args.vae)
    for label in args.class_labels:
        check_label(label, model.num_classes, "--class-labels")
    model.transformer.eval()
    next_id = 0

    def write(label, images) -> None:
        nonlocal next_id
        next_id = save_pngs(to_uint8_images(images), sample_dir / str(label), next_id)

    total = generate(model.eps_fn, args.class_labels, args.n_samples_per_class, args.batch_size, model.null_label,
                     model.latent_shape, make_scheduler(args.sample_type, dit_betas(), args.num_sampling_steps),
                     args.cfg_scale - 1.0, args.eta, device, make_generator(args.seed), decode=model.decode,
                     on_batch=write)
    write_run_record(sample_dir, args, {"n_images": total}, filename="run_sample.json")
    print(sample_dir)
    return str(sample_dir)


if __name__ == "__main__":
    main()
