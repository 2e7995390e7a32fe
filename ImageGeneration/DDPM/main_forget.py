"""Make a trained conditional DDPM forget one class (SalUn, SFR-on, Selective Amnesia, GA, RL).

    # SFR-on, and SFR-on + DualOptim
    python -m ImageGeneration.DDPM.main_forget --ckpt_folder $CKPT --mode sfron --label_to_forget 0 \\
        --method ron --unlearn_loss adaga --forget_alpha 10.0 --decay_forget_alpha --remain_alpha 1.0 \\
        --mask_path $CKPT/mask_0/fisher_1.0.pt [--dual --forget_lr 1e-4]
    # SalUn
    python -m ImageGeneration.DDPM.main_forget --ckpt_folder $CKPT --mode salun --unlearn_loss rl \\
        --remain_alpha 1e-3 --mask_path $CKPT/mask_0/with_0.5.pt

Writes ``<exp_root>/results/<dataset>/forget_<k>/<method>_<loss>/f<alpha><decay>_r<alpha>_lr<lr>[_dual]/<time>/``
(SFR-on) or ``.../forget_<k>/<mode>/f<alpha>_r<alpha>_lr<lr>[_dual]/<time>/`` with ``ckpts/ckpt.pth``.
Every ``training.snapshot_freq`` steps it also writes a resume snapshot there (and, with ``--keep_snapshots``, keeps
that step's model as ``ckpts/ckpt_<step>.pth``);
``--resume`` continues the latest unfinished run of the same settings.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common.checkpointing import EndlessLoader, add_resume_args
from common.distributed import SampleSharding
from common.errors import ArgumentParser, UsageError, cli_main, non_negative_float
from common.io import atomic_path, load_torch_file
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args, tracking
from common.saliency import check_mask
from ImageGeneration.core.diffusion import EMA
from ImageGeneration.core.images import check_label
from ImageGeneration.core.methods import METHODS, SA_FISHER
from ImageGeneration.core.runs import finish_run, open_run, parse_run_args, start_run
from common.precision import MixedPrecision, add_amp_args, amp_precision
from ImageGeneration.core.optim import add_optim_args, recipe_tag
from ImageGeneration.core.unlearn import ForgetWeights
from ImageGeneration.DDPM.data import add_data_args, load_arrays, load_class_samples, make_loader, split_forget
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, load_run_checkpoint, save_checkpoint, strip_data_parallel
from ImageGeneration.DDPM.config import load_config, save_config, to_dict
from ImageGeneration.DDPM.optimizers import build_unlearn_optimizer
from ImageGeneration.DDPM.run_config import ForgetRunConfig, check_method_flags
from ImageGeneration.DDPM.training import ddpm_batches
from ImageGeneration.DDPM.unlearn import ForgetSpec, adopt_architecture, config_kind, forget_ddpm, plan_forgetting


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_root", type=str, default=".")
    parser.add_argument("--config", type=str, default=None,
                        help="YAML config (default <dataset>_sfron.yml, _saliency_unlearn.yml or _sa.yml)")
    parser.add_argument("--ckpt_folder", type=str, required=True, help="run folder of the model to unlearn")
    parser.add_argument("--mode", type=str, default="sfron", help=" | ".join(METHODS))
    parser.add_argument("--label_to_forget", type=int, default=0)
    parser.add_argument("--forget_alpha", type=non_negative_float, default=1.0, help="forget loss alpha")
    parser.add_argument("--decay_forget_alpha", action="store_true", help="cosine-decay the forget alpha (sfron)")
    parser.add_argument("--remain_alpha", type=non_negative_float, default=1.0, help="remain loss alpha")
    parser.add_argument("--unlearn_loss", type=str, default=None,
                        help="ga | rl | adaga (default: the method's, rl for salun, adaga for sfron)")
    parser.add_argument("--method", type=str, default="ron", help="sfron update: ron (alternate) | joint")
    parser.add_argument("--mask_path", type=str, default=None, help="saliency mask (generate_mask.py)")
    parser.add_argument("--keep_snapshots", action="store_true",
                        help="also keep the model of every snapshot before the last (every training.snapshot_freq "
                             "steps) as ckpts/ckpt_<step>.pth, to evaluate along the run (ours: the research code "
                             "overwrites ckpts/ckpt.pth)")
    add_optim_args(parser)
    add_amp_args(parser)
    add_data_args(parser)
    add_resume_args(parser, overwrite=False)
    add_nonfinite_args(parser)
    add_report_args(parser)
    return parse_run_args(parser, argv)


def run_parts(run: ForgetRunConfig, config) -> list:
    """The research code's result folder names (``_dual`` for ``--dual``, ``_<recipe>`` for another ``--optim``);
    a method with update methods (SFR-on) is named by its ``--method`` and loss."""
    dual = f"_{recipe_tag(run.recipe)}" if recipe_tag(run.recipe) else ""
    if run.method_entry.update_methods:
        loss = f"{run.unlearn_loss}{config.training.gamma}" if run.unlearn_loss == "adaga" else run.unlearn_loss
        return [run.dataset, f"forget_{run.label_to_forget}", f"{run.method}_{loss}",
                f"f{run.forget_alpha}{run.decay_forget_alpha}_r{run.remain_alpha}_lr{config.optim.lr}{dual}"]
    return [run.dataset, f"forget_{run.label_to_forget}", run.mode,
            f"f{run.forget_alpha}_r{run.remain_alpha}_lr{config.optim.lr}{dual}"]


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    check_method_flags(args)
    device = start_run(args)
    sharding = SampleSharding.from_launch(device, args.seed)
    device = sharding.device(device)
    precision = MixedPrecision(device, amp_precision(args.amp, args.amp_dtype), "--amp_dtype")
    ckpt_folder = Path(args.ckpt_folder)
    loaded = load_run_checkpoint(args, device, config_kind(args.mode))
    run = ForgetRunConfig.from_args(args, loaded.dataset)  # the run's settings from here on, frozen
    unet, ckpt_config = loaded.unet, loaded.config
    check_label(run.label_to_forget, ckpt_config.data.n_classes, "--label_to_forget")
    config = adopt_architecture(load_config(run.config, run.dataset, config_kind(run.mode)), ckpt_config)
    mask = None
    if run.mask_path:  # the research code's masks are named on its nn.DataParallel model
        mask = check_mask(strip_data_parallel(load_torch_file(run.mask_path, "--mask_path")), unet,
                          f"--mask_path {run.mask_path}")
    batch_size = config.training.batch_size

    sa_fisher = None
    if SA_FISHER in run.method_entry.inputs:
        fisher_path = ckpt_folder / "fisher_dict.pt"
        if not fisher_path.is_file():
            raise UsageError(f"--ckpt_folder {ckpt_folder}: --mode {run.mode} needs fisher_dict.pt from "
                             "generate_mask.py --mode sa_fim")
        sa_fisher = check_mask(load_torch_file(fisher_path, "--ckpt_folder"), unet, f"--ckpt_folder {fisher_path}",
                               binary=False)
        # Selective Amnesia's generative replay: the model's own samples of every other class
        remain_x, remain_y = load_class_samples(
            ckpt_folder, ckpt_config, f"--mode {run.mode} needs class_samples/<label>/ from sample.py --mode "
            "sample_classes",
            exclude=run.label_to_forget)
        forget_x = forget_y = None  # Selective Amnesia forgets with uniform noise, not data
    else:
        images, labels = load_arrays(run.dataset, run.data_path, "train", ckpt_config.data.image_size,
                                     ckpt_config.data.channels)
        (remain_x, remain_y), (forget_x, forget_y) = split_forget(images, labels, run.label_to_forget)
    flip = config.data.random_flip
    remain_batches = ddpm_batches(EndlessLoader(make_loader(remain_x, remain_y, batch_size, run.seed)), device, flip)
    forget_batches = None if forget_x is None else ddpm_batches(
        EndlessLoader(make_loader(forget_x, forget_y, batch_size, run.seed + 1)), device, flip)

    spec = ForgetSpec(mode=run.mode, label_to_forget=run.label_to_forget, **ForgetWeights.args_of(run))
    optimizer = build_unlearn_optimizer(config, unet, run.recipe, run.forget_lr)
    plan = plan_forgetting(spec, unet, config, forget_batches, remain_batches, mask, sa_fisher, sharding,
                           dual=optimizer.is_dual)
    ema = EMA(unet, config.model.ema_rate, loaded.state.get("ema")) if config.model.ema else None

    run_dir, logger, snapshots = open_run(run.exp_root, run_parts(run, config), sharding, run.record(),
                                          config.training.snapshot_freq, to_dict(config))
    snapshots.register(remain_batches=remain_batches, **({"forget_batches": forget_batches} if forget_batches else {}))
    if sharding.is_main:
        save_config(config, run_dir / "logs" / "config.yaml")
    logger.info(f"forgetting class {run.label_to_forget} of {ckpt_folder} with {run.mode} "
                f"({plan.schedule} updates, {type(optimizer).__name__})")

    def snapshot(step: int) -> None:
        if sharding.is_main:
            path = save_checkpoint(run_dir / CKPT_RELPATH, unet, config, loaded.trained_classes, step,
                                   ema.state_dict() if ema is not None else None, optimizer.state_dict())
            if run.keep_snapshots and step + 1 < config.training.n_iters:
                with atomic_path(path.with_name(f"ckpt_{step + 1}.pth")) as kept:
                    shutil.copyfile(path, kept)

    with tracking(run.record(), run_dir, enabled=sharding.is_main) as reporter:
        history = forget_ddpm(spec, unet, config, optimizer, plan, ema, logger, snapshot, sharding, snapshots,
                              allow_nonfinite=run.allow_nonfinite, precision=precision)
        reporter.metrics({"final_forget_loss": history[-1]["forget_loss"],
                          "final_remain_loss": history[-1]["remain_loss"]})
    return finish_run(run_dir, run.record(), {"final_forget_loss": history[-1]["forget_loss"],
                                      "final_remain_loss": history[-1]["remain_loss"], "history": history,
                                      "schedule": plan.schedule, "optimizer": repr(optimizer)},
                      sharding, to_dict(config), snapshots)


if __name__ == "__main__":
    main()
