"""A study's scores over seeds: each model's mean with its t-interval, and the paired difference distilled -
baseline per (label budget, student depth)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kd.runfolder import MODEL_NAMES

# scipy (kd.metrics) is imported by the functions that aggregate: `kd study --help` and the study's checks need none
METHODS = ("baseline", "distilled")  # compared seed by seed; the teacher is reported beside them
METRICS = ("accuracy", "f1_macro", "nll", "ece", "brier")


@dataclass
class Group:
    """One (label budget, student depth) over its seeds."""

    budget: int | str
    depth: str | None
    labelled_rows: int
    seeds: list[int]
    means: dict[str, dict[str, Any]]  # model -> metric -> Interval (as a dict)
    differences: dict[str, Any]  # metric -> PairedDifference of distilled - baseline (as a dict)
    mcnemar: list[dict]  # per seed


def aggregate(record: dict) -> list[Group]:
    from kd.metrics import mean_interval, paired_difference

    finished = [c for c in record["cells"] if c.get("state") == "finished"]
    keys = list(dict.fromkeys((c["budget"], c["depth"]) for c in finished))
    groups = []
    for budget, depth in keys:
        part = sorted((c for c in finished if (c["budget"], c["depth"]) == (budget, depth)), key=lambda c: c["seed"])
        models = [m for m in MODEL_NAMES if all(m in c["scores"] for c in part)]
        means = {m: {k: asdict(mean_interval([c["scores"][m][k] for c in part])) for k in METRICS} for m in models}
        differences = {}
        if set(METHODS) <= set(models):
            for k in METRICS:
                diff = paired_difference([c["scores"]["baseline"][k] for c in part],
                                         [c["scores"]["distilled"][k] for c in part])
                differences[k] = asdict(diff)
        groups.append(Group(budget, depth, part[0]["labelled_rows"], [c["seed"] for c in part], means, differences,
                            [{"seed": c["seed"], **(c.get("mcnemar") or {})} for c in part]))
    return groups
