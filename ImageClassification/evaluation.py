"""Accuracy and membership-inference (MIA) efficacy of an unlearned classifier.

Two MIA protocols are offered; in both the number is compared with
Retrain's value (the closer the better), never maximised on its own:

``sfron`` (the DualOptim / SFR-on logs, the default)
    logistic regression (balanced classes) on the prediction entropy, trained
    to separate retain samples (members) from test samples (non-members); the
    value is the fraction of forget samples the attacker calls *members*,
    exactly as the research code's ``get_membership_attack_prob`` returns it.
``salun`` (SalUn's ``SVC_MIA_forget_efficacy``)
    an RBF SVC (C=3, gamma="auto") on the confidence of the true class,
    shadow members = the first ``len(test)`` retain samples, shadow
    non-members = test; the value is the fraction of forget samples predicted
    *non-members*.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from torch import nn


@torch.no_grad()
def predict_probabilities(model: nn.Module, loader: Iterable, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs and labels over ``loader`` (model in eval mode), on the CPU."""
    model.eval()
    probs, labels = [], []
    for images, targets in loader:
        probs.append(F.softmax(model(images.to(device)), dim=-1).float().cpu())
        labels.append(targets.cpu())  # on the device with --data_on_device
    if not probs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable, device: torch.device) -> float:
    """Top-1 accuracy in percent (0 for an empty loader)."""
    model.eval()
    correct = total = 0
    for images, targets in loader:
        predictions = model(images.to(device)).argmax(dim=1).cpu()
        correct += (predictions == targets.cpu()).sum().item()
        total += targets.numel()
    return 100.0 * correct / total if total else 0.0


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row (``0 log 0 = 0``)."""
    return -torch.where(probs > 0, probs * probs.log(), torch.zeros_like(probs)).sum(dim=-1)


def true_class_confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, labels.view(-1, 1)).squeeze(1)


def mia_sfron(retain: torch.Tensor, forget: torch.Tensor, test: torch.Tensor) -> float:
    """SFR-on's entropy MIA on softmax outputs: fraction of forget samples predicted *member*."""
    features = torch.cat([entropy(retain), entropy(test)]).numpy().reshape(-1, 1)
    members = np.concatenate([np.ones(len(retain)), np.zeros(len(test))])
    attack = LogisticRegression(class_weight="balanced", solver="lbfgs")
    attack.fit(features, members)
    return float(attack.predict(entropy(forget).numpy().reshape(-1, 1)).mean())


def mia_salun(shadow_member: torch.Tensor, shadow_nonmember: torch.Tensor, target: torch.Tensor) -> float:
    """SalUn's SVC MIA on one feature per sample: fraction of ``target`` predicted *non-member*."""
    features = torch.cat([shadow_member, shadow_nonmember]).numpy().reshape(-1, 1)
    members = np.concatenate([np.ones(len(shadow_member)), np.zeros(len(shadow_nonmember))])
    attack = SVC(C=3, gamma="auto", kernel="rbf")
    attack.fit(features, members)
    return float(1.0 - attack.predict(target.numpy().reshape(-1, 1)).mean())


def evaluate(model: nn.Module, loaders: Dict[str, Iterable], device: torch.device,
             mia: str = "sfron") -> Dict[str, float]:
    """Accuracies (UA = 100 - forget accuracy) and MIA-efficacy of ``model``.

    ``loaders`` holds test-transform loaders named ``retain``, ``forget``,
    ``val`` and ``test``.  Returns ``retain_acc``, ``forget_acc`` (the raw
    accuracy), ``val_acc``, ``test_acc``, ``UA``, ``RA``, ``TA``, ``MIA``
    (percent, as parse_result reports it) and ``mia_raw`` (fraction).
    """
    outputs = {name: predict_probabilities(model, loader, device) for name, loader in loaders.items()}
    acc = {name: (100.0 * (probs.argmax(1) == labels).float().mean().item() if len(labels) else 0.0)
           for name, (probs, labels) in outputs.items()}
    if mia == "sfron":
        mia_raw = mia_sfron(outputs["retain"][0], outputs["forget"][0], outputs["test"][0])
    elif mia == "salun":
        n_test = len(outputs["test"][1])
        shadow = true_class_confidence(*outputs["retain"])[:n_test]
        mia_raw = mia_salun(shadow, true_class_confidence(*outputs["test"]), true_class_confidence(*outputs["forget"]))
    else:
        raise ValueError(f"unknown MIA protocol {mia!r}")
    return {"retain_acc": acc["retain"], "forget_acc": acc["forget"], "val_acc": acc["val"],
            "test_acc": acc["test"], "UA": 100.0 - acc["forget"], "RA": acc["retain"], "TA": acc["test"],
            "MIA": 100.0 * mia_raw, "mia_raw": mia_raw}
