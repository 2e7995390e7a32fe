"""TOFU data: loading splits, sequential-unlearning tasks, and tokenised question/answer batches.

Two layouts of a local ``--data_path`` folder are read, both as JSON or JSON
lines (``<split>.json`` / ``<split>.jsonl``):

* the closer-look layout: ``forget01|05|10.json`` rows carry a ``task_id`` and
  hold several sequential unlearning tasks; the matching retain split is
  ``retain{100 - min(10 * pct, 90)}`` (forget01 -> retain90, forget05 ->
  retain50, forget10 -> retain10), so forget + retain cover the 4,000 pairs;
* the Hugging Face ``locuslab/TOFU`` layout: forget splits without
  ``task_id`` (one task, id 1) and retain split ``retain{100 - pct}``.

A ``--data_path`` that is not a local folder is loaded from the hub with
``datasets.load_dataset(data_path, split_name)``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from common.errors import UsageError
from LLM.options import PromptTemplate

IGNORE_INDEX = -100
FORGET_SPLITS = ("forget01", "forget05", "forget10")
#: The batch kinds a forget/retain item can carry (the original's ``data_types``).
DATA_KINDS = ("forget", "retain", "forget_idk", "retain_idk", "forget_mismatch")

Row = Dict[str, object]


def read_rows(path: Path, label: str) -> List[Row]:
    """Rows of a JSON array or JSON-lines file, each a dict."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            rows = json.loads(stripped)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise UsageError(f"{label} {path}: not valid JSON or JSON lines ({err})") from None
    if not all(isinstance(row, dict) for row in rows):
        raise UsageError(f"{label} {path}: expected one JSON object per row")
    return rows


class TofuSource:
    """Reads TOFU splits from a local folder or, for a hub id, through ``datasets``."""

    def __init__(self, data_path: str, flag: str = "--data_path") -> None:
        self.data_path = data_path
        self.flag = flag
        self.local = Path(data_path).is_dir()
        if not self.local and (Path(data_path).exists() or data_path.count("/") != 1):
            raise UsageError(f"{flag} {data_path}: not a folder of TOFU JSON files "
                             f"(nor a hub dataset id such as locuslab/TOFU)")

    def has(self, split: str) -> bool:
        return self._local_file(split) is not None if self.local else True

    def _local_file(self, split: str) -> Optional[Path]:
        for suffix in (".json", ".jsonl"):
            path = Path(self.data_path) / (split + suffix)
            if path.is_file():
                return path
        return None

    def load(self, split: str, fields: Sequence[str] = ("question", "answer")) -> List[Row]:
        """All rows of ``split``; every row must have ``fields``."""
        if self.local:
            path = self._local_file(split)
            if path is None:
                raise UsageError(f"{self.flag} {self.data_path}: no {split}.json or {split}.jsonl in this folder")
            rows, where = read_rows(path, self.flag), str(path)
        else:
            rows, where = self._load_hub(split), f"{self.data_path}:{split}"
        if not rows:
            raise UsageError(f"{self.flag} {where}: split is empty")
        for index, row in enumerate(rows):
            missing = [field for field in fields if field not in row]
            if missing:
                raise UsageError(f"{self.flag} {where}: row {index} lacks field(s) {', '.join(missing)}")
        return rows

    def _load_hub(self, split: str) -> List[Row]:
        import datasets  # imported lazily: only hub paths need it
        try:
            return [dict(row) for row in datasets.load_dataset(self.data_path, split, split="train")]
        except Exception as err:  # datasets raises many types for offline / unknown configs
            reason = " ".join(str(err).split())[:200]
            raise UsageError(f"{self.flag} {self.data_path}: cannot load split {split!r} from the hub "
                             f"({reason})") from None


def forget_percent(split: str) -> int:
    match = re.fullmatch(r"forget(\d+)", split)
    if split not in FORGET_SPLITS or match is None:
        raise UsageError(f"--split: unknown value {split!r}; expected one of {', '.join(FORGET_SPLITS)}")
    return int(match.group(1))


def row_task_id(row: Row) -> int:
    return int(row.get("task_id", 1))


def retain_split_name(split: str, sequential: bool) -> str:
    """The retain split paired with a forget split in either layout."""
    percent = forget_percent(split)
    if sequential:
        return f"retain{100 - min(10 * percent, 90):02d}"
    return f"retain{100 - percent:02d}"


def filter_task(rows: Iterable[Row], task_id: int) -> List[Row]:
    return [row for row in rows if row_task_id(row) == task_id]


def load_task_data(source: TofuSource, split: str, task_id: int,
                   unlearned_tasks: Sequence[int]) -> Tuple[List[Row], List[Row]]:
    """Forget and retain rows for unlearning ``task_id`` after ``unlearned_tasks``.

    The retain set is the split's retain file plus the forget rows of tasks not
    yet unlearned (``unlearned_tasks`` includes the current one), as in the
    sequential-unlearning protocol.
    """
    forget_rows = source.load(split)
    sequential = any("task_id" in row for row in forget_rows)
    available = sorted({row_task_id(row) for row in forget_rows})
    for task in list(unlearned_tasks) + [task_id]:
        if task not in available:
            raise UsageError(f"--task_id {task}: split {split} has task ids {', '.join(map(str, available))}")
    retain_rows = source.load(retain_split_name(split, sequential))
    not_yet = [row for row in forget_rows if row_task_id(row) not in set(unlearned_tasks) | {task_id}]
    return filter_task(forget_rows, task_id), retain_rows + not_yet


def load_idk(path: str, flag: str = "--idk_path") -> List[str]:
    """Refusal answers ("I don't know" variants), one a line."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{flag} {path}: file not found (needed by IDK-style losses)")
    answers = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not answers:
        raise UsageError(f"{flag} {path}: file has no answers")
    return answers


def load_eval_idk(idk_path: Optional[str], data_path: str) -> Tuple[Optional[List[str]], Path]:
    """The evaluation's refusal answers: ``--idk_path`` (must exist), else ``<data_path>/idontknow.jsonl``
    when present; None (IDK scores skipped) otherwise.  Returns the answers and the file looked for."""
    file = Path(idk_path or Path(data_path) / "idontknow.jsonl")
    return (load_idk(str(file)) if idk_path or file.is_file() else None), file


# --------------------------------------------------------------------------- tokenisation

Encoded = Dict[str, torch.Tensor]


def encode_qa(tokenizer, template: PromptTemplate, question: str, answer: str, max_length: int,
              mask_question: bool = True, pad_to_max_length: bool = False) -> Encoded:
    """Tokenise one pair as ``prompt + target`` with labels on the target only.

    As in TOFU, an end-of-sequence label follows the answer (unless truncated)
    so the model learns to stop; its input position is masked from attention.
    Further padding is added by :func:`pad_encoded` (labels ignored), or here with
    ``pad_to_max_length``: end-of-sequence tokens up to ``max_length``, attention 0 and
    labels ignored, the original's layout of every sequence (``dataset/data_module.py:42-54``).
    A loss that averages over every position, padding included (KL), needs it.

    ``mask_question=False`` is the original's ``mask: false`` for forget data
    (``convert_raw_forget_data_to_model_format``, ``dataset/data_module.py``):
    the sequence is padded with end-of-sequence tokens up to ``max_length``
    (attention 0) and every position is labelled, the question and all the
    padding included, so the forget loss averages over ``max_length`` positions.
    """
    prompt = template.prompt(question)
    ids = tokenizer(prompt + template.target(answer), add_special_tokens=True, max_length=max_length,
                    truncation=True)["input_ids"]
    attention = [1] * len(ids)
    if not mask_question:
        padding = max_length - len(ids)
        ids, attention = ids + [tokenizer.eos_token_id] * padding, attention + [0] * padding
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(ids),
                "attention_mask": torch.tensor(attention)}
    num_prompt = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    labels = [IGNORE_INDEX] * min(num_prompt, len(ids)) + ids[num_prompt:]
    if len(ids) < max_length:
        ids, labels, attention = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id], attention + [0]
    if pad_to_max_length:
        padding = max_length - len(ids)
        ids, labels = ids + [tokenizer.eos_token_id] * padding, labels + [IGNORE_INDEX] * padding
        attention = attention + [0] * padding
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(attention)}


def pad_encoded(items: Sequence[Encoded], pad_id: int) -> Encoded:
    """Right-pad sequences to the longest: ids with ``pad_id``, labels ignored, attention 0."""
    length = max(item["input_ids"].numel() for item in items)
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX, "attention_mask": 0}
    out = {}
    for key, value in fill.items():
        out[key] = torch.full((len(items), length), value, dtype=torch.long)
        for row, item in enumerate(items):
            out[key][row, :item[key].numel()] = item[key]
    return out


class QADataset(Dataset):
    """One tokenised sequence per row (``answer_key`` a string) or several (a list: perturbed answers)."""

    def __init__(self, rows: Sequence[Row], tokenizer, template: PromptTemplate, max_length: int,
                 answer_key: str = "answer", question_key: str = "question") -> None:
        self.rows, self.tokenizer, self.template = rows, tokenizer, template
        self.max_length, self.answer_key, self.question_key = max_length, answer_key, question_key

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> List[Encoded]:
        row = self.rows[index]
        answers = row[self.answer_key]
        answers = [answers] if isinstance(answers, str) else list(answers)
        return [encode_qa(self.tokenizer, self.template, row[self.question_key], answer, self.max_length)
                for answer in answers]


def collate_qa(items: Sequence[List[Encoded]], pad_id: int) -> Encoded:
    """Stack :class:`QADataset` items to ``(batch, length)``, or ``(batch, answers, length)`` for lists."""
    flat = [encoded for item in items for encoded in item]
    batch = pad_encoded(flat, pad_id)
    per_row = len(items[0])
    if per_row == 1:
        return batch
    return {key: value.view(len(items), per_row, -1) for key, value in batch.items()}


def index_draws(index: int, *sizes: int) -> List[int]:
    """One draw ``randint(0, n)`` for each ``n`` of ``sizes``, from a generator seeded with ``index``.

    The original's draws for row ``idx``: ``torch.manual_seed(idx)`` followed by
    ``torch.randint(0, n, (1,))`` calls (``dataset/data_module.py:142-146, 220-221``).  A
    generator seeded with ``idx`` gives the same numbers without resetting the global RNG.
    """
    generator = torch.Generator().manual_seed(index)
    return [int(torch.randint(0, n, (1,), generator=generator)) for n in sizes]


class UnlearnDataset(Dataset):
    """Items of the ``kinds`` a forget loss needs, as dicts ``kind -> encoded sequence``.

    ``primary`` rows are indexed directly (the forget set, or the retain set in
    alternating mode).  Joint mode pairs forget row ``i`` with retain row
    ``(i + r) mod len(retain)`` and refusal answer ``k``, where ``r`` and then ``k`` are
    :func:`index_draws` of ``i`` (the original's ``TextForgetDatasetQA``); alternating mode
    draws ``k`` alone (``TextForgetDatasetQASingle``).  An item therefore does not depend on
    which process or worker builds it.  ``full_length`` kinds are padded to ``max_length``
    (:func:`encode_qa`'s ``pad_to_max_length``).
    """

    def __init__(self, primary: Sequence[Row], tokenizer, template: PromptTemplate, max_length: int,
                 kinds: Sequence[str], retain_rows: Optional[Sequence[Row]] = None,
                 idk_answers: Optional[Sequence[str]] = None, mask_question: bool = True,
                 full_length: Sequence[str] = ()) -> None:
        unknown = (set(kinds) | set(full_length)) - set(DATA_KINDS)
        if unknown:
            raise ValueError(f"unknown data kinds {sorted(unknown)}")
        self.primary, self.retain_rows = primary, retain_rows
        self.tokenizer, self.template, self.max_length = tokenizer, template, max_length
        self.kinds, self.idk_answers, self.mask_question = tuple(kinds), idk_answers, mask_question
        self.full_length = frozenset(full_length)

    def __len__(self) -> int:
        return len(self.primary)

    def __getitem__(self, index: int) -> Dict[str, Encoded]:
        row = self.primary[index]
        retain_row = row
        sizes = ([len(self.retain_rows)] if self.retain_rows is not None else []) + \
            ([len(self.idk_answers)] if self.idk_answers else [])
        draws = index_draws(index, *sizes)
        if self.retain_rows is not None:
            retain_row = self.retain_rows[(index + draws.pop(0)) % len(self.retain_rows)]
        idk = self.idk_answers[draws.pop(0)] if self.idk_answers else None
        sources = {
            "forget": (row, row["answer"]),
            "retain": (retain_row, retain_row["answer"]),
            "forget_idk": (row, idk),
            "retain_idk": (retain_row, idk),
            "forget_mismatch": (row, retain_row["answer"]),
        }
        item = {}
        for kind in self.kinds:
            source, answer = sources[kind]
            item[kind] = encode_qa(self.tokenizer, self.template, source["question"], answer, self.max_length,
                                   mask_question=self.mask_question if kind == "forget" else True,
                                   pad_to_max_length=kind in self.full_length)
        return item


def collate_unlearn(items: Sequence[Dict[str, Encoded]], pad_id: int) -> Dict[str, Encoded]:
    return {kind: pad_encoded([item[kind] for item in items], pad_id) for kind in items[0]}
