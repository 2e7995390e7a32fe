"""UnlearnConfig: one frozen, typed config per run, recording exactly the completed flags."""
import dataclasses

import pytest

from ImageClassification import main_train
from ImageClassification.arg_parser import build_parser, parse_config, validate_args
from ImageClassification.config import UnlearnConfig
from ImageClassification.lora import parse_lora_config

DIGITS = ["--dataset", "digits", "--unlearn", "RL", "--unlearn_lr", "0.03", "--workers", "2"]
# what --dataset digits sets (ImageClassification/data.py): 10 classes, 16x16 inputs, its normalisation
DIGITS_SETTINGS = {"num_classes": 10, "input_size": 16, "data_mean": [0.1, 0.1, 0.1], "data_std": [0.25, 0.25, 0.25]}


def completed_flags(parser, argv, unlearning=True) -> dict:
    """What run.json recorded before the config: ``vars(args)`` after validate_args and the dataset."""
    return {**vars(validate_args(parser.parse_args(argv), unlearning)), **DIGITS_SETTINGS}


def assert_same_record(record: dict, expected: dict) -> None:
    assert list(record) == list(expected)  # the same keys, in the parser's order
    for key in expected:
        assert record[key] == expected[key], key


def test_unlearning_scripts_record_the_completed_flags_in_order():
    config = parse_config(DIGITS)
    assert_same_record(config.record(), completed_flags(build_parser(), DIGITS))
    # completed once: --retain_lr from --unlearn_lr, --num_workers from --workers, the dataset's values
    assert (config.retain_lr, config.num_workers, config.num_classes, config.input_size) == (0.03, 2, 10, 16)
    assert config.periodic_cosine_lr is None and config.rank_config is None  # other scripts' flags


def test_main_train_records_its_own_flag():
    argv = ["--dataset", "digits", "--optim", "sam", "--periodic_cosine_lr"]
    config = parse_config(argv, main_train.build_train_parser(), unlearning=False)
    assert_same_record(config.record(), completed_flags(main_train.build_train_parser(), argv, unlearning=False))
    assert config.periodic_cosine_lr is True and config.optim == "sam"


def test_lora_config_records_rank_config_and_the_plain_arch():
    record = parse_lora_config(DIGITS + ["--arch", "resnet20s_lora", "--rank_config", "ranks.json"]).record()
    assert record["arch"] == "resnet20s" and record["rank_config"] == "ranks.json" and record["mia"] == "salun"
    assert list(record)[-4:] == ["rewind_epoch", "rank_config", "data_mean", "data_std"]


def test_config_is_frozen_and_replace_makes_a_variant():
    config = parse_config(DIGITS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.unlearn_lr = 1.0
    variant = config.replace(unlearn="train", unlearn_lr=0.5)
    assert (variant.unlearn, variant.unlearn_lr, config.unlearn, config.unlearn_lr) == ("train", 0.5, "RL", 0.03)


def test_a_flag_without_a_field_is_an_error():
    parser = build_parser()
    parser.add_argument("--new_flag", type=int, default=3)
    with pytest.raises(TypeError, match="new_flag"):
        UnlearnConfig.from_args(validate_args(parser.parse_args(DIGITS)))
