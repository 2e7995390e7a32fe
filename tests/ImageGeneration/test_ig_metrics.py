"""FID/sFID/KID/IS/precision/recall maths, the evaluator's records, classifier metrics and image-folder helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from common.errors import UsageError
from ImageGeneration.core.images import (
    image_format, load_image_folder, parse_class_list, save_pngs, to_uint8_images, uint8_to_model_space)
from common.io import read_json
from ImageGeneration.core.metrics import (
    fid_from_features, forgetting_metrics, frechet_distance, inception_score, kernel_inception_distance,
    manifold_radii, precision_recall, spatial_fid_features)


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


def test_inception_score_averages_chunks_of_split_size():
    # ADM scores consecutive chunks: [e0, e1] and [e2, e3] are each 2 classes, confident -> 2 each
    assert inception_score(np.eye(4), split_size=2) == pytest.approx(2.0, rel=1e-6)
    # a short last chunk counts as one: [e0, e1, e2] -> 3, [e3] -> 1
    assert inception_score(np.eye(4), split_size=3) == pytest.approx(2.0, rel=1e-6)


# 1-D points whose 3-NN radii are read off by hand (squared distances compared, as ADM does):
#   reference 0, 1, 2, 3: 3rd other neighbour at 3, 2, 2, 3 -> balls [-3, 3] [-1, 3] [0, 4] [0, 6]
#   samples 4.5, 5, 5.5, 6 (radius 1.5, 1, 1, 1.5 -> the first ball is [3, 6]) and 30..33 (far away)
REFERENCE_1D = np.array([[0.0], [1.0], [2.0], [3.0]])
SAMPLES_1D = np.array([[4.5], [5.0], [5.5], [6.0], [30.0], [31.0], [32.0], [33.0]])


def test_manifold_radii_by_hand():
    assert manifold_radii(torch.tensor(REFERENCE_1D), 3).tolist() == [9.0, 4.0, 4.0, 9.0]
    assert manifold_radii(torch.tensor(SAMPLES_1D), 3).tolist() == [2.25, 1.0, 1.0, 2.25, 9.0, 4.0, 4.0, 9.0]
    assert manifold_radii(torch.tensor(REFERENCE_1D), 1, block_size=3).tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("block_size", [1024, 3])
def test_precision_recall_by_hand(block_size):
    # precision: 4.5, 5, 5.5 lie in the ball [0, 6] of reference 3, and so does 6 on its edge (<= counts);
    # 30..33 lie in no ball -> 4/8.  recall: only reference 3 lies in a sample ball ([3, 6], on its edge) -> 1/4
    precision, recall = precision_recall(REFERENCE_1D, SAMPLES_1D, nhood_size=3, block_size=block_size)
    assert (precision, recall) == (0.5, 0.25)
    # swapping the roles swaps the two numbers
    assert precision_recall(SAMPLES_1D, REFERENCE_1D, nhood_size=3, block_size=block_size) == (0.25, 0.5)
    # k = 1: balls of radius 1 around 0..3 reach [-1, 4]: no sample inside; sample balls [4, 5] ... miss 3
    assert precision_recall(REFERENCE_1D, SAMPLES_1D, nhood_size=1, block_size=block_size) == (0.0, 0.0)


def test_precision_recall_edge_cases_in_2d():
    points = np.random.default_rng(4).normal(size=(20, 2))
    assert precision_recall(points, points.copy()) == (1.0, 1.0)  # every point lies at its own centre
    assert precision_recall(points, points + 1000.0) == (0.0, 0.0)  # far apart: no ball reaches the other set
    # a square reference (3-NN radius: its diagonal, sqrt 8) and samples: one at its centre, three far off.
    # precision: only the centre is inside a reference ball -> 1/4.  recall: the centre's 3rd neighbour is
    # far away, so its ball covers the whole square -> 1 (an outlier sample inflates recall)
    square = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]])
    samples = np.array([[1.0, 1.0], [50.0, 50.0], [51.0, 50.0], [50.0, 51.0]])
    assert precision_recall(square, samples) == (0.25, 1.0)
    # without the centre: the far samples' 1-NN balls (radius 1) miss the square and the square's (radius 2)
    # miss them
    assert precision_recall(square, samples[1:], nhood_size=1) == (0.0, 0.0)
    with pytest.raises(ValueError, match="3-NN radii need more than 3 feature vectors, got 3"):
        precision_recall(square[:3], samples)


def test_spatial_fid_features_keep_the_first_seven_channels():
    feature_map = torch.arange(2 * 9 * 2 * 3, dtype=torch.float32).view(2, 9, 2, 3)
    features = spatial_fid_features(feature_map)
    assert features.shape == (2, 7 * 2 * 3) and features.dtype == np.float64
    assert np.array_equal(features[1], feature_map[1, :7].flatten().double().numpy())


class FakeInception(torch.nn.Module):
    """The attributes the evaluator hooks (``avgpool``, ``Mixed_6d.branch1x1``) on a network of three layers."""

    def __init__(self):
        super().__init__()
        self.Mixed_6d = torch.nn.Module()
        self.Mixed_6d.branch1x1 = torch.nn.Conv2d(3, 9, kernel_size=5, stride=37)  # 299 x 299 -> 9 x 8 x 8
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(9, 4)

    def forward(self, x):
        return self.fc(self.avgpool(torch.relu(self.Mixed_6d.branch1x1(x))).flatten(1))


def write_image_sets(tmp_path, n_samples=6, n_reference=8):
    rng = np.random.default_rng(5)
    for name, n in (("samples", n_samples), ("reference", n_reference)):
        save_pngs(rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8), tmp_path / name, 0)
    return tmp_path / "samples", tmp_path / "reference"


def test_evaluator_inception_metrics_by_hand_on_a_fake_inception(tmp_path, monkeypatch, capsys):
    """sFID is the Fréchet distance of the first 7 channels of the hooked map, FID that of the pooled features,
    precision/recall their k-NN balls; all printed and recorded in ``evaluation_inception.json``."""
    from ImageGeneration.DDPM import evaluator

    torch.manual_seed(0)
    fake = FakeInception().eval()
    monkeypatch.setattr(evaluator, "load_inception", lambda path, device: fake)
    sample_dir, ref_dir = write_image_sets(tmp_path)
    metrics = evaluator.main([str(sample_dir), str(ref_dir), "--features", "inception", "--inception_weights",
                              "fake.pth", "--kid_subset_size", "4", "--device", "cpu"])

    def by_hand(folder):
        x = (uint8_to_model_space(load_image_folder(folder, "dir", 3, 8)) + 1) / 2
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1)
        with torch.no_grad():
            conv = fake.Mixed_6d.branch1x1(x).double()
        pool = torch.relu(conv).mean(dim=(2, 3))
        return pool.numpy(), conv[:, :7].reshape(len(x), -1).numpy(), torch.softmax(fake.fc.double()(pool),
                                                                                      dim=1).detach().numpy()

    (sample_pool, sample_spatial, sample_probs), (ref_pool, ref_spatial, _) = by_hand(sample_dir), by_hand(ref_dir)
    assert sample_spatial.shape == (6, 7 * 8 * 8)
    assert metrics["sFID"] == pytest.approx(fid_from_features(sample_spatial, ref_spatial), rel=1e-4)
    assert metrics["FID"] == pytest.approx(fid_from_features(sample_pool, ref_pool), rel=1e-4)
    assert metrics["Inception Score"] == pytest.approx(inception_score(sample_probs), rel=1e-5)
    assert (metrics["Precision"], metrics["Recall"]) == precision_recall(ref_pool, sample_pool)
    assert metrics["n_samples"] == 6 and metrics["n_reference"] == 8
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[-6:]] == ["Inception Score", "FID", "sFID", "Precision",
                                                             "Recall", "KID"]
    assert f"sFID: {metrics['sFID']}" in printed and f"Recall: {metrics['Recall']}" in printed
    recorded = read_json(sample_dir / "evaluation_inception.json")["metrics"]
    assert set(recorded) == set(metrics)
    for key, value in metrics.items():
        assert recorded[key] == value, key


def test_evaluator_records_precision_recall_of_pixels(tmp_path):
    """Without spatial features there is no sFID; a set against itself has precision = recall = 1."""
    from ImageGeneration.DDPM import evaluator

    sample_dir, ref_dir = write_image_sets(tmp_path)
    same = evaluator.main([str(sample_dir), str(sample_dir), "--features", "pixels", "--kid_subset_size", "4",
                           "--device", "cpu"])
    assert (same["Precision"], same["Recall"]) == (1.0, 1.0) and "sFID" not in same
    other = evaluator.main([str(sample_dir), str(ref_dir), "--features", "pixels", "--kid_subset_size", "4",
                            "--nhood_size", "5", "--device", "cpu"])
    ref_pixels, sample_pixels = (uint8_to_model_space(load_image_folder(folder, "dir", 3, 8)).flatten(1).double()
                                 .numpy() for folder in (ref_dir, sample_dir))
    assert (other["Precision"], other["Recall"]) == precision_recall(ref_pixels, sample_pixels, 5)
    recorded = read_json(sample_dir / "evaluation_pixels.json")["metrics"]
    assert (recorded["Precision"], recorded["Recall"]) == (other["Precision"], other["Recall"])


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
