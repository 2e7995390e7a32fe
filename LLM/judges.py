"""The evaluation's model-based judges: cosine similarity of sentence embeddings and NLI entailment.

The original scores generations with two extra models (``metrics/metrics.py``):

* **Cosine Similarity** -- ``SentenceTransformer("paraphrase-MiniLM-L6-v2")``:
  ``max(0, cos(e(generation), e(reference)))`` per question, where ``e`` is the
  mean of the last hidden states over the attended tokens (the model's pooling;
  no normalisation layer), input truncated to the model's ``max_seq_length``;
* **Entailment Score** -- ``pipeline("text-classification",
  "sileod/deberta-v3-base-tasksource-nli")`` on (premise, hypothesis) pairs:
  the fraction of questions whose top label is ``entailment``; a question whose
  ROUGE-L recall is below 0.1 counts as ``none`` (not entailed) whatever the model says.

Here both are plain ``transformers`` models (no sentence-transformers
dependency), loaded from a folder or the local Hugging Face cache only
(``local_files_only``): evaluation never downloads.  A judge that is not there
is skipped, and the metrics that need it with it (:func:`load_judges`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from common.errors import UsageError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/paraphrase-MiniLM-L6-v2"
DEFAULT_NLI_MODEL = "sileod/deberta-v3-base-tasksource-nli"
#: Pairs per NLI forward pass, as the original's ``get_entailment_results(bs=30)``.
NLI_BATCH = 30
#: Below this ROUGE-L recall a generation counts as not entailed (the original's rule).
ENTAILMENT_MIN_ROUGE = 0.1
ENTAILMENT = "entailment"
#: Metrics that need each judge (per set, and the summaries built on them).
EMBEDDING_METRICS = ("Cosine Similarity",)
NLI_METRICS = ("Entailment Score", "Forget IDK Entailment Score", "Targeted Forget Efficacy")
SUMMARIES = ("Model Utility", "Model Utility Retain", "Untargeted Forget Efficacy", "Avg Metric")


def add_judge_args(parser) -> None:
    parser.add_argument("--embedding_model", type=str, default=DEFAULT_EMBEDDING_MODEL,
                        help="sentence-embedding model of Cosine Similarity (folder or cached hub id)")
    parser.add_argument("--nli_model", type=str, default=DEFAULT_NLI_MODEL,
                        help="NLI sequence classifier of the Entailment Scores (folder or cached hub id)")


def _load(loader, name: str, flag: str):
    """``loader(name, local_files_only=True)``; None when a hub id is not in the local cache.

    An existing folder that cannot be loaded is bad input, not a missing model.
    """
    try:
        return loader(name, local_files_only=True)
    except Exception as err:  # transformers raises OSError/ValueError/... for absent or broken models
        if Path(name).exists():
            raise UsageError(f"{flag} {name}: cannot load the model ({' '.join(str(err).split())[:200]})") from None
        return None


class SentenceEmbedder:
    """Mean-pooled sentence embeddings of a transformers encoder (sentence-transformers' pooling)."""

    def __init__(self, tokenizer, model, max_seq_length: int, device) -> None:
        self.tokenizer, self.model = tokenizer, model.to(device).eval()
        self.max_seq_length, self.device = max_seq_length, device

    @classmethod
    def load(cls, name: str, device) -> Optional["SentenceEmbedder"]:
        from transformers import AutoModel, AutoTokenizer
        tokenizer = _load(AutoTokenizer.from_pretrained, name, "--embedding_model")
        model = _load(AutoModel.from_pretrained, name, "--embedding_model") if tokenizer is not None else None
        if model is None:
            return None
        return cls(tokenizer, model, _max_seq_length(name, tokenizer), device)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), hidden)`` float32 embeddings: hidden states averaged over attended tokens."""
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                                return_tensors="pt").to(self.device)
        hidden = self.model(**inputs).last_hidden_state.float()
        weights = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def cosine_similarities(self, generations: Sequence[str], references: Sequence[str]) -> List[float]:
        """``max(0, cos)`` of each generation's embedding with its reference's."""
        if not generations:
            return []
        cos = torch.nn.functional.cosine_similarity(self.embed(generations), self.embed(references), dim=-1)
        return cos.clamp(min=0.0).cpu().tolist()


def _max_seq_length(name: str, tokenizer) -> int:
    """sentence-transformers' ``max_seq_length`` (``sentence_bert_config.json``), else the tokenizer's limit."""
    path = Path(name)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download
            path = Path(snapshot_download(name, local_files_only=True))
        except Exception:
            path = None
    config = path / "sentence_bert_config.json" if path is not None else None
    if config is not None and config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", tokenizer.model_max_length))
    return min(int(tokenizer.model_max_length), 512)


class NliJudge:
    """Top label of an NLI sequence classifier for (premise, hypothesis) pairs."""

    def __init__(self, tokenizer, model, device) -> None:
        self.tokenizer, self.model, self.device = tokenizer, model.to(device).eval(), device

    @classmethod
    def load(cls, name: str, device) -> Optional["NliJudge"]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        tokenizer = _load(AutoTokenizer.from_pretrained, name, "--nli_model")
        model = (_load(AutoModelForSequenceClassification.from_pretrained, name, "--nli_model")
                 if tokenizer is not None else None)
        return None if model is None else cls(tokenizer, model, device)

    @torch.no_grad()
    def labels(self, premises: Sequence[str], hypotheses: Sequence[str]) -> List[str]:
        out: List[str] = []
        for start in range(0, len(premises), NLI_BATCH):
            inputs = self.tokenizer(list(premises[start:start + NLI_BATCH]),
                                    list(hypotheses[start:start + NLI_BATCH]), padding=True, truncation=True,
                                    return_tensors="pt").to(self.device)
            top = self.model(**inputs).logits.argmax(-1).tolist()
            out.extend(self.model.config.id2label[index] for index in top)
        return out

    def entailment_labels(self, premises: Sequence[str], hypotheses: Sequence[str],
                          rouge_recalls: Sequence[float]) -> List[str]:
        """Per pair: the top label, or ``none`` where ROUGE-L recall < 0.1 (as the original)."""
        labels = self.labels(premises, hypotheses)
        return [label if rouge >= ENTAILMENT_MIN_ROUGE else "none" for label, rouge in zip(labels, rouge_recalls)]


@dataclass
class Judges:
    embedder: Optional[SentenceEmbedder]
    nli: Optional[NliJudge]
    #: One line naming what was skipped and how to supply the models; None when both are there.
    skipped: Optional[str]


def load_judges(embedding_model: str, nli_model: str, device) -> Judges:
    """Both judges from a folder or the local cache; the ``skipped`` line says what is missing."""
    embedder = SentenceEmbedder.load(embedding_model, device)
    nli = NliJudge.load(nli_model, device)
    missing: List[Tuple[str, str, Sequence[str]]] = []
    if embedder is None:
        missing.append(("--embedding_model", embedding_model, EMBEDDING_METRICS))
    if nli is None:
        missing.append(("--nli_model", nli_model, NLI_METRICS))
    if not missing:
        return Judges(embedder, nli, None)
    metrics = [metric for _, _, names in missing for metric in names] + list(SUMMARIES)
    flags = " / ".join(f"{flag} {name}" for flag, name, _ in missing)
    names = " ".join(name for _, name, _ in missing)
    return Judges(embedder, nli, f"skipped {', '.join(metrics)}: {flags} not found locally; pass a model folder "
                                 f"or cache it once with `huggingface-cli download {names}`")


def report_skipped(judges: Judges, idk_answers, idk_file) -> None:
    """Print, on one line, the metrics a run could not compute and how to supply what they need."""
    skipped = [judges.skipped] if judges.skipped else []
    if idk_answers is None:
        skipped.append(f"skipped the IDK scores (Forget IDK Entailment Score, Targeted Forget Efficacy): "
                       f"no {idk_file} (--idk_path)")
    if skipped:
        print("; ".join(skipped))
