"""The shapes of kd.metrics' results over seeds, apart from the arithmetic (numpy, scipy) that makes them, so that
a record holding them (study.json) is read back without importing either."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Interval:
    """A mean over seeds with its two-sided confidence interval (Student's t, n - 1 degrees of freedom); with one
    seed the interval is unknown (NaN)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass
class PairedDifference:
    """b - a, paired by seed (the same seed: the same labelled rows and initialisation)."""

    difference: Interval
    t_statistic: float
    p_value: float  # two-sided paired t-test
    sd: float = float("nan")  # of the per-seed differences: what the seeds a question needs depend on
