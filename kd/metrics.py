"""Every score kd-bench reports, defined once: accuracy and F1 of predictions (training's model selection,
the run's results, export gates and checks, the bench), and the paired comparison of two models."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, f1_score


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


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    preds = logits.argmax(-1)
    ids = list(range(len(label_names)))
    per_class = f1_score(labels, preds, average=None, labels=ids)
    return {
        "accuracy": accuracy(preds, labels),
        "f1_macro": float(f1_score(labels, preds, average="macro", labels=ids)),
        "f1_weighted": float(f1_score(labels, preds, average="weighted", labels=ids)),
        "f1_per_class": {name: float(v) for name, v in zip(label_names, per_class)},
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
