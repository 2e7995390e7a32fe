"""Sample a (pretrained or unlearned) DiT with classifier-free guidance.

    python -m ImageGeneration.DiT.sample --ckpt facebook/DiT-XL-2-256 \\
        --transformer-path results/000-.../checkpoints/0000500/transformer \\
        --class-labels 207 --n-samples-per-class 50 --sample-dir samples

Writes ``<sample-dir>/<class>/<id>.png``.  ``--cfg-scale`` is DiT's guidance weight
``w`` (``eps = eps_null + w (eps_c - eps_null)``; 1 disables guidance), applied to
the first ``--cfg-channels`` latent channels.  The defaults are the research code's
``sample.py``: the learned variances over 250 respaced steps, ``w = 4`` on 3 channels,
the ``sd-vae-ft-ema`` VAE.  For the 50k-sample FID over several processes see
``sample_ddp.py``.
"""
from __future__ import annotations

import argparse

from common.errors import ArgumentParser, cli_main, positive_int
from common.io import check_writable_dir, write_run_record
from common.seed import make_generator
from ImageGeneration.core.runs import parse_run_args, start_run
from ImageGeneration.core.images import check_label, save_pngs, to_uint8_images
from ImageGeneration.core.sampling import generate
from ImageGeneration.DiT.dit import DiTSampling, add_model_args, load_latent_dit
from ImageGeneration.DiT.run_config import DiTSampleRunConfig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, transformer_path=True)
    parser.add_argument("--class-labels", type=int, nargs="+", required=True)
    parser.add_argument("--n-samples-per-class", type=positive_int, default=50)
    parser.add_argument("--batch-size", type=positive_int, default=25)
    DiTSampling.add_args(parser, cfg_scale=4.0)
    parser.add_argument("--sample-dir", type=str, default="samples")
    return parse_run_args(parser, argv, seed=0)


@cli_main
def main(argv=None) -> str:
    run = DiTSampleRunConfig.from_args(parse_args(argv))  # the run's settings, frozen
    sampling = DiTSampling.from_args(run)
    sample_dir = check_writable_dir(run.sample_dir, "--sample-dir")
    device = start_run(run, tf32=True)
    model = load_latent_dit(run.ckpt, device, run.transformer_path, run.vae)
    for label in run.class_labels:
        check_label(label, model.num_classes, "--class-labels")
    fn, scheduler = model.sampler(sampling)
    model.transformer.eval()
    next_id = 0

    def write(label, images) -> None:
        nonlocal next_id
        next_id = save_pngs(to_uint8_images(images), sample_dir / str(label), next_id)

    total = generate(fn, run.class_labels, run.n_samples_per_class, run.batch_size, model.null_label,
                     model.latent_shape, scheduler, sampling.cfg_scale - 1.0, sampling.eta, device,
                     make_generator(run.seed), decode=model.decode, on_batch=write,
                     guided_channels=sampling.cfg_channels)
    write_run_record(sample_dir, run.record(), {"n_images": total}, filename="run_sample.json")
    print(sample_dir)
    return str(sample_dir)


if __name__ == "__main__":
    main()
