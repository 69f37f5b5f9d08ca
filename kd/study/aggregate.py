"""A study's scores over seeds, per (label budget, student depth): each model's mean with its t-interval, and each
method's student against the baseline and against kd (the `distilled` model), paired by seed, Holm-corrected over
the study's declared primary comparisons (or, where it declares none, over the methods compared with a reference)."""

from __future__ import annotations

from kd.runfolder import TEACHER, is_member, is_teacher
from kd.study.schema import EXPLORATORY, METRICS, PRIMARY, CellRecord, Comparison, Cost, Group, SeedTest

# scipy and statsmodels (kd.seeds) are imported by the functions that aggregate: `kd study --help` needs neither
BASELINE, KD = "baseline", "distilled"  # the model folders of the baseline and kd recipes
CONFIDENCE = 0.95


def _score(cell: CellRecord, model: str, metric: str) -> float:
    return getattr(cell.scores[model], metric)


def teacher_procedures(models: list[str]) -> list[str]:
    """The teachers made by a procedure (an ensemble, self-training), not the fine-tuned teacher or an ensemble's
    member: those compared with the fine-tuned teacher."""
    return [m for m in models if m.startswith(f"{TEACHER}-") and not is_member(m)]


def pairs(models: list[str], primary: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(model, reference) of every comparison the report makes: each method's student against the baseline and
    against kd, each teacher a procedure made against the fine-tuned teacher, and the primary ones."""
    students = [m for m in models if not is_teacher(m)]
    out = [(m, r) for r in (BASELINE, KD) if r in models for m in students if m not in (BASELINE, r)]
    if TEACHER in models:
        out += [(m, TEACHER) for m in teacher_procedures(models)]
    return list(dict.fromkeys([*out, *((m, r) for m, r in primary if m in models and r in models)]))


def families(models: list[str], primary: list[tuple[str, str]] = ()) -> list[tuple[str, list[tuple[str, str]]]]:
    """The families Holm adjusts over, (label, comparisons): with primary comparisons declared, those together and
    every other comparison alone (exploratory, unadjusted); without, the comparisons with one reference together,
    labelled by the reference."""
    every = pairs(models, list(primary))
    if primary:
        primaries = [p for p in every if p in primary]
        return ([(PRIMARY, primaries)] if primaries else []) + [(EXPLORATORY, [p]) for p in every if p not in primary]
    by_reference: dict[str, list[tuple[str, str]]] = {}
    for m, r in every:
        by_reference.setdefault(r, []).append((m, r))
    return list(by_reference.items())


def compare(part: list[CellRecord], models: list[str],
            primary: list[tuple[str, str]] = ()) -> dict[str, dict[str, Comparison]]:
    """Every comparison (`pairs`) paired by seed, Holm-adjusted within its family (`families`): model -> reference
    -> Comparison. The t-test, the sign-flip permutation test and the BCa bootstrap interval (on accuracy) are
    adjusted alike; a family of m comparisons has intervals at 1 - 0.05/m."""
    from kd.seeds import (
        bootstrap_interval,
        family_confidence,
        holm,
        mean_interval,
        paired_difference,
        share_won,
        sign_flip_p,
    )

    def per_seed(model: str, metric: str) -> list[float]:
        return [_score(c, model, metric) for c in part]

    out: dict[str, dict[str, Comparison]] = {}
    for family, members in families(models, primary):
        level = family_confidence(len(members), CONFIDENCE)
        diffs = {(m, r): {k: paired_difference(per_seed(r, k), per_seed(m, k)) for k in METRICS} for m, r in members}
        acc = {(m, r): [a - b for a, b in zip(per_seed(m, "accuracy"), per_seed(r, "accuracy"))] for m, r in members}
        ps = [d["accuracy"].p_value for d in diffs.values()]
        p_t = holm(ps) if all(p == p for p in ps) else [float("nan")] * len(ps)  # NaN: one seed, no test
        perms = [sign_flip_p(acc[pair]) for pair in members]
        p_perm = holm(perms) if all(p == p for p in perms) else perms
        for pair, pt, pp in zip(members, p_t, p_perm):
            m, r = pair
            out.setdefault(m, {})[r] = Comparison(r, diffs[pair], pt, mean_interval(acc[pair], level), family, pp,
                                                  bootstrap_interval(acc[pair], level), share_won(acc[pair]))
    return out


def costs(part: list[CellRecord], models: list[str]) -> dict[str, Cost]:
    """Each student's training time over the baseline's, per seed: alone, and with what its teacher cost (the
    fine-tuned teacher, shared by every method that learns from it, plus its own procedure: self-training rounds
    or calibration folds); and both in seconds."""
    from kd.seeds import mean_interval

    if BASELINE not in models:
        return {}
    out = {}
    for m in (x for x in models if not is_teacher(x)):
        alone, full, base = [], [], []  # seconds per seed: the student's, with its teacher's, the baseline's
        for c in part:
            b, own = c.times.get(BASELINE), c.times.get(m)
            if not b or not b.student or own is None or own.student is None:
                continue
            alone.append(own.student)
            full.append(own.student + own.teacher)
            base.append(b.student)
        if alone:
            out[m] = Cost(mean_interval([a / b for a, b in zip(alone, base)]),
                          mean_interval([f / b for f, b in zip(full, base)]), mean_interval(alone), mean_interval(full))
    return out


def aggregate(cells: list[CellRecord], primary: list[tuple[str, str]] = ()) -> list[Group]:
    """The finished cells grouped by (budget, depth), in the order they first appear; `primary`: the study's
    declared comparisons, (model, reference model)."""
    from kd.seeds import mean_interval

    finished = [c for c in cells if c.finished]
    keys = list(dict.fromkeys((c.budget, c.depth) for c in finished))
    groups = []
    for budget, depth in keys:
        part = sorted((c for c in finished if (c.budget, c.depth) == (budget, depth)), key=lambda c: c.seed)
        order = list(dict.fromkeys(m for c in part for m in c.scores))
        models = [m for m in order if all(m in c.scores for c in part)]
        means = {m: {k: mean_interval([_score(c, m, k) for c in part]) for k in METRICS} for m in models}
        comparisons = compare(part, models, primary)
        kd_vs_base = comparisons.get(KD, {}).get(BASELINE)
        groups.append(Group(budget, depth, part[0].labelled_rows, [c.seed for c in part], means,
                            kd_vs_base.differences if kd_vs_base else {},
                            [SeedTest(c.seed, c.mcnemar) for c in part], comparisons, costs(part, models)))
    return groups
