"""The command line shared by every image-classification script (as the research code's ``arg_parser.py``).

General flags live here with the research code's names and defaults; the
flags a single unlearning method reads are added by
:func:`ImageClassification.unlearn.args.add_method_args`.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from common.checkpointing import add_resume_args
from common.device import add_device_args
from common.errors import (ArgumentParser, UsageError, non_negative_float, non_negative_int, positive_float,
                           positive_int)
from dualoptim.recipes import IMAGE_FLAG, get_recipe, recipe_names
from common.io import add_trust_args
from common.precision import add_amp_args
from common.nonfinite import add_nonfinite_args
from common.tracking import add_report_args
from common.seed import DETERMINISTIC_HELP
from ImageClassification.config import UnlearnConfig
from ImageClassification.data import dataset_settings
from ImageClassification.unlearn.args import add_method_args

#: The ``--unlearn`` methods that take the paper's optimizer ablations (the research code's SFR-on alone).
ABLATION_METHODS = ("SFRon",)


def build_parser(description: str = "DualOptim image-classification unlearning",
                 optim_choices: Optional[Sequence[str]] = tuple(recipe_names(IMAGE_FLAG)),
                 optim_help: str = "sgd | adam: one optimizer; dual/dual_as: AdamW forget + SGD retain; "
                                   "dual_aa: AdamW + AdamW; dual_prodigy / dual_sf: learning-rate-free Prodigy / "
                                   "schedule-free AdamW forget (--unlearn_lr 1.0 / 0.0025 are their defaults) + "
                                   "SGD retain (pip install 'dualoptim[lrfree]'); SFR-on also takes the ablations dual_sa, dual_ss, "
                                   "dual_ls, dual_ll, dual_sl, dual_share, dual_aa_m, dual_aa_v, dual_aa_8bit "
                                   "(dualoptim/recipes.py)") -> argparse.ArgumentParser:
    """The shared command line; ``main_train.py`` gives ``--optim`` its own choices and help."""
    parser = ArgumentParser(description=description)

    data = parser.add_argument_group("data")
    data.add_argument("--name", type=str, default="vanilla", help="name of the experiment")
    data.add_argument("--data", type=str, default="/data",
                      help="dataset root for torchvision datasets, or an ImageFolder tree/zip for cifar10")
    data.add_argument("--dataset", type=str, default="cifar10",
                      help="cifar10 | cifar100 | svhn | TinyImagenet | digits (scikit-learn, no download)")
    data.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data")
    data.add_argument("--input_size", type=positive_int, default=None,
                      help="model input size; images of another size are resized to it (default: 32 for "
                           "CIFAR/SVHN, 224 for TinyImagenet's 64x64 images as the research code, 16 for digits)")
    data.add_argument("--data_dir", type=str, default="./tiny-imagenet-200", help="TinyImagenet folder")
    data.add_argument("--num_workers", type=non_negative_int, default=0, help="DataLoader worker processes")
    data.add_argument("--workers", type=non_negative_int, default=0, help="alias of --num_workers (research code)")
    data.add_argument("--num_classes", type=int, default=10, help="set from the dataset")
    data.add_argument("--no-aug", dest="no_aug", action="store_true", default=False,
                      help="no augmentation in the training set")
    data.add_argument("--data_on_device", action="store_true",
                      help="hold the dataset on the run's device as uint8 and build every batch there (order, "
                           "crop + flip, scaling in whole-batch ops) instead of image by image in DataLoader "
                           "workers; array datasets at their own size (ImageClassification/device_data.py)")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", type=str, default="resnet18", help="model architecture")
    model.add_argument("--imagenet_arch", action="store_true", help="architecture for ImageNet-sized inputs")
    model.add_argument("--pretrained_weights", type=str, default=None,
                       help="swin_t: torchvision's ImageNet weights file to start from (main_train, retrain; "
                            "default: the torch hub cache's swin_t-704ceda3.pth)")
    model.add_argument("--from_scratch", action="store_true",
                       help="swin_t: start from a random initialisation instead of ImageNet weights")

    general = parser.add_argument_group("general")
    # >= 1: the forget set is drawn with RandomState(seed - 1), as in the research code
    general.add_argument("--seed", default=2, type=positive_int, help="random seed (validation split and forget set)")
    general.add_argument("--train_seed", default=1, type=int, help="seed for model initialisation and training")
    add_device_args(general)
    add_resume_args(general, save_every="0: at the end of every epoch only; SFR-on: every log interval")
    add_trust_args(general)
    add_nonfinite_args(general)
    add_report_args(general)
    general.add_argument("--save_dir", type=str, default=None, help="folder for checkpoints and results")
    general.add_argument("--model_path", type=str, default=None, help="checkpoint of the original model")
    general.add_argument("--deterministic", action="store_true", help=DETERMINISTIC_HELP)

    train = parser.add_argument_group("training")
    train.add_argument("--batch_size", type=positive_int, default=256)
    train.add_argument("--lr", default=0.1, type=positive_float, help="initial learning rate (main_train)")
    train.add_argument("--momentum", default=0.9, type=non_negative_float)
    train.add_argument("--weight_decay", default=5e-4, type=non_negative_float)
    train.add_argument("--epochs", default=182, type=positive_int, help="training epochs (main_train)")
    train.add_argument("--warmup", default=0, type=non_negative_int, help="warm-up epochs")
    train.add_argument("--print_freq", default=50, type=positive_int)
    train.add_argument("--decreasing_lr", default="91,136", help="epochs at which the lr is divided by 10")
    add_amp_args(train)
    train.add_argument("--channels_last", action="store_true",
                       help="channels-last memory format for the model and its input batches")

    unlearn = parser.add_argument_group("unlearning")
    unlearn.add_argument("--unlearn", type=str, default="retrain", help="unlearning method")
    unlearn.add_argument("--unlearn_lr", default=0.01, type=positive_float,
                         help="learning rate of the forget objective")
    unlearn.add_argument("--retain_lr", default=None, type=positive_float,
                         help="learning rate of the retain objective (default: --unlearn_lr)")
    unlearn.add_argument("--unlearn_epochs", default=10, type=positive_int)
    unlearn.add_argument("--num_indexes_to_replace", type=positive_int, default=None,
                         help="number of samples to forget")
    unlearn.add_argument("--class_to_replace", type=int, default=-1, help="class to forget (-1: any class)")
    unlearn.add_argument("--indexes_to_replace", type=str, default=None,
                         help="comma-separated training-set indexes to forget")
    unlearn.add_argument("--mask_path", default=None, type=str, help="SalUn saliency mask (with_<t>.pt)")
    unlearn.add_argument("--optim", default="sgd", type=str, choices=optim_choices, help=optim_help)
    unlearn.add_argument("--mia", default="sfron", choices=("sfron", "salun"),
                         help="MIA-efficacy: sfron (entropy + logistic regression, the DualOptim logs) or "
                              "salun (SVC on confidence)")
    add_method_args(parser)
    return parser


def validate_args(args: argparse.Namespace, unlearning: bool = True) -> argparse.Namespace:
    """The research code's derived defaults (ranges are checked by the flags' types).

    This is the one place ``--retain_lr`` defaults to ``--unlearn_lr``, and where the values
    ``--dataset`` fixes join the flags (:func:`~ImageClassification.data.dataset_settings`: its classes, its
    normalisation and, unless ``--input_size`` is given, the input size).  The
    paper's optimizer ablations (``--optim dual_sa`` ...) run with SFR-on only,
    as in the research code (its other methods build no optimizer for them);
    ``main_train.py`` (``unlearning=False``) reads ``--optim`` its own way.
    """
    if unlearning and get_recipe(IMAGE_FLAG, args.optim).ablation and args.unlearn not in ABLATION_METHODS:
        raise UsageError(f"--optim {args.optim}: this optimizer ablation runs with --unlearn "
                         f"{' or '.join(ABLATION_METHODS)} only (main_random_sfron.py), as in the research code")
    if args.retain_lr is None:
        args.retain_lr = args.unlearn_lr
    args.num_workers = max(args.num_workers, args.workers)
    for key, value in dataset_settings(args.dataset, args.input_size).items():
        setattr(args, key, value)
    return args


def parse_config(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None,
                 unlearning: bool = True) -> UnlearnConfig:
    """Parse ``argv`` with ``parser`` (default: :func:`build_parser`), complete the flags
    (:func:`validate_args`) and freeze them: the one :class:`~ImageClassification.config.UnlearnConfig`
    of an entry script's run."""
    return UnlearnConfig.from_args(validate_args((parser or build_parser()).parse_args(argv), unlearning))
