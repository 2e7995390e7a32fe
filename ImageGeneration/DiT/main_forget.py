"""Make a pretrained DiT forget one class (SFR-on by default, with DualOptim via ``--dual``).

    python -m ImageGeneration.DiT.main_forget --ckpt facebook/DiT-XL-2-256 --data-path $IMAGENET \\
        --n-iters 500 --snapshot-every 50 --lr 5e-5 --forget-class 207 --method ron --unlearn-loss ga \\
        --forget-alpha 1 --decay-forget-alpha --remain-alpha 1.0 --mask-path mask/207/fisher_1.0.pt \\
        --dual --forget_lr 5e-5

Writes ``<results-dir>/<NNN>-<model>-forget-<k>-<method>-<loss>-lr<lr>-f<alpha|forget_lr>-r<alpha>[-dual]/``
with ``log.txt``, ``run.json`` and in ``checkpoints/``, as the research code: ``<step>_sample.png`` every
``--snapshot-every`` steps (one guided sample of each of ten classes, 1000 sampling steps) and the
transformer after the last step, here also every ``--ckpt-every`` steps, as ``<step>/transformer/``
(``save_pretrained``; load it with ``--transformer-path``).  With every such checkpoint it also writes a
resume snapshot; ``--resume`` continues the latest unfinished experiment folder of the same settings.
"""
from __future__ import annotations

import argparse
from itertools import count
from pathlib import Path

from common.checkpointing import EndlessLoader, Snapshotter, add_resume_args, latest_snapshot_folder
from common.errors import ArgumentParser, cli_main, non_negative_float, non_negative_int, positive_float, positive_int
from common.io import atomic_directory, ensure_writable_dir, write_run_record
from common.logging import setup_logging
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args, tracking
from common.saliency import load_mask
from common.seed import make_generator
from ImageGeneration.core.images import save_grid_png
from ImageGeneration.core.runs import LOGGER_NAME, parse_run_args, start_run
from common.precision import MixedPrecision, add_amp_args, amp_precision
from ImageGeneration.core.methods import METHODS
from ImageGeneration.core.optim import add_optim_args, recipe_tag
from ImageGeneration.core.unlearn import ForgetWeights, run_unlearning
from ImageGeneration.DiT.dit import (
    NUM_TIMESTEPS, DiTSampling, add_model_args, check_forget_class, forget_remain_loaders, load_latent_dit)
from ImageGeneration.DiT.unlearn import (
    DiTForgetSpec, add_vb_arg, dit_methods, dit_optimizer, dit_plan, latent_batches, resolve_vb)
from ImageGeneration.DiT.run_config import DiTForgetRunConfig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", type=str, required=True,
                        help="ImageFolder tree (<data-path>/train/<class>/ or <data-path>/<class>/)")
    parser.add_argument("--results-dir", type=str, default="results")
    add_model_args(parser)
    parser.add_argument("--n-iters", type=positive_int, default=1000)
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--lr", type=positive_float, default=1e-5)
    parser.add_argument("--num-workers", type=non_negative_int, default=4)
    parser.add_argument("--log-every", type=positive_int, default=100)
    parser.add_argument("--ckpt-every", type=positive_int, default=1000, help="save the transformer and a resume snapshot every N steps")
    parser.add_argument("--snapshot-every", type=positive_int, default=1000, help="save a grid of samples every N steps")
    parser.add_argument("--forget-class", type=int, required=True)
    parser.add_argument("--mode", type=str, default="sfron", help=f"forgetting method: {' | '.join(dit_methods())}")
    parser.add_argument("--method", type=str, default="ron", help="sfron update: ron (alternate) | joint")
    parser.add_argument("--unlearn-loss", type=str, default="ga", help="ga | rl | adaga")
    parser.add_argument("--grad-clip", type=non_negative_float, default=1.0,
                        help="gradient-norm clip of the forget steps of --method ron (0: none); as in the "
                             "research code, remain steps and --method joint are not clipped")
    parser.add_argument("--forget-alpha", type=non_negative_float, default=1.0)
    parser.add_argument("--decay-forget-alpha", action="store_true", help="cosine-decay the forget alpha")
    parser.add_argument("--remain-alpha", type=non_negative_float, default=1.0)
    parser.add_argument("--mask-path", type=str, default=None)
    add_optim_args(parser)
    add_amp_args(parser)
    add_vb_arg(parser)
    add_resume_args(parser, overwrite=False)
    add_nonfinite_args(parser)
    add_report_args(parser)
    return parse_run_args(parser, argv, seed=0)


#: The research code's visualization classes (ImageNet) and guidance weight.
VISUALIZATION_CLASSES = (207, 360, 387, 972, 89, 979, 417, 279, 270, 980)
VISUALIZATION_CFG = 4.0


def visualization_sampling(model) -> DiTSampling:
    """The research code's snapshot grid: all 1000 steps, guidance 4 on 3 channels, the learned variances
    (the fixed-large variance for a DiT without them)."""
    return DiTSampling(num_steps=NUM_TIMESTEPS, cfg_scale=VISUALIZATION_CFG,
                       sample_type=DiTSampling.sample_type if model.learns_variance else "ddpm_noisy")


def visualization_labels(num_classes: int) -> list:
    """The research code's ten classes, taken modulo the class count of a smaller DiT."""
    return [label % num_classes for label in VISUALIZATION_CLASSES]


def experiment_dir(run: DiTForgetRunConfig, dual: bool) -> Path:
    """``<results-dir>/<NNN>-...``, numbered after the folders already there, as the research code does;
    a method with update methods (SFR-on) is named by ``--method`` and ``--unlearn-loss``, another by its
    ``--mode``; ``-f`` is ``--forget_lr`` for an optimizer with a forget state (``dual``), the tag ``-dual`` for
    ``--dual`` and ``-<recipe>`` for another ``--optim``.

    With ``--resume``: the latest folder of this name that holds a resume snapshot, if any.
    """
    root = ensure_writable_dir(run.results_dir, "--results-dir")
    method = f"{run.method}-{run.unlearn_loss}" if METHODS.get(run.mode).update_methods else run.mode
    name = (f"{run.model.replace('/', '-')}-forget-{run.forget_class}-{method}"
            f"-lr{run.lr}-f{run.forget_lr if dual else run.forget_alpha}-r{run.remain_alpha}"
            f"{'-' + recipe_tag(run.recipe) if recipe_tag(run.recipe) else ''}")
    unfinished = latest_snapshot_folder(sorted(root.glob(f"[0-9][0-9][0-9]-{name}"))) if run.resume else None
    if unfinished is not None:
        return unfinished
    for index in count(len(list(root.iterdir()))):
        path = root / f"{index:03d}-{name}"
        if not path.exists():
            path.mkdir()
            return path


@cli_main
def main(argv=None) -> str:
    run = DiTForgetRunConfig.from_args(parse_args(argv))  # the run's settings, frozen
    device = start_run(run, tf32=True)
    precision = MixedPrecision(device, amp_precision(run.amp, run.amp_dtype), "--amp_dtype")
    model = load_latent_dit(run.ckpt, device, vae=run.vae)
    check_forget_class(run.forget_class, model.num_classes)
    spec = DiTForgetSpec(forget_class=run.forget_class, mode=run.mode, n_iters=run.n_iters,
                         vb_loss=resolve_vb(run.vb_loss, model), **ForgetWeights.args_of(run))
    mask = load_mask(run.mask_path, model.transformer, "--mask-path") if run.mask_path else None
    forget_loader, remain_loader = forget_remain_loaders(run.data_path, run.forget_class, model.image_size,
                                                         run.batch_size, run.num_workers, run.seed,
                                                         model.num_classes)
    forget = latent_batches(EndlessLoader(forget_loader), model, device)
    remain = latent_batches(EndlessLoader(remain_loader), model, device)
    optimizer = dit_optimizer(model.transformer, run.lr, run.recipe, run.forget_lr)
    plan = dit_plan(spec, model, forget, remain, mask, optimizer.is_dual)

    out_dir = experiment_dir(run, optimizer.is_dual)
    # a snapshot to resume from is checked before the log is opened: a refused --resume writes nothing
    snapshots = Snapshotter(out_dir, every=run.ckpt_every, resume=run.resume, config=run.record()).register(
        forget_batches=forget, remain_batches=remain).verify()
    logger = setup_logging(LOGGER_NAME, out_dir / "log.txt")
    logger.info(f"Experiment directory created at {out_dir}")
    logger.info(f"Forget set: {len(forget_loader.dataset):,} images, remain set: {len(remain_loader.dataset):,}")

    def snapshot(step: int) -> None:  # called after every step
        done = step + 1
        if done % run.snapshot_every == 0:
            images = model.sample(visualization_labels(model.num_classes), visualization_sampling(model),
                                  make_generator(run.seed + done))
            save_grid_png(images, 5, out_dir / "checkpoints" / f"{done:07d}_sample.png")
        if done % run.ckpt_every == 0 or done == run.n_iters:
            path = out_dir / "checkpoints" / f"{done:07d}" / "transformer"
            with atomic_directory(path) as tmp:
                model.transformer.save_pretrained(tmp)
            logger.info(f"Saved checkpoint to {path}")

    with tracking(run.record(), out_dir) as reporter:
        history = run_unlearning(model.transformer, optimizer, run.n_iters, plan.forget_loss, plan.remain_loss,
                                 schedule=plan.schedule, forget_mask=plan.forget_mask, remain_mask=plan.remain_mask,
                                 grad_clip=run.grad_clip, log_freq=run.log_every, on_snapshot=snapshot,
                                 snapshot_freq=1, log=logger.info, desc="forgetting (DiT)", clip_remain=False,
                                 snapshots=snapshots, allow_nonfinite=run.allow_nonfinite, precision=precision)
        reporter.metrics({"final_forget_loss": history[-1]["forget_loss"],
                          "final_remain_loss": history[-1]["remain_loss"]})
    write_run_record(out_dir, run.record(), {"final_forget_loss": history[-1]["forget_loss"],
                                             "final_remain_loss": history[-1]["remain_loss"],
                                             "schedule": plan.schedule, "vb_loss": spec.vb_loss,
                                             "optimizer": repr(optimizer), "experiment_dir": str(out_dir)})
    snapshots.remove()
    print(out_dir)
    return str(out_dir)


if __name__ == "__main__":
    main()
