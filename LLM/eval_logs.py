"""Per-question evaluation logs of a model (the original's ``eval_log*.json``): answer losses,
perturbed losses, greedy generations and their scores (ROUGE, token entropy, and with the
:mod:`LLM.judges` cosine similarity and entailment labels; on the forget set also the IDK scores).

(The statistics over these logs are :mod:`LLM.metrics`; the entry script is ``LLM/eval.py``.)
Rows are split across processes (row ``i`` on process ``i % world``) and the
results gathered back in row order, so ``accelerate launch`` gives the same
numbers as one process.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from common.errors import UsageError
from common.io import atomic_write_json, atomic_write_text, read_json
from LLM.data import QADataset, collate_qa, index_draws
from LLM.judges import Judges
from LLM.losses import sequence_nll
from LLM.metrics import rouge_recall, token_entropy
from LLM.options import PromptTemplate

#: (split file, output file, paraphrased/base answer key, judges' reference key) of the four evaluation sets.
#: The real-authors / world-facts judges compare with ``original_answer`` (the full-sentence answer of the
#: original's data), or ``answer`` where a set has none (the Hugging Face locuslab/TOFU files).
EVAL_SETS = (
    ("retain_perturbed", "eval_log.json", "paraphrased_answer", "answer"),
    ("real_authors_perturbed", "eval_real_author_wo_options.json", "answer", "original_answer"),
    ("world_facts_perturbed", "eval_real_world_wo_options.json", "answer", "original_answer"),
    ("{split}_perturbed", "eval_log_forget.json", "paraphrased_answer", "answer"),
)


@torch.no_grad()
def average_answer_losses(model, tokenizer, template: PromptTemplate, rows: Sequence[dict], answer_key: str,
                          batch_size: int, max_length: int, device) -> List:
    """Mean token NLL of each row's answer(s): a float per row, or a list for a list of answers."""
    dataset = QADataset(rows, tokenizer, template, max_length, answer_key=answer_key)
    collate = partial(collate_qa, pad_id=tokenizer.pad_token_id)
    losses: List = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        shape = batch["input_ids"].shape
        flat = {key: value.reshape(-1, shape[-1]).to(device) for key, value in batch.items()}
        logits = model(input_ids=flat["input_ids"], attention_mask=flat["attention_mask"]).logits
        counts = (flat["labels"][:, 1:] != -100).sum(-1).clamp(min=1)
        mean = (sequence_nll(logits, flat["labels"]) / counts).cpu()
        if len(shape) == 3:
            losses.extend(mean.view(shape[0], shape[1]).tolist())
        else:
            losses.extend(mean.tolist())
    return losses


@torch.no_grad()
def greedy_generate(model, tokenizer, template: PromptTemplate, questions: Sequence[str], batch_size: int,
                    max_length: int, max_new_tokens=None) -> List[str]:
    """Greedy answers to ``questions`` (left-padded batches, prompt stripped from the output)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: List[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [template.prompt(q) for q in questions[start:start + batch_size]]
            inputs = tokenizer(prompts, add_special_tokens=True, return_tensors="pt", padding=True).to(model.device)
            limits = {"max_new_tokens": max_new_tokens} if max_new_tokens else {"max_length": max_length}
            generated = model.generate(**inputs, do_sample=False, use_cache=True,
                                       pad_token_id=tokenizer.pad_token_id, **limits)
            outputs.extend(tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                                  skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outputs


@dataclass(frozen=True)
class SetSpec:
    """How one evaluation set is scored.

    ``base_answer_key``: the paraphrased (truth-ratio) answer; ``reference_key``: what the judges compare a
    generation with (``answer`` where a row lacks it); ``generation_premise``: the NLI pair is
    (generation, reference) -- the original's order on TOFU's forget set and on every real-world set --
    else (reference, generation); ``idk``: refusal answers to score the generations against (the forget set).
    """

    base_answer_key: str = "paraphrased_answer"
    reference_key: str = "answer"
    generation_premise: bool = False
    idk: Optional[Sequence[str]] = None


def idk_answer(answers: Sequence[str], index: int) -> str:
    """The refusal answer of row ``index``: the unlearning data's draw for that row (:func:`~LLM.data.index_draws`)."""
    return answers[index_draws(index, len(answers))[0]]


def judge_rows(judges: Optional[Judges], spec: SetSpec, rows: Sequence[dict], idk: Optional[Sequence[str]],
               generations: Sequence[str], rouge: Dict[str, List[float]]) -> Dict[str, list]:
    """The judges' per-row scores: ``cosine_similarity``, ``entailment_labels`` and, with the rows'
    refusal answers ``idk``, ``idk_rouge1_recall``/``idk_rougeL_recall``/``idk_entailment_labels``
    (as the original's eval logs)."""
    references = [row.get(spec.reference_key, row["answer"]) for row in rows]
    out: Dict[str, list] = {}
    nli = judges.nli if judges else None
    if judges and judges.embedder:
        out["cosine_similarity"] = judges.embedder.cosine_similarities(generations, references)
    if nli:
        pairs = (generations, references) if spec.generation_premise else (references, generations)
        out["entailment_labels"] = nli.entailment_labels(*pairs, rouge["rougeL_recall"])
    if idk:
        idk_rouge = rouge_recall(generations, idk)
        out["idk_rouge1_recall"], out["idk_rougeL_recall"] = idk_rouge["rouge1_recall"], idk_rouge["rougeL_recall"]
        if nli:
            out["idk_entailment_labels"] = nli.entailment_labels(generations, idk, idk_rouge["rougeL_recall"])
    return out


def evaluate_rows(model, tokenizer, template: PromptTemplate, rows: Sequence[dict], spec: SetSpec,
                  batch_size: int, max_length: int, max_new_tokens, device, judges: Optional[Judges] = None,
                  indices: Optional[Sequence[int]] = None) -> List[Dict]:
    """One record of statistics per row (the caller gathers and orders them); ``indices``: the rows'
    positions in the whole set (they pick the IDK answers)."""
    if not rows:
        return []
    indices = list(range(len(rows))) if indices is None else list(indices)
    gt = average_answer_losses(model, tokenizer, template, rows, "answer", batch_size, max_length, device)
    base = average_answer_losses(model, tokenizer, template, rows, spec.base_answer_key, batch_size, max_length,
                                 device)
    perturbed = average_answer_losses(model, tokenizer, template, rows, "perturbed_answer", batch_size,
                                      max_length, device)
    generations = greedy_generate(model, tokenizer, template, [row["question"] for row in rows], batch_size,
                                  max_length, max_new_tokens)
    rouge = rouge_recall(generations, [row["answer"] for row in rows])
    idk = [idk_answer(spec.idk, index) for index in indices] if spec.idk else None
    judged = judge_rows(judges, spec, rows, idk, generations, rouge)
    if idk:
        idk_rows = [{"question": row["question"], "answer": answer} for row, answer in zip(rows, idk)]
        judged["avg_idk_loss"] = average_answer_losses(model, tokenizer, template, idk_rows, "answer", batch_size,
                                                       max_length, device)
    records = []
    for i, row in enumerate(rows):
        record = {
            "avg_gt_loss": gt[i], "avg_paraphrased_loss": base[i],
            "average_perturb_loss": perturbed[i] if isinstance(perturbed[i], list) else [perturbed[i]],
            "rouge1_recall": rouge["rouge1_recall"][i], "rougeL_recall": rouge["rougeL_recall"][i],
            "token_entropy": token_entropy(tokenizer.tokenize(generations[i])),
            "generated_text": [template.prompt(row["question"]), generations[i], row["answer"]],
        }
        record.update({key: values[i] for key, values in judged.items()})
        records.append(record)
    return records


def evaluate_set(accelerator, model, tokenizer, template, rows, spec: SetSpec, batch_size, max_length,
                 max_new_tokens, desc: str, judges: Optional[Judges] = None) -> Dict[str, list]:
    """Statistics of every row, computed on this process's share and gathered in row order."""
    from accelerate.utils import gather_object
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(rows), world))
    if accelerator.is_main_process:
        tqdm.write(f"evaluating {desc}: {len(rows)} rows")
    records = evaluate_rows(model, tokenizer, template, [rows[i] for i in mine], spec, batch_size,
                            max_length, max_new_tokens, accelerator.device, judges, indices=mine)
    indexed = list(zip(mine, records))
    if world > 1:
        indexed = gather_object(indexed)
    ordered = [record for _, record in sorted(indexed, key=lambda pair: pair[0])]
    return {key: [record[key] for record in ordered] for key in ordered[0]} if ordered else {}


def unlearn_checkpoint(run_dir, step: str, model_path: str, flag: str) -> str:
    """The model ``--eval_unlearn_step`` names in an unlearning run's folder ``run_dir``.

    ``last``: ``checkpoint-last``; ``0``: ``model_path`` (the model before unlearning); ``N``:
    ``checkpoint-N`` (saved with ``--save_steps``), or ``checkpoint-last`` when N is the run's last step.
    """
    if step != "last" and not step.isdigit():
        raise UsageError(f"--eval_unlearn_step {step!r}: expected last, 0 or a step number")
    if step == "0":
        return model_path
    path = Path(run_dir) / f"checkpoint-{step}"
    record = Path(run_dir) / "run.json"
    if not path.is_dir() and step.isdigit() and record.is_file():
        if read_json(record, flag).get("metrics", {}).get("max_steps") == int(step):
            path = Path(run_dir) / "checkpoint-last"
    if not path.is_dir():
        raise UsageError(f"{flag} {run_dir}: no checkpoint-{step} (unlearn first; intermediate checkpoints "
                         f"need --save_steps)")
    return str(path)


def save_eval_outputs(save_dir, results: Dict[str, Dict[str, list]], summary: Dict[str, object]) -> None:
    """Per-set statistics (``<eval file>``), ``aggregate_stat.json`` and ``aggregate_stat.txt`` in ``save_dir``."""
    save_dir = Path(save_dir)
    for file, stats in results.items():
        atomic_write_json(stats, save_dir / file)
    atomic_write_json(summary, save_dir / "aggregate_stat.json")
    atomic_write_text("".join(f"{key}: {value}\n" for key, value in summary.items()),
                      save_dir / "aggregate_stat.txt")
