"""A study's scores over seeds, per (label budget, student depth): each model's mean with its t-interval, and each
method's student against the baseline and against kd (the `distilled` model), paired by seed, Holm-corrected for
the number of methods compared."""

from __future__ import annotations

from kd.study.schema import METRICS, CellRecord, Comparison, Cost, Group, SeedTest

# scipy and statsmodels (kd.metrics) are imported by the functions that aggregate: `kd study --help` needs neither
BASELINE, KD = "baseline", "distilled"  # the model folders of the baseline and kd recipes
TEACHER, MEMBER = "teacher", "teacher-member"  # the fine-tuned teacher's folder; an ensemble member's (kd.run.ensemble)
CONFIDENCE = 0.95


def _score(cell: CellRecord, model: str, metric: str) -> float:
    return getattr(cell.scores[model], metric)


def teacher_procedures(models: list[str]) -> list[str]:
    """The teachers made by a procedure (an ensemble, self-training), not the fine-tuned teacher or an ensemble's
    member: those compared with the fine-tuned teacher."""
    return [m for m in models if m.startswith("teacher-") and "-member" not in m]


def compare(part: list[CellRecord], models: list[str], reference: str,
            others: list[str] | None = None) -> dict[str, Comparison]:
    """Each of `others` (default: every method's student but the baseline) against `reference`, paired by seed,
    Holm-adjusted over them."""
    from kd.metrics import holm, paired_difference

    if others is None:
        others = [m for m in models if not m.startswith("teacher") and m not in (BASELINE, reference)]
    if reference not in models or not others:
        return {}
    diffs = {m: {k: paired_difference([_score(c, reference, k) for c in part], [_score(c, m, k) for c in part])
                 for k in METRICS} for m in others}
    ps = [d["accuracy"].p_value for d in diffs.values()]
    adjusted_p = holm(ps) if all(p == p for p in ps) else [float("nan")] * len(ps)  # NaN: one seed, no test
    level = 1 - (1 - CONFIDENCE) / len(others)
    out = {}
    for (m, d), p in zip(diffs.items(), adjusted_p):
        wide = paired_difference([_score(c, reference, "accuracy") for c in part],
                                 [_score(c, m, "accuracy") for c in part], level).difference
        out[m] = Comparison(reference, d, p, wide)
    return out


def costs(part: list[CellRecord], models: list[str]) -> dict[str, Cost]:
    """Each student's training time over the baseline's, per seed: alone, and with what its teacher cost (the
    fine-tuned teacher, shared by every method that learns from it, plus its own procedure: self-training rounds
    or calibration folds)."""
    from kd.metrics import mean_interval

    if BASELINE not in models:
        return {}
    out = {}
    for m in (x for x in models if not x.startswith("teacher")):
        alone, full = [], []
        for c in part:
            base, own = c.times.get(BASELINE), c.times.get(m)
            if not base or not base.student or own is None or own.student is None:
                continue
            alone.append(own.student / base.student)
            full.append((own.student + own.teacher) / base.student)
        if alone:
            out[m] = Cost(mean_interval(alone), mean_interval(full))
    return out


def aggregate(cells: list[CellRecord]) -> list[Group]:
    """The finished cells grouped by (budget, depth), in the order they first appear."""
    from kd.metrics import mean_interval

    finished = [c for c in cells if c.finished]
    keys = list(dict.fromkeys((c.budget, c.depth) for c in finished))
    groups = []
    for budget, depth in keys:
        part = sorted((c for c in finished if (c.budget, c.depth) == (budget, depth)), key=lambda c: c.seed)
        order = list(dict.fromkeys(m for c in part for m in c.scores))
        models = [m for m in order if all(m in c.scores for c in part)]
        means = {m: {k: mean_interval([_score(c, m, k) for c in part]) for k in METRICS} for m in models}
        comparisons: dict[str, dict[str, Comparison]] = {}
        for reference in (BASELINE, KD):
            for m, comp in compare(part, models, reference).items():
                comparisons.setdefault(m, {})[reference] = comp
        for m, comp in compare(part, models, TEACHER, teacher_procedures(models)).items():
            comparisons.setdefault(m, {})[TEACHER] = comp
        kd_vs_base = comparisons.get(KD, {}).get(BASELINE)
        groups.append(Group(budget, depth, part[0].labelled_rows, [c.seed for c in part], means,
                            kd_vs_base.differences if kd_vs_base else {},
                            [SeedTest(c.seed, c.mcnemar) for c in part], comparisons, costs(part, models)))
    return groups
