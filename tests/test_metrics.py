"""The scores defined in kd/metrics.py against hand computations and independent implementations."""

import numpy as np
import pytest
import torch

from kd.metrics import ECE_BINS, calibration, classification_metrics, confusion_scores, expected_calibration_error


def test_nll_and_brier_match_torch_and_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3, size=(200, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=200)
    got = calibration(logits, labels)
    expected_nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels))
    assert got["nll"] == pytest.approx(float(expected_nll), rel=1e-9)
    probs = torch.softmax(torch.from_numpy(logits).double(), -1).numpy()
    assert got["brier"] == pytest.approx(float(((probs - np.eye(4)[labels]) ** 2).sum(1).mean()), rel=1e-9)


def test_ece_by_hand_on_two_bins():
    # top-class confidences 0.9 (two rows, one right) and 0.6 (two rows, both right): bins of width 1/15
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    assert ECE_BINS == 15


def test_ece_is_zero_when_confidence_equals_accuracy_and_bins_are_right_closed():
    # 10 rows at confidence 0.8 with 8 right: perfectly calibrated
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # a confidence of exactly 1 falls in the last bin, not past it
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == pytest.approx(0.0)


def test_a_model_made_overconfident_keeps_its_accuracy_and_loses_calibration():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=2000)
    logits = rng.normal(size=(2000, 4))
    logits[np.arange(2000), labels] += 1.5  # about 70 % right
    sharp = logits * 8  # the same argmax, far more confident
    base = classification_metrics(logits, labels, list("abcd"))
    over = classification_metrics(sharp, labels, list("abcd"))
    assert base["accuracy"] == over["accuracy"]
    assert over["nll"] > base["nll"] and over["ece"] > base["ece"] + 0.1 and over["brier"] > base["brier"]


def test_confusion_scores_equal_the_direct_ones():
    rng = np.random.default_rng(2)
    labels, preds = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    logits = np.eye(3)[preds]
    direct = classification_metrics(logits, labels, ["x", "y", "z"])
    summed = confusion_scores(np.array(direct["confusion_matrix"]))
    assert summed["accuracy"] == pytest.approx(direct["accuracy"])
    assert summed["f1_macro"] == pytest.approx(direct["f1_macro"])


def test_seed_means_and_paired_differences_match_scipy():
    from scipy import stats

    from kd.seeds import mean_interval, paired_difference

    baseline = [0.850, 0.861, 0.846, 0.858, 0.852]
    distilled = [0.866, 0.870, 0.861, 0.873, 0.860]
    ci = mean_interval(distilled)
    half = stats.t.ppf(0.975, 4) * np.std(distilled, ddof=1) / np.sqrt(5)  # the t-interval written out
    assert ci.mean == pytest.approx(np.mean(distilled)) and ci.n == 5
    assert (ci.low, ci.high) == pytest.approx((np.mean(distilled) - half, np.mean(distilled) + half))
    pair = paired_difference(baseline, distilled)
    diffs = np.subtract(distilled, baseline)
    assert pair.difference.mean == pytest.approx(diffs.mean())
    assert pair.p_value == pytest.approx(stats.ttest_rel(distilled, baseline).pvalue)
    assert pair.difference.excludes_zero and pair.p_value < 0.05
    # a difference that changes sign between seeds: its interval includes 0, noise
    noisy = paired_difference([0.85, 0.86, 0.84], [0.86, 0.85, 0.845])
    assert not noisy.difference.excludes_zero and noisy.p_value > 0.05
    # one seed: no interval; equal values: a zero-width one
    assert np.isnan(mean_interval([0.9]).low)
    assert (mean_interval([0.9, 0.9, 0.9]).low, mean_interval([0.9, 0.9, 0.9]).high) == (0.9, 0.9)
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([1, 2], [1, 2, 3])
