"""FID/KID/IS maths, classifier metrics and image-folder helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from common.errors import UsageError
from ImageGeneration.core.images import (
    image_format, load_image_folder, parse_class_list, save_pngs, to_uint8_images, uint8_to_model_space)
from ImageGeneration.core.metrics import (
    fid_from_features, forgetting_metrics, frechet_distance, inception_score, kernel_inception_distance)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_shifted_isotropic_gaussians():
    # equal covariances: FID = |mu1 - mu2|^2
    assert frechet_distance(np.zeros(3), np.eye(3), np.full(3, 2.0), np.eye(3)) == pytest.approx(12.0)
    # 1-D: (s1 - s2)^2 for standard deviations s1, s2
    assert frechet_distance(np.zeros(1), np.array([[4.0]]), np.zeros(1), np.array([[1.0]])) == pytest.approx(1.0)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 8))
    assert abs(fid_from_features(features, features)) < 1e-8
    distances = [fid_from_features(features, features + shift) for shift in (0.5, 1.0, 2.0)]
    assert distances == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0])
    assert distances[0] < distances[1] < distances[2]


def test_fid_with_fewer_samples_than_dimensions_stays_real():
    rng = np.random.default_rng(2)
    small = rng.normal(size=(5, 20))
    assert np.isfinite(fid_from_features(small, small + 1.0))


def test_kid_same_set_near_zero_shifted_positive():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    same = kernel_inception_distance(x, y, subset_size=200, n_subsets=20)
    shifted = kernel_inception_distance(x, y + 2.0, subset_size=200, n_subsets=20)
    assert abs(same) < 0.02 * shifted
    assert shifted > 1.0


def test_inception_score_extremes():
    assert inception_score(np.eye(4)) == pytest.approx(4.0, rel=1e-6)  # confident and diverse
    assert inception_score(np.full((5, 4), 0.25)) == pytest.approx(1.0)  # uninformative


def test_forgetting_metrics_on_constructed_logits():
    # two confident predictions of class 0, one of class 1, one uniform over 2 classes (argmax -> 0)
    logits = torch.tensor([[50.0, 0.0], [50.0, 0.0], [0.0, 50.0], [0.0, 0.0]])
    metrics = forgetting_metrics(logits, forgotten_class=0, n_total=4)
    assert metrics["accuracy of forgotten class"] == pytest.approx(3 / 4)
    assert metrics["unlearning accuracy"] == pytest.approx(1 / 4)
    assert metrics["prob of forgotten class"] == pytest.approx((1 + 1 + 0 + 0.5) / 4, abs=1e-9)
    assert metrics["entropy"] == pytest.approx(math.log(2) / 4, abs=1e-9)
    # blank images removed by the caller still count in the denominator
    assert forgetting_metrics(logits[:2], 0, n_total=4)["accuracy of forgotten class"] == pytest.approx(0.5)


@pytest.mark.parametrize("spec,expected", [("0,3", ([0, 3], [])), ("x0", ([1, 2, 3], [0])),
                                           ("x1,x2", ([0, 3], [1, 2]))])
def test_parse_class_list(spec, expected):
    assert parse_class_list(spec, 4) == expected


@pytest.mark.parametrize("spec", ["4", "x7", "a", "1,x2", ""])
def test_parse_class_list_errors(spec):
    with pytest.raises(UsageError, match="--classes_to_generate"):
        parse_class_list(spec, 4)


def test_png_round_trip(tmp_path):
    x = torch.linspace(-1, 1, 2 * 1 * 4 * 4).view(2, 1, 4, 4)
    images = to_uint8_images(x)
    assert images.shape == (2, 4, 4, 1) and images.dtype == np.uint8
    assert save_pngs(images, tmp_path, 5) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5.png", "6.png"]
    assert image_format(tmp_path, "dir") == (1, 4)
    loaded = load_image_folder(tmp_path, "dir", 1, 4)
    assert np.array_equal(loaded, images)
    assert torch.allclose(uint8_to_model_space(loaded), x, atol=1 / 127.5)
    with pytest.raises(UsageError, match="--sample_path .*missing: folder not found"):
        load_image_folder(tmp_path / "missing", "--sample_path", 1, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="contains no images"):
        load_image_folder(tmp_path / "empty", "--sample_path", 1, 4)


def test_classifier_evaluation_skips_blank_images_but_counts_them(monkeypatch):
    from ImageGeneration.DDPM import classifier_evaluation

    seen = {}

    def fake_predict(classifier, images, batch_size):
        seen["n"] = images.shape[0]
        return torch.tensor([[10.0, 0.0], [0.0, 10.0]]), None

    monkeypatch.setattr(classifier_evaluation, "predict", fake_predict)
    classifier = type("Stub", (), {"meta": {"n_classes": 2}})()
    images = torch.stack([torch.full((1, 4, 4), -1.0), torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5),
                          torch.full((1, 4, 4), 1.0)])
    metrics = classifier_evaluation.evaluate_samples(classifier, images, forgotten_class=0, batch_size=8)
    assert seen["n"] == 2  # the all-black and all-white images never reach the classifier
    assert metrics["n_blank_skipped"] == 2 and metrics["n_samples"] == 4
    assert metrics["accuracy of forgotten class"] == pytest.approx(1 / 4)
    assert metrics["unlearning accuracy"] == pytest.approx(3 / 4)
