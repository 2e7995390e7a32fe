"""Cosine similarity and entailment with tiny BERT judges built and saved here, and eval.py with and
without them."""
from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

from common.errors import UsageError
from LLM import eval as eval_script
from LLM.judges import NliJudge, SentenceEmbedder, load_judges

LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
TEXTS = ["Ana Lind was born in Oslo.", "She writes crime novels.", "I don't know.", "No idea, sorry.",
         "The author lives in Paris and writes poems about the sea."]


def bert_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained with `tokenizers`, in BERT's [CLS] A [SEP] (B [SEP]) layout."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=special,
                                                                   show_progress=False))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def bert_config(tokenizer, **extra) -> BertConfig:
    return BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, **extra)


@pytest.fixture(scope="module")
def judge_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    tokenizer = bert_tokenizer(TEXTS)
    torch.manual_seed(0)
    BertModel(bert_config(tokenizer), add_pooling_layer=False).save_pretrained(root / "embedder")
    tokenizer.save_pretrained(root / "embedder")
    (root / "embedder" / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    nli = BertForSequenceClassification(bert_config(tokenizer, num_labels=3, id2label=LABELS,
                                                    label2id={v: k for k, v in LABELS.items()}))
    with torch.no_grad():  # always "entailment", so the ROUGE rule is what decides the labels below
        nli.classifier.weight.zero_()
        nli.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    nli.save_pretrained(root / "nli")
    tokenizer.save_pretrained(root / "nli")
    return root / "embedder", root / "nli"


def test_cosine_similarity_is_mean_pooled_and_clipped(judge_dirs):
    embedder = SentenceEmbedder.load(str(judge_dirs[0]), "cpu")
    assert embedder.max_seq_length == 8  # from sentence_bert_config.json, as sentence-transformers
    model = BertModel.from_pretrained(judge_dirs[0]).eval()
    pairs = [("Ana Lind was born in Oslo.", "She writes crime novels about Oslo and the sea."),
             ("I don't know.", "I don't know.")]

    def mean_pooled(text):  # one sentence alone: no padding, truncated to 8 tokens
        ids = embedder.tokenizer(text, truncation=True, max_length=8, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).last_hidden_state[0].mean(0)

    scores = embedder.cosine_similarities([a for a, _ in pairs], [b for _, b in pairs])
    for (a, b), score in zip(pairs, scores):
        expected = max(0.0, torch.nn.functional.cosine_similarity(mean_pooled(a), mean_pooled(b), dim=0).item())
        assert score == pytest.approx(expected, abs=1e-5)
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    embedder.embed = lambda texts: torch.tensor([[1.0, 0.0]] * len(texts)) * (1 if texts[0] == "a" else -1)
    assert embedder.cosine_similarities(["a"], ["b"]) == [0.0]  # negative cosine counts as 0


def test_entailment_labels_follow_the_model_and_the_rouge_rule(judge_dirs):
    nli = NliJudge.load(str(judge_dirs[1]), "cpu")
    assert nli.labels(["a b", "c"], ["b", "d e"]) == ["entailment", "entailment"]
    assert nli.entailment_labels(["x", "y", "z"], ["x", "y", "z"], [0.05, 0.1, 1.0]) == \
        ["none", "entailment", "entailment"]


def test_missing_judges_are_named_on_one_line(tmp_path, judge_dirs):
    judges = load_judges(str(judge_dirs[0]), "nobody/not-cached-nli", "cpu")
    assert judges.embedder is not None and judges.nli is None
    assert judges.skipped.startswith("skipped Entailment Score, Forget IDK Entailment Score, Targeted Forget "
                                     "Efficacy, Model Utility,")
    assert "--nli_model nobody/not-cached-nli" in judges.skipped and "huggingface-cli download" in judges.skipped
    assert "\n" not in judges.skipped
    assert load_judges(*map(str, judge_dirs), "cpu").skipped is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.raises(UsageError, match="--nli_model .*broken: cannot load the model"):
        load_judges(str(judge_dirs[0]), str(broken), "cpu")


def test_eval_reports_the_originals_metrics_with_judges(tmp_path, tofu_dir, tiny_model, judge_dirs, capsys):
    summary = eval_script.main(["--model_path", str(tiny_model), "--data_path", str(tofu_dir), "--split",
                                "forget01", "--max_new_tokens", "4", "--save_dir", str(tmp_path / "eval"),
                                "--embedding_model", str(judge_dirs[0]), "--nli_model", str(judge_dirs[1]),
                                "--device", "cpu"])
    forget = json.loads((tmp_path / "eval" / "eval_log_forget.json").read_text())
    assert len(forget["cosine_similarity"]) == len(forget["idk_entailment_labels"]) == 2
    for name in ("Model Utility", "Model Utility Retain", "Untargeted Forget Efficacy", "Targeted Forget Efficacy",
                 "Avg Metric", "TOFU Model Utility", "Real World Cosine Similarity", "Forget IDK Entailment Score"):
        assert name in summary, name
    forget_terms = [summary[f"Forget {m}"] for m in ("ROUGE", "Probability", "Truth Ratio", "Cosine Similarity",
                                                     "Entailment Score")]
    assert summary["Untargeted Forget Efficacy"] == pytest.approx(1 - sum(forget_terms) / 5)
    out = capsys.readouterr().out
    assert "skipped" not in out and "Untargeted Forget Efficacy" in out
