"""Forget-data labels with --mask and --no-mask, as the original's convert_raw_forget_data_to_model_format."""
from __future__ import annotations

import torch
from transformers import AutoTokenizer

from LLM.data import IGNORE_INDEX, UnlearnDataset, collate_unlearn, encode_qa
from LLM.options import PromptTemplate

TEMPLATE = PromptTemplate("Question: ", "\n", "Answer: ")


def test_mask_labels_answer_and_one_eos(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("Question: Who?\nAnswer: Bob", add_special_tokens=True)["input_ids"]
    prompt = len(tokenizer("Question: Who?\n", add_special_tokens=True)["input_ids"])
    item = encode_qa(tokenizer, TEMPLATE, "Who?", "Bob", max_length=32, mask_question=True)
    eos = tokenizer.eos_token_id
    assert item["input_ids"].tolist() == ids + [eos]
    assert item["labels"].tolist() == [IGNORE_INDEX] * prompt + ids[prompt:] + [eos]
    assert item["attention_mask"].tolist() == [1] * len(ids) + [0]


def test_no_mask_labels_question_and_every_padding_position(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("Question: Who?\nAnswer: Bob", add_special_tokens=True)["input_ids"]
    eos, length = tokenizer.eos_token_id, 32
    item = encode_qa(tokenizer, TEMPLATE, "Who?", "Bob", max_length=length, mask_question=False)
    padded = ids + [eos] * (length - len(ids))
    assert item["input_ids"].tolist() == padded
    assert item["labels"].tolist() == padded  # question and padding labelled, padding with EOS
    assert item["attention_mask"].tolist() == [1] * len(ids) + [0] * (length - len(ids))
    truncated = encode_qa(tokenizer, TEMPLATE, "Who?", "Bob", max_length=4, mask_question=False)
    assert truncated["labels"].tolist() == truncated["input_ids"].tolist() == ids[:4]


def test_no_mask_applies_to_forget_kind_only(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"question": "Who?", "answer": "Bob"}, {"question": "Where is it?", "answer": "Here"}]
    dataset = UnlearnDataset(rows, tokenizer, TEMPLATE, 24, kinds=("forget", "retain"), retain_rows=rows,
                             mask_question=False)
    batch = collate_unlearn([dataset[0], dataset[1]], tokenizer.pad_token_id)
    assert batch["forget"]["labels"].shape == (2, 24) and bool((batch["forget"]["labels"] != IGNORE_INDEX).all())
    assert int((batch["retain"]["labels"] == IGNORE_INDEX).sum()) > 0
    assert torch.equal(batch["forget"]["labels"], batch["forget"]["input_ids"])
