"""A study's scores over seeds, per (label budget, student depth): each model's mean with its t-interval, and each
method's student against the baseline and against kd (the `distilled` model), paired by seed, Holm-corrected for
the number of methods compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# scipy and statsmodels (kd.metrics) are imported by the functions that aggregate: `kd study --help` needs neither
METRICS = ("accuracy", "f1_macro", "nll", "ece", "brier")
BASELINE, KD = "baseline", "distilled"  # the model folders of the baseline and kd recipes
CONFIDENCE = 0.95


@dataclass
class Comparison:
    """One method's student against a reference model (baseline or kd), paired by seed."""

    reference: str
    differences: dict[str, Any]  # metric -> PairedDifference (as a dict) of method - reference
    p_holm: float  # the accuracy t-test's p, Holm-adjusted over the methods compared with this reference
    # the accuracy difference's interval at 1 - 0.05 / m (m methods compared): Bonferroni's simultaneous interval,
    # which excludes 0 only where Holm's first step would reject too, so it never overstates a gain
    adjusted: dict[str, Any]


@dataclass
class Group:
    """One (label budget, student depth) over its seeds."""

    budget: int | str
    depth: str | None
    labelled_rows: int
    seeds: list[int]
    means: dict[str, dict[str, Any]]  # model -> metric -> Interval (as a dict)
    differences: dict[str, Any]  # metric -> PairedDifference of distilled - baseline (as a dict)
    mcnemar: list[dict]  # per seed, distilled against baseline
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> reference -> Comparison
    # model -> training time over the baseline's: the student alone, and with the teachers it needed
    cost: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def students(self) -> list[str]:
        return [m for m in self.means if not m.startswith("teacher")]

    def best(self) -> str | None:
        """The student with the highest mean accuracy."""
        return max(self.students, key=lambda m: self.means[m]["accuracy"]["mean"], default=None)


def compare(part: list[dict], models: list[str], reference: str) -> dict[str, Comparison]:
    from kd.metrics import holm, paired_difference

    others = [m for m in models if not m.startswith("teacher") and m not in (BASELINE, reference)]
    if reference not in models or not others:
        return {}
    diffs = {m: {k: paired_difference([c["scores"][reference][k] for c in part], [c["scores"][m][k] for c in part])
                 for k in METRICS} for m in others}
    ps = [d["accuracy"].p_value for d in diffs.values()]
    adjusted_p = holm(ps) if all(p == p for p in ps) else [float("nan")] * len(ps)  # NaN: one seed, no test
    level = 1 - (1 - CONFIDENCE) / len(others)
    out = {}
    for (m, d), p in zip(diffs.items(), adjusted_p):
        wide = paired_difference([c["scores"][reference]["accuracy"] for c in part],
                                 [c["scores"][m]["accuracy"] for c in part], level).difference
        out[m] = Comparison(reference, {k: asdict(v) for k, v in d.items()}, p, asdict(wide))
    return out


def costs(part: list[dict], models: list[str]) -> dict[str, dict[str, Any]]:
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
            t = c.get("times", {})
            base = t.get(BASELINE, {}).get("student")
            own = t.get(m, {})
            if not base or own.get("student") is None:
                continue
            alone.append(own["student"] / base)
            full.append((own["student"] + own.get("teacher", 0.0)) / base)
        if alone:
            out[m] = {"alone": asdict(mean_interval(alone)), "with_teacher": asdict(mean_interval(full))}
    return out


def aggregate(record: dict) -> list[Group]:
    from kd.metrics import mean_interval

    finished = [c for c in record["cells"] if c.get("state") == "finished"]
    keys = list(dict.fromkeys((c["budget"], c["depth"]) for c in finished))
    groups = []
    for budget, depth in keys:
        part = sorted((c for c in finished if (c["budget"], c["depth"]) == (budget, depth)), key=lambda c: c["seed"])
        order = list(dict.fromkeys(m for c in part for m in c["scores"]))
        models = [m for m in order if all(m in c["scores"] for c in part)]
        means = {m: {k: asdict(mean_interval([c["scores"][m][k] for c in part])) for k in METRICS} for m in models}
        comparisons: dict[str, dict[str, Any]] = {}
        for reference in (BASELINE, KD):
            for m, comp in compare(part, models, reference).items():
                comparisons.setdefault(m, {})[reference] = asdict(comp)
        kd_vs_base = comparisons.get(KD, {}).get(BASELINE)
        groups.append(Group(budget, depth, part[0]["labelled_rows"], [c["seed"] for c in part], means,
                            kd_vs_base["differences"] if kd_vs_base else {},
                            [{"seed": c["seed"], **(c.get("mcnemar") or {})} for c in part], comparisons,
                            costs(part, models)))
    return groups
