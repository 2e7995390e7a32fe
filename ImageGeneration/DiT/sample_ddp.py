"""Sample many images from a (pretrained or unlearned) DiT over several processes, for the 50k-sample FID.

    accelerate launch --num_processes 8 -m ImageGeneration.DiT.sample_ddp --ckpt facebook/DiT-XL-2-256 \\
        --transformer-path results/000-.../checkpoints/0000500/transformer --exclude_class 207

As the research code's ``sample_ddp.py``: ``--num-fid-samples`` images (rounded up to whole
global batches of ``--per-proc-batch-size`` per process) with uniform random labels
(``--only_class`` / ``--exclude_class``), process ``rank`` seeded with
``--global-seed * world + rank``, written as
``<sample-dir>/<model>-<ckpt>-size-<px>-vae-<vae>-cfg-<w>-seed-<s>[/only<k>|/ex<k>]/<index:06d>.png``.
The main process then packs the first ``--num-fid-samples`` into ``<that folder>.npz``
(``arr_0``, the ADM evaluator's input).  One process (plain ``python -m``) works too.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from common.device import add_device_args, get_device
from common.distributed import SampleSharding
from common.errors import ArgumentParser, Bounded, UsageError, cli_main, positive_int
from common.io import check_writable_dir, write_run_record
from common.seed import make_generator
from ImageGeneration.core.images import check_label
from ImageGeneration.core.sampling import ProcessShare, draw_labels, pack_npz, sample_images, sample_share
from ImageGeneration.DiT.dit import DiTSampling, add_model_args, load_latent_dit

class_or_none = Bounded(int, -1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, transformer_path=True)
    parser.add_argument("--sample-dir", type=str, default="samples")
    parser.add_argument("--per-proc-batch-size", type=positive_int, default=32)
    parser.add_argument("--num-fid-samples", type=positive_int, default=50_000)
    parser.add_argument("--exclude_class", type=class_or_none, default=-1, help="never sample this class (-1: none)")
    parser.add_argument("--only_class", type=class_or_none, default=-1, help="sample only this class (-1: all)")
    DiTSampling.add_args(parser, cfg_scale=1.5)
    parser.add_argument("--global-seed", type=int, default=0)
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                        help="TF32 matmuls on CUDA (fast, small numerical differences)")
    add_device_args(parser)
    return parser.parse_args(argv)


def folder_name(args: argparse.Namespace, image_size: int) -> str:
    """The research code's sample folder name; the checkpoint part is the unlearned transformer's step
    folder (``.../checkpoints/<step>/transformer``), or ``pretrained``."""
    ckpt = "pretrained"
    if args.transformer_path:
        path = Path(args.transformer_path)
        ckpt = path.parent.name if path.name == "transformer" else path.name
    name = (f"{args.model.replace('/', '-')}-{ckpt}-size-{image_size}-vae-{Path(args.vae).name}-"
            f"cfg-{args.cfg_scale}-seed-{args.global_seed}")
    if args.only_class >= 0:
        name += f"/only{args.only_class}"
    if args.exclude_class >= 0:
        name += f"/ex{args.exclude_class}"
    return name


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    sampling = DiTSampling.from_args(args)
    if args.cfg_scale < 1.0:
        raise UsageError(f"--cfg-scale {args.cfg_scale}: expected a number >= 1 (1: no guidance)")
    if args.only_class >= 0 and args.exclude_class >= 0:
        raise UsageError("--only_class/--exclude_class: give at most one")
    sample_root = check_writable_dir(args.sample_dir, "--sample-dir")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    requested = get_device(args.device, args.gpu)
    sharding = SampleSharding.from_launch(requested, args.global_seed)
    sharding.print_on_main_only()
    device = sharding.device(requested)
    model = load_latent_dit(args.ckpt, device, args.transformer_path, args.vae)
    for flag, label in (("--only_class", args.only_class), ("--exclude_class", args.exclude_class)):
        if label >= 0:
            check_label(label, model.num_classes, flag)
    fn, scheduler = model.sampler(sampling)
    model.transformer.eval()

    share = ProcessShare(args.num_fid_samples, args.per_proc_batch_size, sharding.world, sharding.rank)
    folder = sample_root / folder_name(args, model.image_size)
    print(f"Saving {share.total} .png samples at {folder} ({sharding.world} processes)")
    generator = make_generator(share.seed(args.global_seed))

    def sample_batch(labels: torch.Tensor) -> torch.Tensor:
        latents = sample_images(fn, labels.to(device), model.null_label, model.latent_shape, scheduler,
                                sampling.cfg_scale - 1.0, sampling.eta, generator, sampling.cfg_channels)
        return model.decode(latents)

    sample_share(share, lambda n: draw_labels(n, model.num_classes, generator, args.only_class, args.exclude_class),
                 sample_batch, folder, show_progress=sharding.is_main)
    sharding.barrier()  # every process's images are written before the main one packs them
    npz = None
    if sharding.is_main:
        npz = pack_npz(folder, args.num_fid_samples)
        seeds = [replace(share, rank=rank).seed(args.global_seed) for rank in range(share.world)]
        write_run_record(folder, args, {"n_images": share.total, "num_processes": sharding.world, "seeds": seeds,
                                        "npz": str(npz)}, filename="run_sample_ddp.json")
        print(f"Saved {npz}")
    sharding.barrier()
    return str(npz)


if __name__ == "__main__":
    main()
