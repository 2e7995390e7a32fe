"""Forget-data labels with --mask and --no-mask, as the original's convert_raw_forget_data_to_model_format."""
from __future__ import annotations

import torch
from transformers import AutoTokenizer

from LLM.data import IGNORE_INDEX, UnlearnDataset, collate_unlearn, encode_qa, index_draws
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


def test_kl_kinds_are_padded_to_max_length_as_the_original(tiny_model):
    """``full_length`` kinds have the original's layout (``dataset/data_module.py:39-57``): the answer's
    labels and one end-of-sequence label, then end-of-sequence tokens up to ``max_length`` with attention 0
    and labels ignored; the other kinds stop at the batch's longest row."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    eos, length = tokenizer.eos_token_id, 40
    rows = [{"question": "Who?", "answer": "Bob"}, {"question": "Where is it?", "answer": "Here"}]
    dataset = UnlearnDataset(rows, tokenizer, TEMPLATE, length, kinds=("forget", "retain"), retain_rows=rows,
                             full_length=("retain",))
    batch = collate_unlearn([dataset[0], dataset[1]], tokenizer.pad_token_id)
    assert batch["retain"]["input_ids"].shape == (2, length) and batch["forget"]["input_ids"].shape[1] < length
    for row in range(2):
        paired = rows[(row + index_draws(row, 2)[0]) % 2]
        ids = tokenizer(f"Question: {paired['question']}\nAnswer: {paired['answer']}",
                        add_special_tokens=True)["input_ids"]
        prompt = len(tokenizer(f"Question: {paired['question']}\n", add_special_tokens=True)["input_ids"])
        padding = length - len(ids)
        assert batch["retain"]["input_ids"][row].tolist() == ids + [eos] * padding
        assert batch["retain"]["labels"][row].tolist() == \
            [IGNORE_INDEX] * prompt + ids[prompt:] + [eos] + [IGNORE_INDEX] * (padding - 1)
        assert batch["retain"]["attention_mask"][row].tolist() == [1] * len(ids) + [0] * padding


def test_refusal_and_retain_pairing_draws_are_the_originals(tiny_model):
    """Reference values: the original's ``TextForgetDatasetQA`` (joint: ``torch.manual_seed(idx)``, a retain
    offset, then a refusal, ``dataset/data_module.py:142-146``) and ``TextForgetDatasetQASingle`` (a refusal
    alone, ``:220-221``), run on 12 forget rows, 15 retain rows and 5 (then 100) refusal lines."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    forget = [{"question": f"fq{i}", "answer": f"fa{i}"} for i in range(12)]
    retain = [{"question": f"rq{i}", "answer": f"ra{i}"} for i in range(15)]
    idk = [f"idk{j}" for j in range(5)]
    expected_joint = [(14, 4), (11, 4), (5, 2), (4, 3), (14, 4), (1, 4), (11, 1), (7, 2), (11, 3), (4, 3), (12, 0),
                      (2, 4)]
    expected_single = [4, 0, 3, 1, 0, 1, 0, 0, 3, 0, 2, 1]

    def encoded(question, answer):
        return encode_qa(tokenizer, TEMPLATE, question, answer, 64)["input_ids"].tolist()

    joint = UnlearnDataset(forget, tokenizer, TEMPLATE, 64, kinds=("retain", "forget_idk", "forget_mismatch"),
                           retain_rows=retain, idk_answers=idk)
    single = UnlearnDataset(retain, tokenizer, TEMPLATE, 64, kinds=("retain_idk",), idk_answers=idk)
    for index, ((retain_row, refusal), alone) in enumerate(zip(expected_joint, expected_single)):
        item = joint[index]
        assert item["retain"]["input_ids"].tolist() == encoded(f"rq{retain_row}", f"ra{retain_row}")
        assert item["forget_idk"]["input_ids"].tolist() == encoded(f"fq{index}", f"idk{refusal}")
        assert item["forget_mismatch"]["input_ids"].tolist() == encoded(f"fq{index}", f"ra{retain_row}")
        assert single[index]["retain_idk"]["input_ids"].tolist() == encoded(f"rq{index}", f"idk{alone}")
    assert [index_draws(index, 100)[0] for index in range(12)] == [44, 45, 48, 86, 30, 11, 30, 15, 23, 70, 37, 41]
    from LLM.eval_logs import idk_answer  # the evaluation scores each row against the refusal it was trained on
    assert [idk_answer(idk, index) for index in range(12)] == [f"idk{k}" for k in expected_single]
    state = torch.get_rng_state()
    index_draws(3, 100)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
