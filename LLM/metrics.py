"""Evaluation statistics over the per-question logs: ROUGE-L recall, answer probability, truth ratio,
token entropy, cosine similarity, entailment, forget quality (KS test against the retain model) and the
summaries (the original's Model Utility and Forget Efficacies, TOFU's model utility).

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


def entailment_score(labels: Sequence[str]) -> float:
    """Fraction of ``entailment`` labels (the original's ``get_entailment_score``)."""
    return float(np.mean([label == "entailment" for label in labels]))


#: Per-set metrics in the original's order; the last two need the judges (:mod:`LLM.judges`).
SET_METRICS = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy", "Cosine Similarity", "Entailment Score")
#: The 18 numbers of the original's Model Utility: every set metric on three sets.
UTILITY_FILES = ("eval_log.json", "eval_real_author_wo_options.json", "eval_real_world_wo_options.json")


def set_metrics(file: str, stats: Mapping[str, Sequence]) -> Dict[str, float]:
    """``<Set> <metric>`` for one evaluation file (judge metrics where its logs have them)."""
    name, forget = EVAL_TASKS[file], file == FORGET_FILE
    out = {f"{name} ROUGE": float(np.mean(stats["rougeL_recall"])),
           f"{name} Probability": probability_score(stats, normalised=file not in ("eval_log.json", FORGET_FILE)),
           f"{name} Truth Ratio": truth_ratio_score(
               truth_ratios(stats["avg_paraphrased_loss"], stats["average_perturb_loss"]), forget),
           f"{name} Token Entropy": float(np.mean(stats["token_entropy"]))}
    if "cosine_similarity" in stats:
        out[f"{name} Cosine Similarity"] = float(np.mean(stats["cosine_similarity"]))
    if "entailment_labels" in stats:
        out[f"{name} Entailment Score"] = entailment_score(stats["entailment_labels"])
    if forget:
        # the original's "IDK Token Entropy" is the token entropy of the generations themselves
        out["Forget IDK Token Entropy"] = out["Forget Token Entropy"]
        if "idk_entailment_labels" in stats:
            out["Forget IDK Entailment Score"] = entailment_score(stats["idk_entailment_labels"])
    return out


def _complete(out: Mapping[str, float], names: Sequence[str]) -> Optional[List[float]]:
    """The values of ``names``, or None when any is missing (a summary over a subset would be another metric)."""
    return [out[name] for name in names] if all(name in out for name in names) else None


def aggregate(eval_results: Mapping[str, Mapping[str, Sequence]],
              retain_forget_result: Optional[Mapping[str, Sequence]] = None) -> Dict[str, float]:
    """Summary metrics from the per-file evaluation logs (keys of :data:`EVAL_TASKS`).

    Per set (``Retain``, ``Real Authors``, ``Real World``, ``Forget``): ``ROUGE``, ``Probability``,
    ``Truth Ratio``, ``Token Entropy``, and with the judges ``Cosine Similarity`` and ``Entailment Score``;
    on the forget set ``Forget IDK Token Entropy`` and ``Forget IDK Entailment Score``.  Summaries, under
    the original's column names where they are the original's quantity:

    * ``TOFU Model Utility``: harmonic mean of ROUGE, Probability and Truth Ratio on the retain,
      real-authors and world-facts sets -- TOFU's 9-number model utility;
    * ``Model Utility``: the original's -- harmonic mean of all six set metrics on those three sets
      (18 numbers; on real-world runs, the 6 of the neighbor set);
    * ``Model Utility Retain``: the harmonic mean of the retain (neighbor) set's six;
    * ``Untargeted Forget Efficacy``: ``1 - mean`` of the forget set's ROUGE, Probability, Truth Ratio,
      Cosine Similarity and Entailment Score (5 terms);
    * ``Targeted Forget Efficacy``: harmonic mean of Forget IDK Token Entropy and Forget IDK Entailment Score;
    * ``Avg Metric``: ``(Model Utility + Untargeted Forget Efficacy) / 2``, the paper tables' average;
    * ``Forget Quality`` / ``KS Test Forget``: TOFU's KS test against the retain model's forget-set
      truth ratios, when those are given.

    A summary is reported only when every term is (the judge metrics need the judge models).
    """
    out: Dict[str, float] = {}
    for file in EVAL_TASKS:
        if file in eval_results:
            out.update(set_metrics(file, eval_results[file]))
    utility_sets = [EVAL_TASKS[file] for file in UTILITY_FILES if file in eval_results]
    tofu = _complete(out, [f"{name} {m}" for name in utility_sets for m in ("ROUGE", "Probability", "Truth Ratio")])
    if tofu:
        out["TOFU Model Utility"] = harmonic_mean(tofu)
    full = _complete(out, [f"{name} {m}" for name in utility_sets for m in SET_METRICS])
    if full:
        out["Model Utility"] = harmonic_mean(full)
    retain = _complete(out, [f"Retain {m}" for m in SET_METRICS])
    if retain:
        out["Model Utility Retain"] = harmonic_mean(retain)
    if FORGET_FILE in eval_results:
        untargeted = _complete(out, [f"Forget {m}" for m in SET_METRICS if m != "Token Entropy"])
        if untargeted:
            out["Untargeted Forget Efficacy"] = 1.0 - float(np.mean(untargeted))
        targeted = _complete(out, ["Forget IDK Token Entropy", "Forget IDK Entailment Score"])
        if targeted:
            out["Targeted Forget Efficacy"] = harmonic_mean(targeted)
        if "Model Utility" in out and "Untargeted Forget Efficacy" in out:
            out["Avg Metric"] = (out["Model Utility"] + out["Untargeted Forget Efficacy"]) / 2
        if retain_forget_result is not None:
            unlearn = truth_ratios(eval_results[FORGET_FILE]["avg_paraphrased_loss"],
                                   eval_results[FORGET_FILE]["average_perturb_loss"])
            retain_ratios = truth_ratios(retain_forget_result["avg_paraphrased_loss"],
                                         retain_forget_result["average_perturb_loss"])
            out.update(forget_quality(unlearn, retain_ratios))
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
