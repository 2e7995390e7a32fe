"""Train the original model that unlearning starts from.

    python main_train.py --arch resnet18 --dataset cifar10 --lr 0.1 --epochs 182 --save_dir resnet18_cifar10

``--optim sgd`` (default): SGD (momentum ``--momentum``, weight decay
``--weight_decay``) with MultiStepLR on ``--decreasing_lr``; ``adam``: AdamW
(weight decay 0.05) with cosine annealing; any other value: SAM around that SGD
(:mod:`common.sam`), with MultiStepLR for ``sam`` (the research code's name)
and cosine annealing otherwise, the research code's intended schedulers.
``--periodic_cosine_lr`` replaces the schedule with the one the research code
actually ran (:func:`ImageClassification.unlearn.engine.periodic_cosine`).
Random-crop/flip augmentation unless ``--no-aug``.  Writes
``0checkpoint.pth.tar`` (last epoch) and ``0model_SA_best.pth.tar`` (best
validation accuracy), the research code's names; either is a ``--model_path``.
A resume snapshot is written after every epoch (and every ``--save_every``
steps); ``--resume`` continues a killed run from it.
"""
from __future__ import annotations

from pathlib import Path

from common.checkpointing import Snapshotter, refuse_overwrite
from common.distributed import shard_forward
from common.errors import UsageError, cli_main
from common.io import atomic_torch_save, check_writable_dir, write_run_record
from common.seed import seed_everything
from common.tracking import tracking
from ImageClassification.arg_parser import build_parser, parse_config
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import load_unlearn_data, make_loader
from ImageClassification.evaluation import accuracy
from ImageClassification.models import build_model_from_config
from ImageClassification.pipeline import start_processes
from ImageClassification.unlearn.engine import build_unlearn_optimizer, cross_entropy_loss, run_epochs, sam_sgd

LAST, BEST = "0checkpoint.pth.tar", "0model_SA_best.pth.tar"
# The research code trains on the split of its unmarked loader, whose seed is fixed at 1.
TRAIN_SPLIT_SEED = 1


def train(config: UnlearnConfig) -> dict:
    if not config.save_dir:
        raise UsageError("--save_dir: required (folder for the trained model)")
    save_dir = Path(config.save_dir)
    if not (config.resume and Snapshotter(save_dir).exists()):
        refuse_overwrite(save_dir, [BEST], config.overwrite)
    sharding, device = start_processes(config)
    seed_everything(config.train_seed, config.deterministic)
    data = load_unlearn_data(config, split_seed=TRAIN_SPLIT_SEED, device=device)
    train_loader = make_loader(data.split("train"), config, shuffle=True, seed=config.train_seed)
    val_loader = make_loader(data.split("val"), config, shuffle=False)
    test_loader = make_loader(data.split("test"), config, shuffle=False)
    seed_everything(config.train_seed)  # the initialisation depends on --train_seed alone, as the research code's
    model = shard_forward(build_model_from_config(config, pretrained=True).to(device), sharding)
    check_writable_dir(save_dir)

    # Training is fine-tuning from scratch on the whole train set: the unlearning epoch
    # driver with one optimizer at --lr for --epochs epochs.
    schedule = config.replace(unlearn="train", unlearn_lr=config.lr, retain_lr=config.lr,
                              unlearn_epochs=config.epochs)
    optimizer = train_optimizer(model, schedule)
    print(f"optimizer: {optimizer.retain_optimizer.__class__.__name__}")
    train_loss = cross_entropy_loss(model)

    def epoch(run) -> dict:
        train_acc = run.train_on(train_loader, train_loss, "retain", desc="train", warmup_every_step=True)
        record = {"epoch": run.epoch + 1, "train_acc": train_acc, "val_acc": accuracy(model, val_loader, device)}
        history = run.epoch_results + [record]
        print(f"epoch {record['epoch']}: train acc {train_acc:.2f}, val acc {record['val_acc']:.2f}")
        if sharding.is_main:
            state = {"state_dict": model.state_dict(), "arch": config.arch, "dataset": config.dataset,
                     "num_classes": config.num_classes, "epoch": record["epoch"], "result": history}
            atomic_torch_save(state, save_dir / LAST)
            if record["val_acc"] > max((r["val_acc"] for r in run.epoch_results), default=-1.0):
                atomic_torch_save(state, save_dir / BEST)
        return record

    with tracking(config.record(), save_dir, enabled=sharding.is_main) as reporter:
        history = run_epochs(model, schedule, device, None, epoch, epoch_checkpoints=False,
                             optimizer=optimizer).epoch_results
        best = max(history, key=lambda record: record["val_acc"])  # the first of equal maxima, as saved above
        metrics = {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
                   "final_val_acc": history[-1]["val_acc"], "test_acc": accuracy(model, test_loader, device)}
        reporter.metrics(metrics)
    print(f"test acc: {metrics['test_acc']}")
    if sharding.is_main:
        write_run_record(save_dir, config.record(), metrics, history=history, num_processes=sharding.world)
        Snapshotter(save_dir).remove()
    return metrics


def train_optimizer(model, schedule: UnlearnConfig):
    """The research code's ``main_train.py`` optimizer: ``sgd`` and ``adam`` as in unlearning
    (SGD; AdamW with weight decay 0.05), any other ``--optim`` SAM around SGD."""
    if schedule.optim in ("sgd", "adam"):
        return build_unlearn_optimizer(model, schedule, (schedule.lr, schedule.lr))
    return sam_sgd(model, schedule, schedule.lr)


def build_train_parser():
    parser = build_parser("Train the original image classifier", optim_choices=None,
                          optim_help="sgd (default) | adam: AdamW, weight decay 0.05 | any other value "
                                     "(the research code's 'sam'): SAM(SGD), rho 0.05")
    parser.add_argument("--periodic_cosine_lr", action="store_true",
                        help="the research code's schedule instead of MultiStepLR: at the start of epoch e the lr "
                             "is --lr * (1 + cos(pi * (e - 10) / 10)) / 2, a 20-epoch cycle starting at 0 "
                             "(its main_train overwrites the lr so; for models trained with it)")
    return parser


@cli_main
def main(argv=None):
    return train(parse_config(argv, build_train_parser(), unlearning=False))


if __name__ == "__main__":
    main()
