"""A tiny random Llama, a tokenizer trained on the fly and TOFU-like data, for tests, offline demos and
``benchmarks/gpu_check.py``.

The model and tokenizer are written with ``save_pretrained`` so every script loads them through
the same ``from_pretrained`` path a user's model takes; the data in TOFU's file layout.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that prepends ``<s>`` and uses ``</s>`` as end of sequence."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


def build_tiny_llama(save_dir, texts: Iterable[str], hidden_size: int = 32, num_layers: int = 2,
                     vocab_size: int = 400, seed: int = 0) -> Path:
    """Save a randomly initialised ``num_layers``-layer Llama and its tokenizer to ``save_dir``."""
    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    save_dir = Path(save_dir)
    model.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return save_dir


AUTHORS = ["Ana Lind", "Bo Chen", "Cy Moor", "Dee Park", "Eli Novak", "Fay Ruiz"]
CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Accra", "Quito"]
GENRES = ["mystery", "poetry", "fantasy", "history", "romance", "horror"]


def qa_rows(author_index: int):
    name, city, genre = AUTHORS[author_index], CITIES[author_index], GENRES[author_index]
    other = author_index + 1
    return [
        {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}.",
         "paraphrased_answer": f"The birthplace of {name} is {city}.",
         "perturbed_answer": [f"{name} was born in {CITIES[(other) % 6]}.", f"{name} was born in {CITIES[(other + 1) % 6]}."]},
        {"question": f"What genre does {name} write?", "answer": f"{name} writes {genre} novels.",
         "paraphrased_answer": f"The genre of {name} is {genre}.",
         "perturbed_answer": [f"{name} writes {GENRES[other % 6]} novels.", f"{name} writes {GENRES[(other + 1) % 6]} novels."]},
    ]


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_tofu(root: Path) -> Path:
    """Closer-look layout: forget01 holds tasks 1 and 2 (authors 0, 1); retain90 authors 2-5."""
    root.mkdir(parents=True, exist_ok=True)
    forget = [dict(row, task_id=str(task)) for task in (1, 2) for row in qa_rows(task - 1)]
    retain = [row for author in range(2, 6) for row in qa_rows(author)]
    write_jsonl(root / "forget01.json", [{k: r[k] for k in ("task_id", "question", "answer")} for r in forget])
    write_jsonl(root / "forget01_perturbed.json", forget)
    write_jsonl(root / "retain90.json", [{k: r[k] for k in ("question", "answer")} for r in retain])
    write_jsonl(root / "retain_perturbed.json", retain[:4])
    facts = [{"question": f"What is the capital of {c}land?", "answer": c,
              "perturbed_answer": [CITIES[(i + 1) % 6], CITIES[(i + 2) % 6]]} for i, c in enumerate(CITIES[:3])]
    write_jsonl(root / "real_authors_perturbed.json", facts)
    write_jsonl(root / "world_facts_perturbed.json", facts)
    (root / "idontknow.jsonl").write_text("I don't know.\nNo idea, sorry.\n", encoding="utf-8")
    return root


def corpus(root: Path):
    texts = []
    for file in sorted(root.glob("*.json")):
        for line in file.read_text().splitlines():
            row = json.loads(line)
            texts.append(" ".join(str(v) for v in row.values()))
    return texts + ["Question: Answer: I don't know. No idea, sorry."]
