"""TOFU metrics on per-question statistics: ROUGE-L recall, answer probability, truth ratio,
forget quality (KS test against the retain model) and the harmonic-mean summaries.

Per-question statistics (one entry per question of an evaluation set):
``avg_gt_loss`` (mean token NLL of the answer), ``avg_paraphrased_loss`` (of
the paraphrased or reference answer), ``average_perturb_loss`` (one per
perturbed answer) and ``rougeL_recall`` of the greedy generation.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

#: Evaluation files and the names their metrics carry, as the original.
EVAL_TASKS = {
    "eval_log.json": "Retain",
    "eval_real_author_wo_options.json": "Real Authors",
    "eval_real_world_wo_options.json": "Real World",
    "eval_log_forget.json": "Forget",
}
FORGET_FILE = "eval_log_forget.json"


def rouge_recall(generations: Sequence[str], references: Sequence[str]) -> Dict[str, List[float]]:
    """ROUGE-1 and ROUGE-L recall of each generation against its reference (stemmed)."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, generation) for generation, reference in zip(generations, references)]
    return {"rouge1_recall": [s["rouge1"].recall for s in scores],
            "rougeL_recall": [s["rougeL"].recall for s in scores]}


def truth_ratios(avg_paraphrased_loss: Sequence[float], average_perturb_loss: Sequence[Sequence[float]]) -> np.ndarray:
    """``R = exp(mean perturbed loss - paraphrased loss)`` per question.

    ``R > 1`` means the model prefers the (paraphrased) truth over perturbed answers.
    """
    perturbed = np.asarray(average_perturb_loss, dtype=float).reshape(len(avg_paraphrased_loss), -1).mean(-1)
    return np.exp(perturbed - np.asarray(avg_paraphrased_loss, dtype=float))


def truth_ratio_score(ratios: np.ndarray, forget: bool) -> float:
    """Truth-ratio metric: ``mean max(0, 1 - 1/R)`` on utility sets, ``1 - mean min(R, 1/R)`` on the forget set."""
    ratios = np.asarray(ratios, dtype=float)
    if forget:
        return float(1.0 - np.mean(np.minimum(ratios, 1.0 / ratios)))
    return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / ratios)))


def probability_score(stats: Mapping[str, Sequence], normalised: bool) -> float:
    """Answer probability ``exp(-avg_gt_loss)``; normalised against the perturbed answers on
    the real-authors / world-facts sets (``p_true / (p_true + sum p_perturbed)``)."""
    p_true = np.exp(-np.asarray(stats["avg_gt_loss"], dtype=float))
    if not normalised:
        return float(p_true.mean())
    p_false = np.exp(-np.asarray(stats["average_perturb_loss"], dtype=float)).reshape(len(p_true), -1)
    return float(np.mean(p_true / (p_true + p_false.sum(-1))))


def forget_quality(unlearn_ratios: Sequence[float], retain_ratios: Sequence[float]) -> Dict[str, float]:
    """KS test of the unlearned model's forget-set truth ratios against the retain model's."""
    result = ks_2samp(np.asarray(unlearn_ratios, dtype=float), np.asarray(retain_ratios, dtype=float))
    return {"Forget Quality": float(result.pvalue), "KS Test Forget": float(result.statistic)}


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (as ``scipy.stats.hmean``)."""
    values = [float(v) for v in values]
    if any(v == 0.0 for v in values):
        return 0.0
    return float(hmean(values))


def token_entropy(tokens: Sequence[str]) -> float:
    """Unigram entropy of a generation's tokens normalised by ``log2(len)`` (0 for <= 1 token)."""
    if len(tokens) <= 1:
        return 0.0
    counts = np.asarray(list(Counter(tokens).values()), dtype=float)
    freqs = counts / counts.sum()
    return float(-(freqs * np.log2(freqs)).sum() / math.log2(len(tokens)))


def aggregate(eval_results: Mapping[str, Mapping[str, Sequence]],
              retain_forget_result: Optional[Mapping[str, Sequence]] = None) -> Dict[str, float]:
    """Summary metrics from the per-file statistics (keys of :data:`EVAL_TASKS`).

    * ``<Set> ROUGE``, ``<Set> Probability``, ``<Set> Truth Ratio``, ``<Set> Token Entropy``;
    * ``Model Utility``: harmonic mean of ROUGE, Probability and Truth Ratio over
      the retain, real-authors and world-facts sets (TOFU's 9 numbers);
    * ``Model Utility (all)``: harmonic mean over every non-forget metric
      (the closer-look / DualOptim summary, token entropy included);
    * ``Model Utility Retain``: the same over the retain set's metrics only;
    * ``Forget Efficacy``: ``1 - mean`` of the forget set's ROUGE, Probability and Truth Ratio;
    * ``Avg Metric``: ``(Model Utility (all) + Forget Efficacy) / 2``, the paper tables' average;
    * ``Forget Quality`` / ``KS Test Forget`` when the retain model's forget-set
      statistics are given.
    """
    out: Dict[str, float] = {}
    for file, name in EVAL_TASKS.items():
        if file not in eval_results:
            continue
        stats = eval_results[file]
        forget = file == FORGET_FILE
        out[f"{name} ROUGE"] = float(np.mean(stats["rougeL_recall"]))
        out[f"{name} Probability"] = probability_score(stats, normalised=file not in ("eval_log.json", FORGET_FILE))
        ratios = truth_ratios(stats["avg_paraphrased_loss"], stats["average_perturb_loss"])
        out[f"{name} Truth Ratio"] = truth_ratio_score(ratios, forget)
        out[f"{name} Token Entropy"] = float(np.mean(stats["token_entropy"]))
    utility = [out[f"{name} {metric}"] for file, name in EVAL_TASKS.items() if file in eval_results
               and file != FORGET_FILE for metric in ("ROUGE", "Probability", "Truth Ratio")]
    if utility:
        out["Model Utility"] = harmonic_mean(utility)
        out["Model Utility (all)"] = harmonic_mean(
            [value for key, value in out.items() if not key.startswith("Forget") and not key.startswith("Model")])
    if "eval_log.json" in eval_results:
        out["Model Utility Retain"] = harmonic_mean([value for key, value in out.items() if key.startswith("Retain ")])
    if FORGET_FILE in eval_results:
        out["Forget Efficacy"] = 1.0 - float(np.mean([out["Forget ROUGE"], out["Forget Probability"],
                                                      out["Forget Truth Ratio"]]))
        if "Model Utility (all)" in out:
            out["Avg Metric"] = (out["Model Utility (all)"] + out["Forget Efficacy"]) / 2
        if retain_forget_result is not None:
            unlearn = truth_ratios(eval_results[FORGET_FILE]["avg_paraphrased_loss"],
                                   eval_results[FORGET_FILE]["average_perturb_loss"])
            retain = truth_ratios(retain_forget_result["avg_paraphrased_loss"],
                                  retain_forget_result["average_perturb_loss"])
            out.update(forget_quality(unlearn, retain))
    return out


#: Downstream benchmarks of real-world unlearning: name -> (lm-eval task, metric key), as the original reports them.
DOWNSTREAM_METRICS = {
    "ARC-C": ("arc_challenge", "acc_norm,none"),
    "MMLU": ("mmlu", "acc,none"),
    "TruthfulQA(mc1)": ("truthfulqa_mc1", "acc,none"),
    "TriviaQA": ("triviaqa", "exact_match,remove_whitespace"),
    "GSM8k": ("gsm8k", "exact_match,flexible-extract"),
}


def downstream_summary(lm_eval_results: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    """The reported downstream scores from lm-evaluation-harness's ``results`` mapping (tasks run only)."""
    return {name: float(lm_eval_results[task][key]) for name, (task, key) in DOWNSTREAM_METRICS.items()
            if task in lm_eval_results and key in lm_eval_results[task]}
