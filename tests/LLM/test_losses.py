"""Each forget loss on hand-built logits against hand-computed values."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from common.errors import UsageError
from LLM.losses import (FORGET_LOSSES, ap_loss, dpo_loss, kl_to_reference, npo_loss, sequence_nll,
                        token_mean_nll, uniform_kl_loss)

LOG2 = math.log(2.0)


def test_sequence_and_token_nll_shift_and_ignore():
    logits = torch.zeros(1, 3, 2)                  # uniform: every token costs log 2
    labels = torch.tensor([[-100, 0, 1]])          # positions 0 and 1 predict labels 1 and 2
    assert sequence_nll(logits, labels).tolist() == pytest.approx([2 * LOG2])
    assert token_mean_nll(logits, labels).item() == pytest.approx(LOG2)
    logits[0, 0] = torch.tensor([math.log(3.0), 0.0])  # p(label 0) = 3/4 at position 0
    assert sequence_nll(logits, labels).item() == pytest.approx(-math.log(0.75) + LOG2)


def test_uniform_kl_loss_is_kl_of_uniform_to_prediction():
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[-100, 0, -100]])       # only position 0 counts
    assert uniform_kl_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0)])  # p = (1/4, 3/4)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert uniform_kl_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_npo_dpo_ap_against_hand_values():
    one = torch.tensor([1.0])
    assert npo_loss(one, one, beta=0.1).item() == pytest.approx(20 * LOG2)
    # nll - ref = 2 -> -(2/beta) log sigmoid(beta * 2) with beta = 0.5
    assert npo_loss(torch.tensor([3.0]), one, beta=0.5).item() == pytest.approx(4 * math.log(1 + math.exp(-1)))
    assert dpo_loss(one, one, one, one, beta=0.1).item() == pytest.approx(20 * LOG2)
    # policy margin (forget - idk) = 2, reference margin 0, beta 1 -> 2 log(1 + e^-2)
    assert dpo_loss(torch.tensor([1.0]), torch.tensor([3.0]), one, one, beta=1.0).item() == pytest.approx(
        2 * math.log(1 + math.exp(-2)))
    # retain nll 2, idk nll 1, beta 1 -> -log sigmoid(-1) = log(1 + e)
    assert ap_loss(torch.tensor([2.0]), torch.tensor([1.0]), beta=1.0).item() == pytest.approx(math.log(1 + math.e))


def test_kl_to_reference_averages_over_all_positions():
    logits = torch.zeros(1, 2, 2)
    ref = torch.zeros(1, 2, 2)
    ref[0, 0] = torch.tensor([0.0, math.log(3.0)])  # q = (1/4, 3/4) at one of two positions
    expected = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)) / 2
    assert kl_to_reference(logits, ref).item() == pytest.approx(expected, rel=1e-5)


class FixedLogits(torch.nn.Module):
    """A 'model' returning preset logits (plus a trainable offset), for the term wrappers."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.logits + self.offset)


def batch_of(labels):
    return {"input_ids": torch.zeros_like(labels), "attention_mask": torch.ones_like(labels), "labels": labels}


def test_registry_terms_and_joint_coefficients():
    for name in ("GA", "GA+GD", "GA+KL", "NPO", "NPO+GD", "NPO+KL", "DPO", "DPO+GD", "IDK+GD", "IDK+AP",
                 "ME", "ME+GD", "LLMU"):
        assert name in FORGET_LOSSES
    with pytest.raises(UsageError, match="--forget_loss: unknown value 'XYZ'"):
        FORGET_LOSSES.get("XYZ")
    assert FORGET_LOSSES.get("NPO+GD").needs_ref and not FORGET_LOSSES.get("ME+GD").needs_ref
    assert FORGET_LOSSES.get("IDK+AP").kinds == ("forget_idk", "retain", "retain_idk")

    model = FixedLogits(torch.zeros(1, 3, 2))
    labels = torch.tensor([[-100, 0, 1]])
    batch = {"forget": batch_of(labels), "retain": batch_of(labels)}
    ga_gd = FORGET_LOSSES.get("GA+GD")
    assert ga_gd.forget(model, None, batch, 0.1).item() == pytest.approx(-LOG2)
    assert ga_gd.joint(model, None, batch, 0.1, forget_coeff=0.5, regularization_coeff=2.0).item() == \
        pytest.approx(-0.5 * LOG2 + 2 * LOG2)
    with pytest.raises(UsageError, match="NPO needs a reference model"):
        FORGET_LOSSES.get("NPO+GD").forget(model, None, batch, 0.1)
    assert FORGET_LOSSES.get("NPO").forget(model, model, batch, 0.1).item() == pytest.approx(20 * LOG2)


class PositionalToy(torch.nn.Module):
    """Logits ``E[token] + P[position]`` from a seeded generator: padded positions get logits of their own,
    as a transformer's do, so the KL's mean depends on how far the batch is padded."""

    def __init__(self, seed, vocab=6, length=8):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.E = torch.nn.Parameter(torch.randn(vocab, vocab, generator=generator))
        self.P = torch.nn.Parameter(torch.randn(length, vocab, generator=generator))

    def forward(self, input_ids, attention_mask=None, labels=None):
        return SimpleNamespace(logits=self.E[input_ids] + self.P[: input_ids.shape[1]])


def test_kl_term_on_a_max_length_batch_is_the_originals():
    """Reference values: the original's ``kl_loss`` (``trainer/losses.py:132-149``) run on these two rows
    (3 and 5 real tokens, end of sequence 0) padded to its ``max_length`` 8, and cut to 6 columns (the
    longest row plus its end-of-sequence position: the batch this project built before)."""
    ids = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0], [1, 4, 2, 5, 3, 0, 0, 0]])
    labels = torch.tensor([[-100, 2, 3, 0, -100, -100, -100, -100], [-100, -100, 2, 5, 3, 0, -100, -100]])
    attention = (torch.arange(8) < torch.tensor([[3], [5]])).long()
    model, ref = PositionalToy(0), PositionalToy(1)
    kl = FORGET_LOSSES.get("GA+KL")
    assert kl.full_length == ("retain",) and FORGET_LOSSES.get("LLMU").full_length == ("retain",)
    assert FORGET_LOSSES.get("GA+GD").full_length == ()
    for length, value, grad in ((8, 1.2136638164520264, [0.005154645536094904, -0.001055189990438521,
                                                        0.036724332720041275]),
                                (6, 1.4397319555282593, [0.006872860714793205, -0.0014069201424717903,
                                                         0.048965778201818466])):
        batch = {"retain": {"input_ids": ids[:, :length], "labels": labels[:, :length],
                            "attention_mask": attention[:, :length]}}
        loss = kl.regularization(model, ref, batch, 0.1)
        loss.backward()
        assert loss.item() == pytest.approx(value, rel=1e-6)
        assert model.P.grad[0, :3].tolist() == pytest.approx(grad, rel=1e-5)
        model.zero_grad()
