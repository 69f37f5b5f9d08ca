"""Test-set metrics of one model, and the paired comparison of two."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    preds = logits.argmax(-1)
    ids = list(range(len(label_names)))
    per_class = f1_score(labels, preds, average=None, labels=ids)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro", labels=ids)),
        "f1_weighted": float(f1_score(labels, preds, average="weighted", labels=ids)),
        "f1_per_class": {name: float(v) for name, v in zip(label_names, per_class)},
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
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
