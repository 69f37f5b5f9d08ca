"""Self-training's confident rows and calibration's temperature against planted answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from kd.procedures import confident_rows, fit_temperature, folds, nll


def test_confident_rows_are_balanced_per_predicted_class_most_confident_first_ties_to_the_lower_row():
    logits = np.array([[5.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [0, 4.0, 0], [0, 4.0, 0], [0, 0.5, 0],
                       [0, 0, 2.0], [3.0, 0, 0]])
    rows, labels = confident_rows(logits, per_class=2)
    # class 0: rows 0 (5.0), then 2 and 7 tie at 3.0 and the lower row wins; class 1: rows 3 and 4; class 2: row 6
    assert rows.tolist() == [0, 2, 3, 4, 6] and labels.tolist() == [0, 0, 1, 1, 2]
    rows, _ = confident_rows(logits, per_class=5, min_confidence=0.8)
    assert rows.tolist() == [0, 2, 3, 4, 7], "row 1 (p 0.58), 5 and 6 are below 0.8"
    assert confident_rows(logits[[5, 1]], per_class=1)[0].tolist() == [0, 1]  # indices into what was given


def test_the_temperature_fit_recovers_a_planted_temperature_and_never_changes_a_prediction():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20000, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(z, axis=-1)])  # calibrated at T = 1 by construction
    overconfident = 3.0 * z
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)
    assert ((overconfident / t).argmax(-1) == overconfident.argmax(-1)).all()


def test_cross_fitting_folds_cover_every_row_once_and_are_seeded():
    parts = folds(10, 3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    assert all((a == b).all() for a, b in zip(parts, folds(10, 3, seed=1)))
    with pytest.raises(ValueError, match="expected 2 <= k <= rows"):
        folds(3, 5, seed=0)
