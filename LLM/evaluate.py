"""Per-question TOFU statistics of a model: answer losses, perturbed losses and greedy generations.

Rows are split across processes (row ``i`` on process ``i % world``) and the
results gathered back in row order, so ``accelerate launch`` gives the same
numbers as one process.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from tqdm.auto import tqdm

from common.io import atomic_write_json, atomic_write_text
from LLM.data import QADataset, collate_qa
from LLM.losses import sequence_nll
from LLM.metrics import rouge_recall, token_entropy
from LLM.options import PromptTemplate

#: (split file, output file, paraphrased/base answer key) of the four evaluation sets.
EVAL_SETS = (
    ("retain_perturbed", "eval_log.json", "paraphrased_answer"),
    ("real_authors_perturbed", "eval_real_author_wo_options.json", "answer"),
    ("world_facts_perturbed", "eval_real_world_wo_options.json", "answer"),
    ("{split}_perturbed", "eval_log_forget.json", "paraphrased_answer"),
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


def evaluate_rows(model, tokenizer, template: PromptTemplate, rows: Sequence[dict], base_answer_key: str,
                  batch_size: int, max_length: int, max_new_tokens, device) -> List[Dict]:
    """One record of statistics per row (the caller gathers and orders them)."""
    if not rows:
        return []
    gt = average_answer_losses(model, tokenizer, template, rows, "answer", batch_size, max_length, device)
    base = average_answer_losses(model, tokenizer, template, rows, base_answer_key, batch_size, max_length, device)
    perturbed = average_answer_losses(model, tokenizer, template, rows, "perturbed_answer", batch_size,
                                      max_length, device)
    generations = greedy_generate(model, tokenizer, template, [row["question"] for row in rows], batch_size,
                                  max_length, max_new_tokens)
    rouge = rouge_recall(generations, [row["answer"] for row in rows])
    records = []
    for i, row in enumerate(rows):
        records.append({
            "avg_gt_loss": gt[i], "avg_paraphrased_loss": base[i],
            "average_perturb_loss": perturbed[i] if isinstance(perturbed[i], list) else [perturbed[i]],
            "rouge1_recall": rouge["rouge1_recall"][i], "rougeL_recall": rouge["rougeL_recall"][i],
            "token_entropy": token_entropy(tokenizer.tokenize(generations[i])),
            "generated_text": [template.prompt(row["question"]), generations[i], row["answer"]],
        })
    return records


def evaluate_set(accelerator, model, tokenizer, template, rows, base_answer_key, batch_size, max_length,
                 max_new_tokens, desc: str) -> Dict[str, list]:
    """Statistics of every row, computed on this process's share and gathered in row order."""
    from accelerate.utils import gather_object
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(rows), world))
    if accelerator.is_main_process:
        tqdm.write(f"evaluating {desc}: {len(rows)} rows")
    records = evaluate_rows(model, tokenizer, template, [rows[i] for i in mine], base_answer_key, batch_size,
                            max_length, max_new_tokens, accelerator.device)
    indexed = list(zip(mine, records))
    if world > 1:
        indexed = gather_object(indexed)
    ordered = [record for _, record in sorted(indexed, key=lambda pair: pair[0])]
    return {key: [record[key] for record in ordered] for key in ordered[0]} if ordered else {}


def save_eval_outputs(save_dir, results: Dict[str, Dict[str, list]], summary: Dict[str, object]) -> None:
    """Per-set statistics (``<eval file>``), ``aggregate_stat.json`` and ``aggregate_stat.txt`` in ``save_dir``."""
    save_dir = Path(save_dir)
    for file, stats in results.items():
        atomic_write_json(stats, save_dir / file)
    atomic_write_json(summary, save_dir / "aggregate_stat.json")
    atomic_write_text("".join(f"{key}: {value}\n" for key, value in summary.items()),
                      save_dir / "aggregate_stat.txt")
