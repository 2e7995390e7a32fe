"""Tiny TOFU-like data and a tiny random Llama, built on the fly (no downloads)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from LLM.tiny import build_tiny_llama

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


@pytest.fixture(scope="session")
def tofu_dir(tmp_path_factory) -> Path:
    return make_tofu(tmp_path_factory.mktemp("tofu"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tofu_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), corpus(tofu_dir), hidden_size=32,
                            num_layers=2, vocab_size=300)


def real_world_eval_row(row):
    """A perturbed-set row in the real-world layout, where the ground truth is ``golden_answer``."""
    return {"question": row["question"], "answer": row["answer"], "golden_answer": row["answer"],
            "paraphrased_answer": row["paraphrased_answer"], "perturbed_answer": row["perturbed_answer"]}


@pytest.fixture(scope="session")
def real_world_dir(tmp_path_factory) -> Path:
    """Real-world layout: forget (authors 0-1, 4 rows), neighbor (authors 2-4, 6 rows), their perturbed sets."""
    root = tmp_path_factory.mktemp("real_world")
    forget = qa_rows(0) + qa_rows(1)
    neighbor = qa_rows(2) + qa_rows(3) + qa_rows(4)
    write_jsonl(root / "forget.json", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    write_jsonl(root / "neighbor.json", [{"question": r["question"], "answer": r["answer"]} for r in neighbor])
    write_jsonl(root / "forget_perturbed.json", [real_world_eval_row(r) for r in forget])
    write_jsonl(root / "neighbor_perturbed.json", [real_world_eval_row(r) for r in neighbor[:3]])
    (root / "idontknow.jsonl").write_text("I don't know.\nNo idea, sorry.\n", encoding="utf-8")
    return root


@pytest.fixture
def run_error(capsys):
    """Call a script's ``main(argv)`` expecting a usage error; returns its one-line message."""
    def run(main, argv):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err
    return run
