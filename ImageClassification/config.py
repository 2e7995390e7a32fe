"""The typed, frozen settings of an image-classification run, built once from the parsed command line.

Every entry script parses its flags (:mod:`ImageClassification.arg_parser`),
completes them (:func:`~ImageClassification.arg_parser.validate_args`) and
freezes them here with :meth:`UnlearnConfig.from_args`; the pipeline, the data
layer, the epoch driver and every ``--unlearn`` method read the typed fields of
that one object.  The defaults live in one place, the flags' argparse defaults:
the fields have none, except the two flags only one script defines, which are
``None`` where the script has no such flag.  A run's variant of the settings
(``main_train.py``'s schedule, GA_prune's pruning states) is a
:func:`dataclasses.replace` copy.

:meth:`UnlearnConfig.record` is what ``run.json`` and the resume snapshots
record as the run's ``config``: the flags as parsed and completed, in the
parser's order, and the dataset's normalisation (``data_mean``/``data_std``).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

#: Flags of one script only: ``None`` (and not recorded) in the others.
SCRIPT_FLAGS = ("periodic_cosine_lr", "rank_config")


@dataclass(frozen=True, kw_only=True)
class UnlearnConfig:
    """One field per flag (see ``--help`` for each); field order is the parser's."""

    # data
    name: str
    data: str
    dataset: str
    download: bool
    input_size: int              # resolved: the dataset's size unless --input_size
    data_dir: str
    num_workers: int             # resolved: max(--num_workers, --workers)
    workers: int
    num_classes: int             # resolved: the dataset's
    no_aug: bool
    data_on_device: bool
    # model
    arch: str
    imagenet_arch: bool
    pretrained_weights: Optional[str]
    from_scratch: bool
    # general
    seed: int
    train_seed: int
    device: Optional[str]
    gpu: int
    resume: bool
    overwrite: bool
    save_every: int
    trust_checkpoint: bool
    allow_nonfinite: bool
    report_to: str
    logging_steps: int
    save_dir: Optional[str]
    model_path: Optional[str]
    deterministic: bool
    # training
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    warmup: int
    print_freq: int
    decreasing_lr: Union[str, Sequence[int]]  # "91,136" as given, or GA_prune's rewound milestones
    amp: bool
    amp_dtype: str
    channels_last: bool
    # unlearning
    unlearn: str
    unlearn_lr: float
    retain_lr: float             # resolved: --unlearn_lr unless given
    unlearn_epochs: int
    num_indexes_to_replace: Optional[int]
    class_to_replace: int
    indexes_to_replace: Optional[str]
    mask_path: Optional[str]
    optim: str
    mia: str
    # unlearning-method options (ImageClassification.unlearn.args)
    alpha: float
    no_l1_epochs: int
    accum_steps: int
    scrub_alpha: float
    scrub_gamma: float
    sfron_alpha: float
    sfron_freq: int
    sfron_iters: int
    sfron_checkpoint_every: int
    sfron_ema_beta: float
    mask_ratio: float
    rate: float
    pruning_times: int
    prune_type: str
    random_prune: bool
    rewind_epoch: int
    # one script's flags
    periodic_cosine_lr: Optional[bool] = None  # main_train.py
    rank_config: Optional[str] = None          # main_random_lora.py
    # the dataset's normalisation (set from --dataset)
    data_mean: List[float]
    data_std: List[float]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "UnlearnConfig":
        """Freeze completed flags (:func:`~ImageClassification.arg_parser.validate_args`, which adds the values
        the dataset sets: :func:`~ImageClassification.data.dataset_settings`).

        A flag without a field (or a field without a flag) is a ``TypeError``:
        a new flag gets its field here.
        """
        return cls(**vars(args))

    def record(self) -> Dict[str, Any]:
        """The settings as ``run.json`` and the resume snapshots record them (a script's flags only)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if not (field.name in SCRIPT_FLAGS and getattr(self, field.name) is None)}

    def replace(self, **changes: Any) -> "UnlearnConfig":
        """A copy with ``changes`` (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)
