"""What the teacher is before it teaches, beyond fine-tuning: the confident pseudo-labels of self-training and of
the pseudo-label student, and the temperature that calibrates its logits before they become soft targets.
Neither ever reads a pool row's label: the functions take logits only, or labelled rows only."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# the temperatures a fit may choose: beyond these the teacher's logits are either flat or one-hot
TEMPERATURES = (0.05, 20.0)


def confident_rows(logits: np.ndarray, per_class: int, min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The pool rows whose teacher label is most confident, at most `per_class` of each class the teacher
    predicts (balanced, so that rounds of self-training do not drift towards the classes the teacher already
    favours) and none below `min_confidence`: their indices, ascending, and the teacher's labels for them.
    Equal confidences go to the lower index, so the choice is the same on every run."""
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    predicted, confidence = log_probs.argmax(-1), np.exp(log_probs.max(-1))
    chosen = []
    for label in range(log_probs.shape[1]):
        rows = np.flatnonzero((predicted == label) & (confidence >= min_confidence))
        order = np.lexsort((rows, -confidence[rows]))  # most confident first, then by index
        chosen.append(rows[order[:per_class]])
    rows = np.sort(np.concatenate(chosen))
    return rows, predicted[rows]


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The one temperature T that minimises the negative log-likelihood of softmax(logits / T) on labelled rows
    (temperature scaling, Guo et al. 2017): accuracy is unchanged, confidence is matched to it. The logits must
    come from rows the model did not train on (held out or cross-fitted), or T only learns how well it fits its
    training rows."""
    labels = np.asarray(labels)
    found = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                            bounds=tuple(np.log(TEMPERATURES)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def folds(rows: int, k: int, seed: int) -> list[np.ndarray]:
    """`rows` row indices in `k` seeded folds of (nearly) equal size, for cross-fitting: a model trained on the
    other folds scores each fold, so every labelled row gets a logit from a model that never saw it."""
    if not 2 <= k <= rows:
        raise ValueError(f"cross-fitting {rows} rows in {k} folds: expected 2 <= k <= rows")
    return [np.sort(part) for part in np.array_split(np.random.default_rng(seed).permutation(rows), k)]


def pool_probabilities(logits: list[np.ndarray]) -> np.ndarray:
    """An ensemble's logits: the log of its members' mean probability, so that softmax of them is that mean (the
    pooling of Hinton et al. 2015 and Lakshminarayanan et al. 2017). Averaging logits instead would let the most
    confident member decide; the mean of probabilities is also what the ensemble is scored by (accuracy,
    calibration). A term at temperature T then softens the pooled distribution as it softens any teacher's."""
    from scipy.special import logsumexp

    stacked = np.stack([log_softmax(np.asarray(z, dtype=np.float64), axis=-1) for z in logits])
    return (logsumexp(stacked, axis=0) - np.log(len(logits))).astype(np.float32)
