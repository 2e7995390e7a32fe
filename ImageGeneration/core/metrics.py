"""Image-generation metrics on features or class probabilities.

The feature extractor is the caller's choice (Inception when its weights are
at hand, a dataset classifier, raw pixels offline), so the maths here is
tested without any download.  Together they are the metrics of the ADM
evaluator (guided-diffusion ``evaluations/evaluator.py``) that the original
runs, plus KID:

* FID: :func:`fid_from_features` on the pooled features;
* sFID: the same Fréchet distance on :func:`spatial_fid_features` of a
  mid-level feature map (Inception's ``mixed_6/conv``);
* Inception Score: :func:`inception_score` on the class probabilities;
* improved precision and recall (Kynkäänniemi et al., 2019):
  :func:`precision_recall` on the pooled features.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from common.io import write_run_record


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative rounding noise clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))`` between two Gaussians.

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of square roots of the
    eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as
    ``S1 S2``), which stays real and stable for the singular covariances of
    small sample sets, where ``scipy.linalg.sqrtm`` warns and goes complex.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def feature_statistics(features: np.ndarray):
    """Mean and (unbiased) covariance of an ``(N, D)`` feature matrix."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors of shape (N, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, subset_size: int = 1000,
                              n_subsets: int = 100, seed: int = 0) -> float:
    """KID: the unbiased MMD^2 with kernel ``(x.y / d + 1)^3``, averaged over random subsets."""
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    values = []
    for _ in range(n_subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx = (xs @ xs.T / d + 1) ** 3
        kyy = (ys @ ys.T / d + 1) ** 3
        kxy = (xs @ ys.T / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values))


def inception_score(probs: np.ndarray, split_size: int = 5000) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` from class probabilities.

    As ADM's evaluator, computed on consecutive chunks of ``split_size`` samples
    (the last one may be shorter) and averaged: 10 chunks for a 50k-sample set.
    """
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start:start + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


#: sFID keeps this many leading channels of the spatial feature map (ADM: 7 of ``mixed_6/conv``'s 192,
#: so 7 x 17 x 17 = 2023 features per image).
SPATIAL_FID_CHANNELS = 7


def spatial_fid_features(feature_map: torch.Tensor) -> np.ndarray:
    """The sFID features of an ``(N, C, H, W)`` map: its first :data:`SPATIAL_FID_CHANNELS` channels, flattened.

    ADM flattens TensorFlow's ``(N, H, W, C)`` layout; the order of the coordinates does not change a
    Fréchet distance, so ``(C, H, W)`` order gives the same sFID.
    """
    return feature_map[:, :SPATIAL_FID_CHANNELS].flatten(1).double().cpu().numpy()


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``|x_i - y_j|^2`` for all rows, as ``|x|^2 - 2 x.y + |y|^2`` clipped at 0 (one matmul)."""
    return ((x * x).sum(1)[:, None] - 2.0 * x @ y.T + (y * y).sum(1)[None, :]).clamp_(min=0.0)


def manifold_radii(features: torch.Tensor, nhood_size: int = 3, block_size: int = 1024) -> torch.Tensor:
    """Squared distance of every row of ``features`` to its ``nhood_size``-th nearest neighbour in the set.

    The row itself is its own 0th neighbour (distance 0), so with distinct points the radius is that of the
    ``nhood_size``-th other point; duplicates count as neighbours at distance 0, as in ADM's estimator.
    """
    if features.shape[0] <= nhood_size:
        raise ValueError(f"{nhood_size}-NN radii need more than {nhood_size} feature vectors, "
                         f"got {features.shape[0]}")
    return torch.cat([_squared_distances(features[start:start + block_size], features)
                      .kthvalue(nhood_size + 1, dim=1).values
                      for start in range(0, features.shape[0], block_size)])


def precision_recall(reference: np.ndarray, samples: np.ndarray, nhood_size: int = 3, block_size: int = 1024,
                     device: torch.device = torch.device("cpu")) -> Tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of ``samples`` against ``reference``.

    Each set's manifold is the union of balls around its points, each ball's radius the distance to the
    point's ``nhood_size``-th nearest neighbour in its own set (:func:`manifold_radii`).  Then

    * precision = share of samples inside at least one reference ball (``|s - r| <= radius(r)``);
    * recall = share of reference points inside at least one sample ball (``|r - s| <= radius(s)``).

    Identical sets give 1.0 / 1.0, sets farther apart than every radius 0.0 / 0.0.  Distances are computed
    in float64 on ``device``, one block of ``block_size`` samples against all reference points at a time.
    """
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float64, device=device)
    smp = torch.as_tensor(np.asarray(samples), dtype=torch.float64, device=device)
    ref_radii = manifold_radii(ref, nhood_size, block_size)
    sample_radii = manifold_radii(smp, nhood_size, block_size)
    sample_inside = torch.zeros(smp.shape[0], dtype=torch.bool, device=device)
    ref_inside = torch.zeros(ref.shape[0], dtype=torch.bool, device=device)
    for start in range(0, smp.shape[0], block_size):
        distances = _squared_distances(smp[start:start + block_size], ref)
        sample_inside[start:start + block_size] = (distances <= ref_radii[None, :]).any(dim=1)
        ref_inside |= (distances <= sample_radii[start:start + block_size, None]).any(dim=0)
    return float(sample_inside.double().mean()), float(ref_inside.double().mean())


def forgetting_metrics(logits: torch.Tensor, forgotten_class: int, n_total: int) -> Dict[str, float]:
    """Classifier evaluation of samples generated for the forgotten class.

    Sums over the given logits, divided by ``n_total`` (the number of
    generated images, including any the caller filtered out as blank, as the
    research code does):

    * ``accuracy of forgotten class``: fraction classified as that class;
      ``unlearning accuracy`` is one minus it;
    * ``entropy``: average entropy of the predicted distribution;
    * ``prob of forgotten class``: average probability of that class.
    """
    if n_total <= 0:
        raise ValueError("no samples to evaluate")
    logits = logits.double()
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    accuracy = float((logits.argmax(dim=-1) == forgotten_class).sum()) / n_total
    entropy = float(-(probs * log_probs).sum()) / n_total
    forgotten_prob = float(probs[:, forgotten_class].sum()) / n_total
    return {"entropy": entropy, "prob of forgotten class": forgotten_prob,
            "accuracy of forgotten class": accuracy, "unlearning accuracy": 1.0 - accuracy}


def report_forgetting(metrics: Dict[str, float], args, sample_path) -> Dict[str, float]:
    """Print the research code's three classifier-evaluation lines and record them next to the samples."""
    print(f"Average entropy: {metrics['entropy']}")
    print(f"Average prob of forgotten class: {metrics['prob of forgotten class']}")
    print(f"Average accuracy of forgotten class: {metrics['accuracy of forgotten class']}")
    write_run_record(Path(sample_path), args, metrics, filename="classifier_evaluation.json")
    return metrics

