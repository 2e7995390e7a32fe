"""Train the class-conditional DDPM on every class (``--mode pretrain``) or without one (``--mode retrain``).

    python -m ImageGeneration.DDPM.main_train --mode pretrain                 # digits
    python -m ImageGeneration.DDPM.main_train --config cifar10_pretrain.yml --data_path cifar10-jpeg.zip \\
        --mode retrain --label_to_forget 0

The dataset is ``--dataset``, else the config's ``data.dataset``, else digits.

Writes ``<exp_root>/results/<dataset>/<mode>/<timestamp>/`` with ``ckpts/ckpt.pth``
(raw and EMA weights), ``logs/config.yaml``, ``logs/stdout.txt`` and ``run.json``.
Every ``training.snapshot_freq`` steps it also writes a resume snapshot there;
``--resume`` continues the latest unfinished run of the same settings.
"""
from __future__ import annotations

import argparse

from common.checkpointing import EndlessLoader, add_resume_args
from common.distributed import SampleSharding
from common.errors import ArgumentParser, UsageError, cli_main
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args, tracking
from ImageGeneration.core.images import check_label
from ImageGeneration.core.runs import finish_run, open_run, parse_run_args, start_run
from ImageGeneration.DDPM.data import add_data_args, load_arrays, make_loader, split_forget
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, save_checkpoint
from ImageGeneration.DDPM.config import load_config, save_config, to_dict
from ImageGeneration.DDPM.networks import build_unet
from ImageGeneration.DDPM.run_config import TrainRunConfig
from ImageGeneration.DDPM.training import ddpm_batches, train_ddpm


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_root", type=str, default=".", help="results go to <exp_root>/results/...")
    parser.add_argument("--config", type=str, default=None,
                        help="YAML config (path or a name in DDPM/configs; default <dataset>_pretrain.yml)")
    parser.add_argument("--mode", type=str, default="pretrain", help="pretrain | retrain")
    parser.add_argument("--label_to_forget", type=int, default=0, help="class left out by --mode retrain")
    add_data_args(parser)
    add_resume_args(parser, overwrite=False)
    add_nonfinite_args(parser)
    add_report_args(parser)
    return parse_run_args(parser, argv)


@cli_main
def main(argv=None) -> str:
    args = parse_args(argv)
    if args.mode not in ("pretrain", "retrain"):
        raise UsageError(f"--mode {args.mode!r}: expected pretrain or retrain")
    config = load_config(args.config, args.dataset, "pretrain")
    run = TrainRunConfig.from_args(args, dataset=config.data.dataset)  # the run's settings from here on, frozen
    n_classes = config.data.n_classes
    if run.mode == "retrain":
        check_label(run.label_to_forget, n_classes, "--label_to_forget")
    device = start_run(run)
    sharding = SampleSharding.from_launch(device, run.seed)
    device = sharding.device(device)
    images, labels = load_arrays(run.dataset, run.data_path, "train", config.data.image_size, config.data.channels)
    if labels.max() >= n_classes:
        raise UsageError(f"--config: data.n_classes is {n_classes} but --dataset {run.dataset} has "
                         f"{int(labels.max()) + 1} classes")
    trained_classes = list(range(n_classes))
    if run.mode == "retrain":
        (images, labels), _ = split_forget(images, labels, run.label_to_forget)
        trained_classes.remove(run.label_to_forget)

    unet = build_unet(config.model, config.data).to(device)
    loader = make_loader(images, labels, config.training.batch_size, run.seed)
    batches = ddpm_batches(EndlessLoader(loader), device, config.data.random_flip)
    run_dir, logger, snapshots = open_run(run.exp_root, [run.dataset, run.mode], sharding, run.record(),
                                          config.training.snapshot_freq, to_dict(config))
    if sharding.is_main:
        save_config(config, run_dir / "logs" / "config.yaml")
    logger.info(f"Writing log file to {run_dir / 'logs'}")

    def snapshot(step, optimizer, ema) -> None:
        if sharding.is_main:
            save_checkpoint(run_dir / CKPT_RELPATH, unet, config, trained_classes, step,
                            ema.state_dict() if ema is not None else None, optimizer.state_dict())

    with tracking(run.record(), run_dir, enabled=sharding.is_main) as reporter:
        losses = train_ddpm(unet, config, batches, logger, snapshot, sharding, snapshots,
                            allow_nonfinite=run.allow_nonfinite)
        reporter.metrics({"final_loss": losses[-1]})
    return finish_run(run_dir, run.record(), {"final_loss": losses[-1], "n_iters": len(losses), "losses": losses,
                                              "trained_classes": trained_classes}, sharding, to_dict(config),
                      snapshots)


if __name__ == "__main__":
    main()
