"""How many seeds a study's question needs. `kd study NAME --plan` reads a pilot (any finished study whose cells
hold the primary comparisons' models) and gives, per primary comparison, the seeds for an interval of a target
half-width and for 80 % power against an effect; a study with `precision:` adds seeds, one at a time, until every
primary interval is that narrow (`next_seed`).

Both read the comparison's family as the report does: with m primary comparisons the interval is the simultaneous
one at 1 - 0.05/m and the test is at alpha = 0.05/m (Holm's first step, the strictest it takes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kd.study.aggregate import CONFIDENCE, aggregate
from kd.study.grid import StudyConfig
from kd.study.schema import CellRecord


@dataclass
class PlanRow:
    """One primary comparison in one (budget, depth) of the pilot; differences in accuracy points."""

    label: str  # budget and depth
    comparison: str  # "model − reference"
    pilot_seeds: int
    mean: float | None  # None: the pilot lacks one of the two models
    sd: float | None
    half_width: float | None  # the pilot's own interval, ±
    alpha: float
    target: float  # the half-width asked for, ±
    seeds_for_target: int | None
    effect: float | None  # the effect the power is for (default: the pilot's mean)
    seeds_for_power: int | None


def plan_rows(study: StudyConfig, pilot: list[CellRecord], target: float, effect: float | None = None,
              power: float = 0.8) -> list[PlanRow]:
    from kd.seeds import family_confidence, half_width, seeds_for_half_width, seeds_for_power

    primary = study.primary_models()
    if not primary:
        return []
    level = family_confidence(len(primary), CONFIDENCE)
    alpha = 1 - level
    rows = []
    for g in aggregate(pilot, primary):
        label = f"{g.labelled_rows:,} labels" + (f", {g.depth}" if g.depth else "")
        for model, reference in primary:
            comp = g.comparisons.get(model, {}).get(reference)
            if comp is None:
                rows.append(PlanRow(label, f"{model} − {reference}", len(g.seeds), None, None, None, alpha, target,
                                    None, effect, None))
                continue
            diff = comp.differences["accuracy"]
            sd, mean = 100 * diff.sd, 100 * diff.difference.mean
            size = effect if effect is not None else mean
            rows.append(PlanRow(label, f"{model} − {reference}", len(g.seeds), mean, sd,
                                half_width(sd, len(g.seeds), level), alpha, target,
                                seeds_for_half_width(sd, target, level), size,
                                seeds_for_power(size, sd, alpha, power)))
    return rows


def render_plan(study: StudyConfig, rows: list[PlanRow], pilot: str, power: float) -> str:
    if not rows:
        return (f"kd: study {study.name} declares no primary comparisons (`primary:` in {study.file}); "
                "--plan sizes those")
    r0 = rows[0]
    lines = [f"Seeds for study {study.name}, from the pilot {pilot}: {len(study.primary)} primary comparison(s), "
             f"each interval at {100 * (1 - r0.alpha):.4g} % and each test at alpha = {r0.alpha:.4g} (Holm's first "
             "step). sd: of the per-seed differences in the pilot; effect: --effect, else the pilot's mean difference "
             "(an estimate from few seeds: treat its power as optimistic).", "",
             f"| where | comparison | pilot seeds | mean (pt) | sd (pt) | pilot ± | seeds for ±{r0.target:g} | "
             f"effect (pt) | seeds for {power:.0%} power |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.mean is None:
            lines.append(f"| {r.label} | {r.comparison} | {r.pilot_seeds} | not in the pilot | | | | | |")
            continue
        lines.append(f"| {r.label} | {r.comparison} | {r.pilot_seeds} | {r.mean:+.2f} | {r.sd:.2f} | "
                     f"{r.half_width:.2f} | {r.seeds_for_target or 'over 10,000'} | {r.effect:+.2f} | "
                     f"{r.seeds_for_power or '–'} |")
    return "\n".join(lines) + "\n"


def primary_half_widths(study: StudyConfig, cells: list[CellRecord]) -> list[float]:
    """Every primary comparison's interval half-width (accuracy points) over the finished cells, per (budget,
    depth), as the report gives it (the t-interval at 1 - 0.05/m); infinite under 2 seeds. The widths alone: no
    difference, no p-value."""
    import numpy as np

    from kd.seeds import family_confidence, half_width

    primary = study.primary_models()
    level = family_confidence(len(primary), CONFIDENCE)
    out = []
    for key in dict.fromkeys((c.budget, c.depth) for c in cells):
        part = [c for c in cells if (c.budget, c.depth) == key]
        for model, reference in primary:
            d = [c.scores[model].accuracy - c.scores[reference].accuracy for c in part
                 if model in c.scores and reference in c.scores]
            out.append(half_width(100 * float(np.std(d, ddof=1)), len(d), level) if len(d) > 1 else math.inf)
    return out


def next_seed(study: StudyConfig, cells: list[CellRecord]) -> int | None:
    """The seed a `precision:` study runs next, or None where it stops: every primary interval at most ±precision,
    or max_seeds seeds finished. Only the intervals' widths decide, never a difference or a p-value."""
    finished = [c for c in cells if c.finished]
    seeds = sorted({c.seed for c in finished})
    if study.precision is None or len(seeds) >= (study.max_seeds or 0):
        return None
    widths = primary_half_widths(study, finished)
    if widths and max(widths) <= study.precision:
        return None
    return max([*seeds, *study.seeds]) + 1
