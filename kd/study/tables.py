"""The method axis of a study's report: its declared primary comparisons, every method against the baseline and
kd, and the teachers a procedure made; with the number formats the whole report shares."""

from __future__ import annotations

from kd.config import RunConfig
from kd.intervals import Interval
from kd.runfolder import TEACHER, is_member
from kd.study.aggregate import BASELINE, KD, Group, teacher_procedures
from kd.study.grid import ALL
from kd.study.schema import Comparison


def fmt_ci(d: Interval, scale: float = 1, spec: str = ".2f") -> str:
    if d.n < 2:
        return f"{scale * d.mean:{spec}}"
    return f"{scale * d.mean:{spec}} [{scale * d.low:{spec}}, {scale * d.high:{spec}}]"


def fmt_p(p: float) -> str:
    return "–" if p != p else f"{p:.2g}"


def budget_label(g: Group) -> str:
    return f"all ({g.labelled_rows:,})" if g.budget == ALL else f"{g.labelled_rows:,}"


def _star(c: Comparison) -> str:
    return " ★" if c.primary else ""


def render_primary(groups: list[Group], cfg: RunConfig) -> list[str]:
    """The study's declared comparisons: the t-interval and p Holm-adjusted over them, and beside them the sign-flip
    permutation test (Holm-adjusted alike), the BCa bootstrap interval at the same level and the seeds won."""
    rows = [(g, m, c) for g in groups for m, by in g.comparisons.items() for c in by.values() if c.primary]
    if not rows:
        return []
    m = sum(1 for g0, _, _ in rows if g0 is rows[0][0])
    out = ["", "## Primary comparisons", "",
           f"The {m} comparison(s) the study declares, paired by seed. Holm adjusts over them alone; the interval "
           f"is the simultaneous t-interval at {100 * (1 - 0.05 / m):.4g} % (Bonferroni), and the BCa bootstrap "
           "interval over seeds is at the same level. p (permutation): the exact sign-flip test, Holm-adjusted "
           "alike. Won: the share of seeds on which the method beat its reference.", "",
           "| labels | depth | comparison | difference (pt) | interval | p (t, Holm) | p (permutation, Holm) | "
           "bootstrap interval | won | verdict |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for g, model, c in rows:
        a = c.adjusted
        verdict = ("one seed: no interval" if a.n < 2 else "**a gain**" if a.low > 0 else "**a loss**" if a.high < 0
                   else "noise (the interval includes 0)")
        if c.tests_disagree:
            verdict += "; t and the permutation test disagree at 0.05"
        boot = fmt_ci(c.bootstrap, 100, "+.2f") if c.bootstrap and c.bootstrap.low == c.bootstrap.low else "–"
        out.append(f"| {budget_label(g)} | {g.depth or cfg.student.init} | {model} − {c.reference} | "
                   f"{100 * a.mean:+.2f} | ±{100 * (a.high - a.low) / 2:.2f}: {fmt_ci(a, 100, '+.2f')} | "
                   f"{fmt_p(c.p_holm)} | "
                   f"{fmt_p(c.p_permutation)} | {boot} | {c.won:.2f} | {verdict} |")
    return out


def _time(ratio: Interval, seconds: Interval | None) -> str:
    """0.56 (105 s): the ratio to the baseline's time, and the seconds where the record kept them."""
    return f"{ratio.mean:.2f}" + (f" ({seconds.mean:,.0f} s)" if seconds else "")


def render_methods(groups: list[Group], cfg: RunConfig, always: bool = False) -> list[str]:
    """The method axis: every method's student per (budget, depth) against the baseline and against kd, paired by
    seed and Holm-corrected; its calibration and what it costs; and the best method of each budget (`always`: even
    for baseline and kd alone, whose comparison the report's other tables give)."""
    if not always and not any(len(g.students) > 2 for g in groups):
        return []
    declared = any(c.primary for g in groups for by in g.comparisons.values() for c in by.values())
    family = ("the primary comparisons (marked ★) Holm-adjusted over them, with their simultaneous (Bonferroni) "
              "interval at 1 − 0.05/m; every other comparison is exploratory, its p and interval unadjusted: a lead "
              "to test in a study of its own, not a finding" if declared else
              "Holm-adjusted over the methods compared with the same reference; the adjusted interval is the "
              "simultaneous (Bonferroni) one at 1 − 0.05/m, which excludes 0 only where the Holm test rejects too")
    out = ["", "## Methods", "",
           f"Each method's student against the baseline and against kd (`distilled`), paired by seed. p: paired "
           f"t-test on accuracy, {family}. Time: the student's training time over the baseline's, and its mean "
           "seconds as the cells measured them; with teacher: adding the teacher it learns from (shared by the "
           "methods that use it) and its own procedure (self-training, ensemble members, calibration folds).", ""]
    for g in groups:
        seeds = len(g.seeds)
        out += [f"### {budget_label(g)} labelled rows, {g.depth or cfg.student.init}, {seeds} seed(s)", "",
                "| method | accuracy (%) | − baseline (pt) | adjusted interval | p | − kd (pt) | p | "
                "NLL | ECE | Brier | time × baseline | with teacher |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in g.students:
            mean, comp, cost = g.means[m], g.comparisons.get(m, {}), g.cost.get(m)
            vb, vk = comp.get(BASELINE), comp.get(KD)
            row = [m, fmt_ci(mean["accuracy"], 100)]
            row += ([fmt_ci(vb.differences["accuracy"].difference, 100, "+.2f"), fmt_ci(vb.adjusted, 100, "+.2f"),
                     fmt_p(vb.p_holm) + _star(vb)] if vb else ["–"] * 3)
            row += ([fmt_ci(vk.differences["accuracy"].difference, 100, "+.2f"), fmt_p(vk.p_holm) + _star(vk)] if vk
                    else ["–"] * 2)
            row += [fmt_ci(mean[k], 1, ".4f") for k in ("nll", "ece", "brier")]
            row += ([_time(cost.alone, cost.seconds), _time(cost.with_teacher, cost.seconds_with_teacher)] if cost
                    else ["–"] * 2)
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out += ["### The best method per budget", "",
            "| labels | depth | best method | accuracy (%) | − baseline (pt), adjusted interval | p (Holm) | verdict |",
            "|---:|---|---|---:|---:|---:|---|"]
    for g in groups:
        best = g.best()
        vb = g.comparisons.get(best, {}).get(BASELINE)
        verdict = "no method beats the baseline" if best == BASELINE else "–" if not vb else (
            "one seed: no interval" if vb.adjusted.n < 2 else
            "**a gain** (the adjusted interval excludes 0)" if vb.adjusted.low > 0 else
            "**a loss**" if vb.adjusted.high < 0 else "noise (the adjusted interval includes 0)")
        if vb and declared and not vb.primary and best != BASELINE:
            verdict = "exploratory (not a primary comparison): " + verdict.replace("adjusted", "unadjusted")
        out.append(f"| {budget_label(g)} | {g.depth or cfg.student.init} | {best} | "
                   f"{fmt_ci(g.means[best]['accuracy'], 100)} | "
                   + (f"{fmt_ci(vb.adjusted, 100, '+.2f')} | {fmt_p(vb.p_holm)}" if vb else "– | –")
                   + f" | {verdict} |")
    return out


def render_teachers(groups: list[Group]) -> list[str]:
    """The teachers a procedure made (an ensemble, self-training) against the fine-tuned teacher, paired by seed,
    with each ensemble member's scores and their mean (the fine-tuned teacher is the first member)."""
    if not any(teacher_procedures(list(g.means)) for g in groups):
        return []
    out = ["", "## Teachers", "",
           "The teachers that a procedure made, against the fine-tuned teacher, paired by seed (p: paired t-test on "
           "accuracy, Holm-adjusted over the teachers compared); and each ensemble member alone. ECE and NLL: lower is "
           "better.", ""]
    for g in groups:
        made = teacher_procedures(list(g.means))
        if not made:
            continue
        out += [f"### {budget_label(g)} labelled rows, {len(g.seeds)} seed(s)", "",
                "| teacher | accuracy (%) | − teacher (pt) | p (Holm) | ECE | − teacher ECE | NLL | − teacher NLL |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        members = [m for m in g.means if m == TEACHER or is_member(m, TEACHER)]
        for m in [TEACHER, *made, *(x for x in members if x != TEACHER)]:
            mean, vt = g.means[m], g.comparisons.get(m, {}).get(TEACHER)
            row = [m, fmt_ci(mean["accuracy"], 100)]
            row += [fmt_ci(vt.differences["accuracy"].difference, 100, "+.2f"), fmt_p(vt.p_holm)] if vt else ["–"] * 2
            for k in ("ece", "nll"):
                row += [fmt_ci(mean[k], 1, ".4f"), fmt_ci(vt.differences[k].difference, 1, "+.4f") if vt else "–"]
            out.append("| " + " | ".join(row) + " |")
        if len(members) > 1:
            out.append(f"| members' mean ({len(members)}) | "
                       f"{100 * sum(g.means[m]['accuracy'].mean for m in members) / len(members):.2f} | – | – | "
                       f"{sum(g.means[m]['ece'].mean for m in members) / len(members):.4f} | – | "
                       f"{sum(g.means[m]['nll'].mean for m in members) / len(members):.4f} | – |")
        out.append("")
    return out
