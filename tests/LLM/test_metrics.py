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


def _stats(rouge, loss, cosine=None, labels=None, idk_labels=None):
    out = {"rougeL_recall": [rouge], "avg_gt_loss": [loss], "avg_paraphrased_loss": [loss],
           "average_perturb_loss": [[loss + math.log(2)]], "token_entropy": [0.5]}
    if cosine is not None:
        out["cosine_similarity"] = [cosine]
    if labels is not None:
        out["entailment_labels"] = labels
    if idk_labels is not None:
        out["idk_entailment_labels"] = idk_labels
    return out


def test_aggregate_without_judges_reports_tofu_utility_only():
    results = {"eval_log.json": _stats(1.0, 0.0), "eval_real_author_wo_options.json": _stats(0.5, 0.0),
               "eval_real_world_wo_options.json": _stats(0.5, 0.0),
               "eval_log_forget.json": _stats(0.2, math.log(4))}
    out = aggregate(results, retain_forget_result=results["eval_log_forget.json"])
    # R = 2 everywhere: utility truth ratio 1/2, forget truth ratio 1 - 1/2.
    assert out["Retain Truth Ratio"] == pytest.approx(0.5) and out["Forget Truth Ratio"] == pytest.approx(0.5)
    assert out["Retain Probability"] == pytest.approx(1.0)
    assert out["Real Authors Probability"] == pytest.approx(1 / 1.5)
    # TOFU's 9 numbers: retain (1, 1, 1/2), real authors / world (1/2, 2/3, 1/2) each
    assert out["TOFU Model Utility"] == pytest.approx(9 / (1 + 1 + 2 + 2 * (2 + 1.5 + 2)))
    assert out["Forget IDK Token Entropy"] == out["Forget Token Entropy"] == 0.5
    assert out["Forget Quality"] == pytest.approx(1.0)
    for name in ("Model Utility", "Model Utility Retain", "Untargeted Forget Efficacy", "Targeted Forget Efficacy",
                 "Avg Metric", "Retain Cosine Similarity"):
        assert name not in out, name


def test_aggregate_the_originals_summaries_with_judges():
    results = {"eval_log.json": _stats(1.0, 0.0, 1.0, ["entailment", "neutral"]),
               "eval_real_author_wo_options.json": _stats(0.5, 0.0, 0.5, ["entailment"]),
               "eval_real_world_wo_options.json": _stats(0.5, 0.0, 0.5, ["none", "entailment"]),
               "eval_log_forget.json": _stats(0.2, math.log(4), 0.4, ["none", "none", "none", "entailment"],
                                              idk_labels=["entailment", "none"])}
    out = aggregate(results)
    assert out["Retain Entailment Score"] == 0.5 and out["Real Authors Entailment Score"] == 1.0
    assert out["Forget Entailment Score"] == 0.25 and out["Forget IDK Entailment Score"] == 0.5
    assert out["Retain Cosine Similarity"] == 1.0
    # retain's six: ROUGE 1, Prob 1, TR 1/2, entropy 1/2, cos 1, entail 1/2 -> 6 / (1 + 1 + 2 + 2 + 1 + 2)
    assert out["Model Utility Retain"] == pytest.approx(6 / 9)
    # real authors: 1/2, 2/3, 1/2, 1/2, 1/2, 1 -> reciprocals 2 + 1.5 + 2 + 2 + 2 + 1 = 10.5;
    # real world: entailment 1/2 -> 11.5
    assert out["Model Utility"] == pytest.approx(18 / (9 + 10.5 + 11.5))
    # forget: ROUGE 0.2, Prob 0.25, TR 0.5, cos 0.4, entail 0.25
    assert out["Untargeted Forget Efficacy"] == pytest.approx(1 - (0.2 + 0.25 + 0.5 + 0.4 + 0.25) / 5)
    assert out["Targeted Forget Efficacy"] == pytest.approx(2 / (1 / 0.5 + 1 / 0.5))
    assert out["Avg Metric"] == pytest.approx((out["Model Utility"] + out["Untargeted Forget Efficacy"]) / 2)
    assert out["TOFU Model Utility"] == pytest.approx(9 / (1 + 1 + 2 + 2 * (2 + 1.5 + 2)))
