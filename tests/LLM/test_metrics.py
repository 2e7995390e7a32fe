"""Metric functions on constructed inputs."""
from __future__ import annotations

import math

import pytest

from LLM.metrics import (aggregate, forget_quality, harmonic_mean, probability_score, rouge_recall,
                         token_entropy, truth_ratio_score, truth_ratios)


def test_truth_ratio_and_scores():
    ratios = truth_ratios([1.0, 2.0], [[2.0, 2.0], [1.0, 1.0]])
    assert ratios == pytest.approx([math.e, math.exp(-1)])
    assert truth_ratio_score(ratios, forget=False) == pytest.approx((1 - math.exp(-1) + 0.0) / 2)
    assert truth_ratio_score(ratios, forget=True) == pytest.approx(1 - math.exp(-1))


def test_probability_plain_and_normalised():
    stats = {"avg_gt_loss": [0.0, math.log(2)], "average_perturb_loss": [[0.0, 0.0], [math.log(2), math.log(2)]]}
    assert probability_score(stats, normalised=False) == pytest.approx(0.75)
    assert probability_score(stats, normalised=True) == pytest.approx(1 / 3)


def test_forget_quality_is_ks_pvalue():
    same = forget_quality([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert same["Forget Quality"] == pytest.approx(1.0) and same["KS Test Forget"] == 0.0
    apart = forget_quality([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert apart["KS Test Forget"] == 1.0 and apart["Forget Quality"] == pytest.approx(0.1)  # exact: 2 / C(6,3)


def test_harmonic_mean_rouge_and_entropy():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.0, 0.5]) == 0.0
    scores = rouge_recall(["the cat"], ["the cat sat"])
    assert scores["rougeL_recall"] == pytest.approx([2 / 3]) and scores["rouge1_recall"] == pytest.approx([2 / 3])
    assert token_entropy(["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert token_entropy(["a"]) == 0.0


def test_aggregate_model_utility_and_forget_efficacy():
    def stats(rouge, loss):
        return {"rougeL_recall": [rouge], "avg_gt_loss": [loss], "avg_paraphrased_loss": [loss],
                "average_perturb_loss": [[loss + math.log(2)]], "token_entropy": [0.5]}
    results = {"eval_log.json": stats(1.0, 0.0), "eval_real_author_wo_options.json": stats(0.5, 0.0),
               "eval_real_world_wo_options.json": stats(0.5, 0.0), "eval_log_forget.json": stats(0.2, math.log(4))}
    out = aggregate(results, retain_forget_result=results["eval_log_forget.json"])
    # R = 2 everywhere: utility truth ratio 1/2, forget truth ratio 1 - 1/2.
    assert out["Retain Truth Ratio"] == pytest.approx(0.5) and out["Forget Truth Ratio"] == pytest.approx(0.5)
    assert out["Retain Probability"] == pytest.approx(1.0)
    assert out["Real Authors Probability"] == pytest.approx(1 / 1.5)
    expected_mu = 9 / (1 / 1 + 1 / 1 + 2 + 2 * (2 + 1.5 + 2))
    assert out["Model Utility"] == pytest.approx(expected_mu)
    assert out["Forget Efficacy"] == pytest.approx(1 - (0.2 + 0.25 + 0.5) / 3)
    # with token entropy 0.5: retain (1, 1, 1/2, 1/2) -> 4 / 6; all 12 utility numbers -> 12 / 21
    assert out["Model Utility Retain"] == pytest.approx(4 / 6)
    assert out["Model Utility (all)"] == pytest.approx(12 / 21)
    assert out["Avg Metric"] == pytest.approx((12 / 21 + 1 - 0.95 / 3) / 2)
    assert out["Forget Quality"] == pytest.approx(1.0)
