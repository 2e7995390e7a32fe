"""Forget losses for LLM unlearning (TOFU), as in "A Closer Look at Machine Unlearning for LLMs".

A ``--forget_loss`` name is ``FORGET`` or ``FORGET+REG``: a forget term
(``GA``, ``NPO``, ``DPO``, ``ME``, ``IDK``) optionally followed by a
regulariser on the retain data (``GD``, ``KL``, ``AP``); ``LLMU`` is gradient
ascent with a mismatch + KL regulariser.  The joint loss is
``forget_coeff * forget + regularization_coeff * regularization``; in
alternating mode the two terms are optimised in separate steps.

The tensor functions at the top take logits and labels only, so each can be
checked against hand-computed values; the term classes below run the models.
Labels follow the Hugging Face convention: ``labels[t]`` is predicted from
position ``t - 1`` and ``-100`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from common.errors import UsageError
from dualoptim.registry import Registry
from LLM.data import IGNORE_INDEX

Batch = Dict[str, Dict[str, torch.Tensor]]


# --------------------------------------------------------------------------- tensor functions

def _shift(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return logits[..., :-1, :], labels[..., 1:]


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of each sequence's labelled tokens, shape ``(batch,)``."""
    logits, labels = _shift(logits, labels)
    nll = F.cross_entropy(logits.transpose(-1, -2).float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(-1)


def token_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all labelled tokens of the batch (a causal LM's ``outputs.loss``)."""
    logits, labels = _shift(logits, labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def uniform_kl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ME: mean over labelled tokens of ``KL(uniform || softmax(logits))``.

    Minimising it pushes the predictive distribution on the forget answers to
    maximum entropy.  ``1e-12`` inside the log as in the original.
    """
    logits, labels = _shift(logits, labels)
    vocab = logits.shape[-1]
    probs = F.softmax(logits.float(), dim=-1)
    log_uniform = -torch.log(torch.tensor(float(vocab), device=logits.device))
    kl = (log_uniform - torch.log(probs + 1e-12)).sum(-1) / vocab
    mask = (labels != IGNORE_INDEX).float()
    return (kl * mask).sum() / mask.sum()


def npo_loss(nll: torch.Tensor, ref_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: ``-(2 / beta) * mean log sigmoid(beta * (nll - ref_nll))``."""
    return -F.logsigmoid(beta * (nll - ref_nll)).mean() * 2 / beta


def dpo_loss(idk_nll: torch.Tensor, forget_nll: torch.Tensor, ref_idk_nll: torch.Tensor,
             ref_forget_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO with the refusal as preferred and the forget answer as rejected response."""
    policy = forget_nll - idk_nll
    reference = ref_forget_nll - ref_idk_nll
    return -F.logsigmoid(beta * (policy - reference)).mean() * 2 / beta


def ap_loss(retain_nll: torch.Tensor, retain_idk_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """AP (answer preservation): prefer the retain answer over a refusal, ``-(1/beta) mean log sigmoid``."""
    return -F.logsigmoid(beta * (retain_idk_nll - retain_nll)).mean() / beta


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """``KL(ref || current)`` summed over the vocabulary and averaged over all ``batch * length`` positions.

    As in the original (``trainer/losses.py:132-149``), every position counts, padding included
    (``batchmean`` over the flattened positions), so the value depends on the padded length:
    the KL term reads its batch padded to ``max_length`` as the original's
    (:attr:`Term.full_length`).
    """
    vocab = logits.shape[-1]
    log_p = F.log_softmax(logits.float(), dim=-1).reshape(-1, vocab)
    log_q = F.log_softmax(ref_logits.float(), dim=-1).reshape(-1, vocab)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)


# --------------------------------------------------------------------------- terms on models

def _logits(model, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


def _ref_logits(ref_model, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return _logits(ref_model, inputs)


@dataclass(frozen=True)
class Term:
    """One loss term: its name, the batch kinds it reads, whether it needs the reference model.

    ``full_length``: the kinds it reads padded to ``max_length``, as the original pads every
    sequence (``dataset/data_module.py:42-44``).  Only the KL term needs it: its mean runs over
    every position, padding included, and the logits at padded positions are not zero, so
    padding to the batch's longest row would give another number.  The other terms ignore
    padded positions and read the cheaper batch padded to its longest row.
    """

    name: str
    kinds: Tuple[str, ...]
    needs_ref: bool
    compute: Callable[..., torch.Tensor]
    full_length: Tuple[str, ...] = ()

    def __call__(self, model, ref_model, batch: Batch, beta: float) -> torch.Tensor:
        if self.needs_ref and ref_model is None:
            raise UsageError(f"--forget_loss: {self.name} needs a reference model, none was given")
        return self.compute(model, ref_model, batch, beta)


def _ga(model, ref_model, batch, beta):
    inputs = batch["forget"]
    return -token_mean_nll(_logits(model, inputs), inputs["labels"])


def _npo(model, ref_model, batch, beta):
    inputs = batch["forget"]
    return npo_loss(sequence_nll(_logits(model, inputs), inputs["labels"]),
                    sequence_nll(_ref_logits(ref_model, inputs), inputs["labels"]), beta)


def _dpo(model, ref_model, batch, beta):
    idk, forget = batch["forget_idk"], batch["forget"]
    return dpo_loss(sequence_nll(_logits(model, idk), idk["labels"]),
                    sequence_nll(_logits(model, forget), forget["labels"]),
                    sequence_nll(_ref_logits(ref_model, idk), idk["labels"]),
                    sequence_nll(_ref_logits(ref_model, forget), forget["labels"]), beta)


def _me(model, ref_model, batch, beta):
    inputs = batch["forget"]
    return uniform_kl_loss(_logits(model, inputs), inputs["labels"])


def _idk(model, ref_model, batch, beta):
    inputs = batch["forget_idk"]
    return token_mean_nll(_logits(model, inputs), inputs["labels"])


def _gd(model, ref_model, batch, beta):
    inputs = batch["retain"]
    return token_mean_nll(_logits(model, inputs), inputs["labels"])


def _kl(model, ref_model, batch, beta):
    inputs = batch["retain"]
    return kl_to_reference(_logits(model, inputs), _ref_logits(ref_model, inputs))


def _ap(model, ref_model, batch, beta):
    retain, idk = batch["retain"], batch["retain_idk"]
    return ap_loss(sequence_nll(_logits(model, retain), retain["labels"]),
                   sequence_nll(_logits(model, idk), idk["labels"]), beta)


def _mismatch_kl(model, ref_model, batch, beta):
    inputs = batch["forget_mismatch"]
    return token_mean_nll(_logits(model, inputs), inputs["labels"]) + _kl(model, ref_model, batch, beta)


FORGET_TERMS: Dict[str, Term] = {
    "GA": Term("GA", ("forget",), False, _ga),
    "NPO": Term("NPO", ("forget",), True, _npo),
    "DPO": Term("DPO", ("forget", "forget_idk"), True, _dpo),
    "ME": Term("ME", ("forget",), False, _me),
    "IDK": Term("IDK", ("forget_idk",), False, _idk),
}
REGULARIZERS: Dict[str, Term] = {
    "GD": Term("GD", ("retain",), False, _gd),
    "KL": Term("KL", ("retain",), True, _kl, full_length=("retain",)),
    "AP": Term("AP", ("retain", "retain_idk"), False, _ap),
}


@dataclass(frozen=True)
class UnlearnLoss:
    """A forget term and an optional regulariser with their coefficients' roles."""

    name: str
    forget_term: Term
    regularizer: Optional[Term]

    @property
    def needs_ref(self) -> bool:
        return self.forget_term.needs_ref or bool(self.regularizer and self.regularizer.needs_ref)

    @property
    def kinds(self) -> Tuple[str, ...]:
        kinds = self.forget_term.kinds + (self.regularizer.kinds if self.regularizer else ())
        return tuple(dict.fromkeys(kinds))

    @property
    def full_length(self) -> Tuple[str, ...]:
        """The batch kinds padded to ``max_length`` (:attr:`Term.full_length`)."""
        kinds = self.forget_term.full_length + (self.regularizer.full_length if self.regularizer else ())
        return tuple(dict.fromkeys(kinds))

    def forget(self, model, ref_model, batch: Batch, beta: float) -> torch.Tensor:
        return self.forget_term(model, ref_model, batch, beta)

    def regularization(self, model, ref_model, batch: Batch, beta: float) -> torch.Tensor:
        if self.regularizer is None:
            raise UsageError(f"--forget_loss {self.name}: has no regulariser, so --alternate cannot "
                             f"schedule retain steps; use FORGET+REG (e.g. {self.name}+GD)")
        return self.regularizer(model, ref_model, batch, beta)

    def joint(self, model, ref_model, batch: Batch, beta: float, forget_coeff: float,
              regularization_coeff: float) -> torch.Tensor:
        loss = forget_coeff * self.forget(model, ref_model, batch, beta)
        if self.regularizer is not None:
            loss = loss + regularization_coeff * self.regularizer(model, ref_model, batch, beta)
        return loss


#: ``--forget_loss`` name -> :class:`UnlearnLoss` (every forget term, alone or with a regulariser, and LLMU).
FORGET_LOSSES: Registry[UnlearnLoss] = Registry("--forget_loss")
for _forget_name, _forget_term in FORGET_TERMS.items():
    FORGET_LOSSES.register(_forget_name)(UnlearnLoss(_forget_name, _forget_term, None))
    for _reg_name, _reg_term in REGULARIZERS.items():
        _name = f"{_forget_name}+{_reg_name}"
        FORGET_LOSSES.register(_name)(UnlearnLoss(_name, _forget_term, _reg_term))
FORGET_LOSSES.register("LLMU")(UnlearnLoss(
    "LLMU", FORGET_TERMS["GA"], Term("mismatch+KL", ("forget_mismatch", "retain"), True, _mismatch_kl,
                                     full_length=("retain",))))
