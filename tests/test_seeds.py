"""Statistics over seeds and the study's use of them: the permutation test and the BCa bootstrap against scipy and
a hand enumeration, `kd study --plan` against a hand computation on a planted pilot, the `precision:` stop on a
planted sequence of cells, and Holm over the declared primary comparisons only."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from kd.study.grid import StudyConfig
from kd.study.schema import CellRecord, Scores


def test_sign_flip_p_is_the_share_of_sign_patterns_as_extreme_as_the_data():
    from kd.seeds import sign_flip_p

    d = np.array([0.012, 0.020, -0.004, 0.015, 0.009, 0.011, -0.002, 0.018])
    means = [np.mean(d * np.array(signs)) for signs in itertools.product((1, -1), repeat=len(d))]
    by_hand = np.mean(np.abs(means) >= abs(d.mean()) - 1e-12)  # every one of the 2^8 patterns, written out
    assert sign_flip_p(d) == pytest.approx(by_hand)
    # 5 seeds all one way: the smallest p there is, 2 / 2^5 (no correction over six methods can reach it)
    assert sign_flip_p([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(2 / 32)
    assert math.isnan(sign_flip_p([0.01]))


def test_bca_bootstrap_and_the_share_won_on_a_planted_case():
    from kd.seeds import bootstrap_interval, share_won

    d = np.array([0.031, 0.012, 0.025, -0.006, 0.018, 0.022, 0.009, 0.027, 0.015, -0.001, 0.020, 0.011])
    mine = bootstrap_interval(d, 0.975)
    ref = stats.bootstrap((d,), np.mean, confidence_level=0.975, method="BCa", n_resamples=9_999,
                          rng=np.random.default_rng(0)).confidence_interval
    assert (mine.low, mine.high) == pytest.approx((ref.low, ref.high)) and mine.confidence == 0.975
    # the percentile interval of the same resamples is not it: BCa corrects for bias and skew
    pct = stats.bootstrap((d,), np.mean, confidence_level=0.975, method="percentile", n_resamples=9_999,
                          rng=np.random.default_rng(0)).confidence_interval
    assert (mine.low, mine.high) != pytest.approx((pct.low, pct.high), abs=1e-6)
    assert mine.low < d.mean() < mine.high
    assert share_won(d) == pytest.approx(10 / 12) and share_won([0.01, 0.0, -0.01, 0.02]) == pytest.approx(2.5 / 4)
    assert math.isnan(bootstrap_interval([0.01, 0.01, 0.01]).low)  # every difference equal: undefined


def _cells(diffs: dict[str, list[float]], base: list[float] | None = None) -> list[CellRecord]:
    """Finished cells, one per seed: the baseline at `base`, each model the baseline plus its planted difference
    (a model named `kd` here is the `distilled` folder)."""
    n = len(next(iter(diffs.values())))
    base = base or [0.80 + 0.01 * (i % 3) for i in range(n)]
    out = []
    for i in range(n):
        acc = {"baseline": base[i], **{m: base[i] + d[i] for m, d in diffs.items()}}
        scores = {m: Scores(accuracy=a, f1_macro=a, nll=0.5, ece=0.05, brier=0.2) for m, a in acc.items()}
        out.append(CellRecord(name=f"labels100-seed{i + 1}", budget=100, seed=i + 1, depth=None, run_dir="x",
                              overrides=[], state="finished", labelled_rows=100, scores=scores))
    return out


def _planted(mean: float, sd: float, n: int, seed: int = 0) -> list[float]:
    """n values whose mean and sd (ddof 1) are exactly these."""
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + sd * z)


def test_plan_gives_the_seeds_a_hand_computation_gives_on_a_planted_pilot():
    from kd.study.plan import plan_rows, render_plan

    study = StudyConfig(methods=["baseline", "kd", "ensemble-kd"], primary=[["ensemble-kd", "kd"], ["kd", "baseline"]],
                        name="planned")
    pilot = _cells({"distilled": _planted(0.020, 0.027, 5, 1), "ensemble-kd": _planted(0.026, 0.027, 5, 2)})
    rows = {r.comparison: r for r in plan_rows(study, pilot, target=1.0, effect=2.5)}
    r = rows["distilled − baseline"]
    assert r.sd == pytest.approx(2.7) and r.mean == pytest.approx(2.0) and r.alpha == pytest.approx(0.025)
    # by hand: the fewest n with t(1 - 0.025/2, n - 1) * 2.7 / sqrt(n) <= 1.0
    n = 2
    while stats.t.ppf(1 - 0.0125, n - 1) * 2.7 / math.sqrt(n) > 1.0:
        n += 1
    assert r.seeds_for_target == n
    assert r.half_width == pytest.approx(stats.t.ppf(1 - 0.0125, 4) * 2.7 / math.sqrt(5))
    # by hand: the fewest n whose two-sided paired t-test at 0.025 has power >= 0.8 at 2.5 pt (noncentral t)
    def power(k):
        crit, nc = stats.t.ppf(1 - 0.0125, k - 1), 2.5 / 2.7 * math.sqrt(k)
        return stats.nct.sf(crit, k - 1, nc) + stats.nct.cdf(-crit, k - 1, nc)
    k = 2
    while power(k) < 0.8:
        k += 1
    assert r.seeds_for_power == k and r.effect == 2.5
    # ensemble-kd − kd: the difference of the two planted columns, sd computed here
    other = np.subtract(_planted(0.026, 0.027, 5, 2), _planted(0.020, 0.027, 5, 1))
    assert rows["ensemble-kd − distilled"].sd == pytest.approx(100 * np.std(other, ddof=1))
    text = render_plan(study, list(rows.values()), "pilot", 0.8)
    assert "| distilled − baseline | 5 | +2.00 | 2.70 |" in text and f"| {n} | +2.50 | {k} |" in text


def test_precision_adds_seeds_until_every_primary_interval_is_narrow_enough():
    """A planted sequence of seeds: the stop comes at the first n whose interval (97.5 %, two primaries) is at
    most ±precision, computed here by hand; and at max_seeds where it never is."""
    from kd.study.plan import next_seed

    rng = np.random.default_rng(3)
    kd_d, ens_d = list(0.02 + 0.012 * rng.standard_normal(40)), list(0.005 + 0.008 * rng.standard_normal(40))
    study = StudyConfig(seeds=[1, 2, 3], methods=["baseline", "kd", "ensemble-kd"],
                        primary=[["kd", "baseline"], ["ensemble-kd", "kd"]], precision=1.0, max_seeds=40)

    def width(d):
        return 100 * stats.t.ppf(1 - 0.0125, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d))

    expected = next(n for n in range(3, 41) if max(width(kd_d[:n]), width(np.subtract(ens_d[:n], 0)[:n])) <= 1.0)
    n = 3
    while (seed := next_seed(study, _cells({"distilled": kd_d[:n], "ensemble-kd": np.add(kd_d, ens_d)[:n]}))):
        assert seed == n + 1
        n += 1
    assert n == expected
    capped = StudyConfig(**{**study.__dict__, "precision": 0.1, "max_seeds": 6})
    n = 3
    while next_seed(capped, _cells({"distilled": kd_d[:n], "ensemble-kd": np.add(kd_d, ens_d)[:n]})):
        n += 1
    assert n == 6
    assert next_seed(StudyConfig(), _cells({"distilled": kd_d[:3]})) is None  # no precision: no seed added


def test_holm_covers_the_primary_comparisons_only_and_the_rest_are_exploratory():
    from kd.config import RunConfig
    from kd.study.aggregate import aggregate
    from kd.study.tables import render_methods, render_primary

    rng = np.random.default_rng(5)
    diffs = {m: list(0.01 * (i + 1) + 0.01 * rng.standard_normal(12)) for i, m in
             enumerate(["distilled", "pseudo-label", "ensemble-kd"])}
    cells = _cells(diffs)
    primary = [("ensemble-kd", "distilled"), ("pseudo-label", "baseline")]
    (g,) = aggregate(cells, primary)
    acc = {m: np.array([c.scores[m].accuracy for c in cells]) for m in ("baseline", *diffs)}
    raw = [stats.ttest_rel(acc[m], acc[r]).pvalue for m, r in primary]
    assert [g.comparisons[m][r].p_holm for m, r in primary] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    for m, r in primary:
        c = g.comparisons[m][r]
        assert c.primary and c.adjusted.confidence == pytest.approx(0.975) and c.bootstrap.confidence == 0.975
    # exploratory: unadjusted p and interval
    ex = g.comparisons["distilled"]["baseline"]
    assert ex.family == "exploratory" and not ex.primary
    assert ex.p_holm == pytest.approx(stats.ttest_rel(acc["distilled"], acc["baseline"]).pvalue)
    assert ex.adjusted.confidence == 0.95
    assert ex.adjusted.low == pytest.approx(ex.differences["accuracy"].difference.low)
    text = "\n".join(render_primary([g], RunConfig()) + render_methods([g], RunConfig()))
    assert "## Primary comparisons" in text and "| ensemble-kd − distilled |" in text
    assert "every other comparison is exploratory" in text and "★" in text
    # the whole report: distilled − baseline is not primary here, so its verdicts say they are exploratory
    from kd.study.report import render_study
    from kd.study.schema import StudyRecord

    for c in cells:
        c.student_rows, c.test_rows = 4000, 4000
    record = StudyRecord("planted", StudyConfig(primary=[["ensemble-kd", "kd"], ["pseudo-label", "baseline"]]),
                         "cpu", cells, [g])
    whole = render_study(record, RunConfig())
    assert "exploratory" in whole.split("## In words")[1].split("##")[0]
    assert "| **distilled better** |" not in whole
    # without primaries: Holm over the methods compared with each reference, as before
    (plain,) = aggregate(cells)
    raw = [stats.ttest_rel(acc[m], acc["baseline"]).pvalue for m in diffs]
    assert [plain.comparisons[m]["baseline"].p_holm for m in diffs] == pytest.approx(
        list(multipletests(raw, method="holm")[1]))
    assert plain.comparisons["distilled"]["baseline"].family == "baseline"


def test_a_precision_study_runs_the_seeds_it_adds_and_a_stopped_one_resumes_them(tmp_path, monkeypatch):
    """run_study's loop with the cells' training replaced by planted records: it runs seed after seed until the
    primary interval is narrow enough, and a study stopped after that finds every seed it added."""
    import dataclasses

    import kd.study.run as run
    from kd.study.cell import CellJob
    from kd.study.grid import cells
    from kd.study.record import cell_record_path, write_cell_record

    d = [0.02, 0.05, -0.01, 0.03, 0.02, 0.025, 0.018, 0.022, 0.02, 0.021, 0.019, 0.02, 0.02, 0.02]
    planted = {c.seed: c for c in _cells({"distilled": d})}
    study = StudyConfig(seeds=[1, 2, 3], methods=["baseline", "kd"], primary=[["kd", "baseline"]], precision=1.0,
                        max_seeds=len(d), name="planted")
    expected = next(n for n in range(3, len(d) + 1)
                    if 100 * stats.t.ppf(0.975, n - 1) * np.std(d[:n], ddof=1) / math.sqrt(n) <= 1.0)
    ran = []

    def plan(study, root, data, sections):
        grid = cells(study)
        return [CellJob(study.name, c, None, root, None, None, i, len(grid), cell_record_path(root, c).is_file())
                for i, c in enumerate(grid, 1)]

    def run_cell(job):
        if not job.finished:
            ran.append(job.cell.seed)
            write_cell_record(job.root, job.cell, dataclasses.replace(planted[job.cell.seed], name=job.cell.name))

    monkeypatch.setattr(run, "plan", plan)
    monkeypatch.setattr(run, "run_cell", run_cell)
    monkeypatch.setattr(run, "report_study", lambda study, root: study)
    done = run.run_study(study, tmp_path, None, {})
    assert done.seeds == list(range(1, expected + 1)) and ran == done.seeds and expected > 3
    assert run.seeds_so_far(study, tmp_path).seeds == done.seeds  # a second run starts where this one stopped
    ran.clear()
    assert run.run_study(study, tmp_path, None, {}).seeds == done.seeds and ran == []
