"""Forget-set selection, validation split, MIA and accuracy on constructed inputs."""

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UsageError
from ImageClassification.arg_parser import parse_config
from ImageClassification.data import load_unlearn_data, select_forget_indexes, split_validation
from ImageClassification.evaluation import accuracy, entropy, evaluate, mia_salun, mia_sfron


def test_random_forget_set_is_the_research_code_draw():
    targets = np.repeat(np.arange(4), 5)
    chosen = select_forget_indexes(targets, seed=3, num_indexes_to_replace=6)
    expected = np.random.RandomState(2).choice(np.arange(20), size=6, replace=False)  # RandomState(seed - 1)
    assert np.array_equal(chosen, expected)
    assert np.array_equal(select_forget_indexes(targets, seed=3, num_indexes_to_replace=6), chosen)
    assert not np.array_equal(select_forget_indexes(targets, seed=4, num_indexes_to_replace=6), chosen)


def test_classwise_forget_set():
    targets = np.array([0, 1, 2, 1, 0, 1])
    assert select_forget_indexes(targets, seed=1, class_to_replace=1).tolist() == [1, 3, 5]
    some = select_forget_indexes(targets, seed=1, class_to_replace=1, num_indexes_to_replace=2)
    assert len(some) == 2 and set(some) <= {1, 3, 5}


@pytest.mark.parametrize("kwargs,message", [
    ({"num_indexes_to_replace": 7}, "--num_indexes_to_replace: 7 is larger than the train set"),
    ({"class_to_replace": 3}, r"--class_to_replace: must be -1 \(any class\) or 0..2, got 3"),
    ({"class_to_replace": 2, "num_indexes_to_replace": 2}, "larger than class 2"),
    ({}, "--num_indexes_to_replace: required"),
    ({"indexes_to_replace": np.array([9])}, "index 9 is outside the train set"),
])
def test_forget_selection_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        select_forget_indexes(np.array([0, 1, 2, 1, 0, 1]), seed=1, **kwargs)


def test_validation_split_takes_ten_percent_per_class():
    targets = np.repeat(np.arange(3), 20)
    train, val = split_validation(targets, seed=2)
    assert len(val) == 6 and np.bincount(targets[val]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))


def test_digits_unlearn_data_same_seed_same_forget_set_and_classwise_test_drop():
    args = parse_config(["--dataset", "digits", "--num_indexes_to_replace", "50"])
    first, second = load_unlearn_data(args), load_unlearn_data(args)
    assert np.array_equal(first.forget_index, second.forget_index) and len(first.forget_index) == 50
    assert len(first.retain_index) + 50 == len(first.train)
    whole_class = load_unlearn_data(parse_config(["--dataset", "digits", "--class_to_replace", "3"]))
    assert set(whole_class.train.targets[whole_class.forget_index]) == {3}
    assert 3 not in set(whole_class.test.targets) and args.num_classes == 10 and args.input_size == 16


def test_entropy_and_mia_on_constructed_probabilities():
    confident = torch.tensor([[0.98, 0.01, 0.01]]).repeat(50, 1)
    uncertain = torch.full((50, 3), 1 / 3)
    assert entropy(uncertain)[0].item() == pytest.approx(np.log(3))
    # members (retain) are confident, non-members (test) uncertain
    assert mia_sfron(confident, forget=confident[:10], test=uncertain) == 1.0      # forget looks like members
    assert mia_sfron(confident, forget=uncertain[:10], test=uncertain) == 0.0      # forget forgotten
    member_conf, nonmember_conf = torch.full((40,), 0.95), torch.full((40,), 0.3)
    assert mia_salun(member_conf, nonmember_conf, torch.full((8,), 0.3)) == 1.0     # predicted non-members
    assert mia_salun(member_conf, nonmember_conf, torch.full((8,), 0.95)) == 0.0


class Constant(nn.Module):
    """Predicts class 0 with certainty for inputs whose first pixel is > 0.5, class 1 otherwise."""

    def forward(self, x):
        first = (x.flatten(1)[:, 0] > 0.5).float()
        return torch.stack([first, 1 - first], dim=1) * 20


def test_accuracy_and_evaluate_report_ua_as_100_minus_forget_accuracy():
    images = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    loader = [(images, torch.tensor([0, 0, 1, 0]))]
    assert accuracy(Constant(), loader, torch.device("cpu")) == 75.0
    loaders = {"retain": [(images, torch.tensor([0, 0, 1, 1]))] * 5, "forget": loader,
               "val": loader, "test": [(images, torch.tensor([1, 1, 0, 0]))] * 5}
    metrics = evaluate(Constant(), loaders, torch.device("cpu"))
    assert metrics["RA"] == 100.0 and metrics["forget_acc"] == 75.0 and metrics["UA"] == 25.0
    assert metrics["TA"] == 0.0 and metrics["MIA"] == pytest.approx(100 * metrics["mia_raw"])
