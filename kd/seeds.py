"""Statistics over training seeds: a mean's t-interval; a paired difference with its t-test, and beside it the
sign-flip permutation test, the BCa bootstrap interval and the share of seeds one model wins; Holm's correction over
a family of comparisons; and how many seeds a question needs (an interval's half-width, power against an effect)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from kd.intervals import Interval, PairedDifference

EXACT_SEEDS = 16  # up to this many seeds the permutation test enumerates every sign pattern (2^16 = 65,536)
RESAMPLES = 9_999  # bootstrap resamples, and random sign patterns beyond EXACT_SEEDS
RNG_SEED = 0  # the resampling is seeded: a report rebuilt from the same cells says the same


def mean_interval(values, confidence: float = 0.95) -> Interval:
    """The mean of per-seed values and its t-interval; with one value the interval is unknown (NaN)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, float("nan"), float("nan"), len(values), confidence)
    h = half_width(float(np.std(values, ddof=1)), len(values), confidence)
    return Interval(mean, mean - h, mean + h, len(values), confidence)


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """b - a per seed: the mean difference's t-interval, the paired t-test and the differences' sd."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in number: {a.shape} and {b.shape}")
    test = stats.ttest_rel(b, a) if len(a) > 1 else None
    return PairedDifference(mean_interval(b - a, confidence),
                            float("nan") if test is None else float(test.statistic),
                            float("nan") if test is None else float(test.pvalue),
                            float(np.std(b - a, ddof=1)) if len(a) > 1 else float("nan"))


def holm(p_values) -> list[float]:
    """Holm-adjusted p-values of a family of tests: a family-wise error rate of at most alpha when each adjusted p
    is compared with alpha."""
    from statsmodels.stats.multitest import multipletests

    p_values = list(p_values)
    return [float(p) for p in multipletests(p_values, method="holm")[1]] if p_values else []


def sign_flip_p(differences) -> float:
    """The paired permutation test's two-sided p of a mean difference of zero: under the null each seed's difference
    is as likely negated, so every pattern of signs is equally likely. Exact up to EXACT_SEEDS seeds; its smallest p
    is 2 / 2^n (1/16 with 5 seeds)."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return float("nan")
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                 n_resamples=2 ** EXACT_SEEDS if len(d) <= EXACT_SEEDS else RESAMPLES,
                                 vectorized=True, rng=np.random.default_rng(RNG_SEED))
    return float(res.pvalue)


def bootstrap_interval(differences, confidence: float = 0.95) -> Interval:
    """The mean difference's BCa bootstrap interval over seeds (seeds resampled with replacement); NaN where it is
    undefined: under 3 seeds, or every difference equal."""
    d = np.asarray(differences, dtype=float)
    mean = float(d.mean()) if len(d) else float("nan")
    if len(d) < 3 or np.ptp(d) == 0:
        return Interval(mean, float("nan"), float("nan"), len(d), confidence)
    res = stats.bootstrap((d,), np.mean, confidence_level=confidence, method="BCa", n_resamples=RESAMPLES,
                          vectorized=True, rng=np.random.default_rng(RNG_SEED))
    low, high = res.confidence_interval
    return Interval(mean, float(low), float(high), len(d), confidence)


def share_won(differences) -> float:
    """The share of seeds on which b beat a (b - a > 0; a tie counts half): the probability, estimated over seeds,
    that a new seed's b beats its a."""
    d = np.asarray(differences, dtype=float)
    return float((np.sum(d > 0) + 0.5 * np.sum(d == 0)) / len(d)) if len(d) else float("nan")


def family_confidence(m: int, confidence: float = 0.95) -> float:
    """The level of each of m simultaneous intervals (Bonferroni's, as Holm's first step: alpha / m)."""
    return 1 - (1 - confidence) / max(m, 1)


def half_width(sd: float, n: int, confidence: float) -> float:
    """The half-width of a t-interval of a mean over n seeds whose values have this sd: the one t formula that the
    reports' intervals and the seed planning share."""
    return float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.inf


def seeds_for_half_width(sd: float, target: float, confidence: float, limit: int = 10_000) -> int | None:
    """The fewest seeds (at least 2) whose t-interval is at most ±target wide at this sd; None beyond `limit`."""
    if sd == 0:
        return 2
    return next((n for n in range(2, limit + 1) if half_width(sd, n, confidence) <= target), None)


def seeds_for_power(effect: float, sd: float, alpha: float, power: float = 0.8) -> int | None:
    """The fewest seeds for a two-sided paired t-test at `alpha` to reject with probability `power` when the mean
    difference is `effect` and the differences' sd is `sd` (statsmodels' TTestPower, Cohen's d = effect / sd);
    None without an effect."""
    from statsmodels.stats.power import TTestPower

    if effect == 0 or sd != sd or effect != effect:
        return None
    if sd == 0:
        return 2
    n = TTestPower().solve_power(effect_size=abs(effect) / sd, alpha=alpha, power=power, alternative="two-sided")
    return max(2, math.ceil(float(np.asarray(n).item()) - 1e-9))
