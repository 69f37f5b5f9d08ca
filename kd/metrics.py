"""Every score kd-bench reports, defined once: accuracy and F1 of predictions (training's model selection,
the run's results, export gates and checks, the bench), calibration of the probabilities and the paired
comparison of two models on one test split. Statistics over seeds: kd/seeds.py."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss, confusion_matrix, f1_score


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose prediction is the label."""
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def agreement(preds_a: np.ndarray, preds_b: np.ndarray) -> float:
    """Share of rows where two models predict the same label."""
    return float(np.mean(np.asarray(preds_a) == np.asarray(preds_b)))


def selection_metrics(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """What training logs on validation and selects checkpoints by."""
    return {"accuracy": accuracy(preds, labels), "f1_macro": float(f1_score(labels, preds, average="macro"))}


def confusion_scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 from a confusion matrix (rows: true label, columns: prediction), for scores summed
    over parts of a split (the bench measures a split in parts)."""
    confusion = np.asarray(confusion)
    tp = np.diag(confusion).astype(float)
    both = confusion.sum(0) + confusion.sum(1)
    f1 = np.divide(2 * tp, both, out=np.zeros_like(tp), where=both > 0)
    return {"accuracy": float(tp.sum() / confusion.sum()), "f1_macro": float(f1.mean())}


def confusion(preds: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    return confusion_matrix(labels, preds, labels=list(range(classes)))


ECE_BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al., 2017)


def calibration(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How far the predicted probabilities can be trusted: negative log-likelihood of the true labels (nats per
    row), expected calibration error (top-class confidence against accuracy, over ECE_BINS equal-width bins,
    weighted by their rows) and the multi-class Brier score (mean squared distance to the one-hot label)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    log_probs = log_softmax(logits, axis=-1)
    probs = np.exp(log_probs)
    return {"nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
            "ece": expected_calibration_error(probs, labels),
            "brier": float(brier_score_loss(labels, probs, labels=list(range(probs.shape[1]))))}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """sum over bins of |accuracy - mean confidence| x share of rows, rows binned by top-class confidence into
    (0, 1/bins], ..., ((bins-1)/bins, 1]. Written here: scikit-learn's calibration_curve is binary only, and the
    libraries that have it (torchmetrics, netcal) are not in this stack."""
    confidence, correct = probs.max(-1), probs.argmax(-1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            ece += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(ece)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    preds = logits.argmax(-1)
    ids = list(range(len(label_names)))
    per_class = f1_score(labels, preds, average=None, labels=ids)
    return {
        "accuracy": accuracy(preds, labels),
        "f1_macro": float(f1_score(labels, preds, average="macro", labels=ids)),
        "f1_weighted": float(f1_score(labels, preds, average="weighted", labels=ids)),
        "f1_per_class": {name: float(v) for name, v in zip(label_names, per_class)},
        **calibration(logits, labels),
        "confusion_matrix": confusion(preds, labels, len(ids)).tolist(),
        "test_rows": int(len(labels)),
    }


def mcnemar(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> dict:
    """Exact McNemar test: of the rows where exactly one model is right, is the split 50/50?"""
    right_a, right_b = preds_a == labels, preds_b == labels
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(~right_a & right_b))
    n = only_a + only_b
    p = float(binomtest(min(only_a, only_b), n, 0.5).pvalue) if n else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": p}


def gap_closed(teacher: float, baseline: float, distilled: float) -> float | None:
    """Share of the teacher-baseline accuracy gap that distillation closed (None when there is no gap)."""
    gap = teacher - baseline
    return None if gap <= 0 else (distilled - baseline) / gap
