"""A study's report: study.md, its plots, and the aggregates written back into study.json."""

from __future__ import annotations

from pathlib import Path

from kd.atomic import write_bytes, write_text
from kd.config import RunConfig, build_dataclass
from kd.errors import KdError
from kd.intervals import Interval, PairedDifference
from kd.runfolder import DEFAULT_MODELS, RunFolder
from kd.study.aggregate import BASELINE, KD, MEMBER, TEACHER, Group, aggregate, teacher_procedures
from kd.study.grid import ALL
from kd.study.record import StudyRecord, read_record, write_record_file

# scikit-learn (kd.metrics) and matplotlib are imported by the functions that plot: `kd study --help` needs neither

def write_study_report(root: Path) -> StudyRecord:
    from kd.metrics import ECE_BINS

    record = read_record(root)
    if record is None or not record.cells:
        raise KdError(f"{root}: no study.json with cells; run `kd study <name>` first")
    record.groups = aggregate(record.cells)
    write_record_file(root, record)
    first = record.finished[0]
    cfg = build_dataclass(RunConfig, RunFolder(root / first.run_dir).read_manifest()["config"])
    text = render_study(record, cfg)
    write_text(root / "study.md", text)
    write_bytes(root / "study.png", plot_metric(record.groups, [("accuracy", "test accuracy (%)", 100)]))
    write_bytes(root / "study_calibration.png",
                plot_metric(record.groups, [("nll", "test NLL (nats per row)", 1),
                                            ("ece", f"test ECE ({ECE_BINS} bins)", 1)]))
    print(text)
    return record


def _ci(d: Interval, scale: float = 1, spec: str = ".2f") -> str:
    if d.n < 2:
        return f"{scale * d.mean:{spec}}"
    return f"{scale * d.mean:{spec}} [{scale * d.low:{spec}}, {scale * d.high:{spec}}]"


def _verdict(diff: PairedDifference) -> str:
    """The accuracy difference's verdict (higher is better)."""
    d = diff.difference
    if d.n < 2:
        return "one seed: no interval"
    if not d.excludes_zero:
        return "noise (CI includes 0)"
    return "**distilled better**" if d.mean > 0 else "**distilled worse**"


def _label(g: Group) -> str:
    return f"all ({g.labelled_rows:,})" if g.budget == ALL else f"{g.labelled_rows:,}"


def render_study(record: StudyRecord, cfg: RunConfig) -> str:
    from kd.metrics import ECE_BINS

    groups, cells_done = record.groups, record.finished
    planned = len(record.cells) - len(cells_done)
    first = cells_done[0]
    st, tt = cfg.student.train, cfg.teacher.train
    lines = [
        f"# kd-bench study `{record.study}`: when does distillation pay?", "",
        f"{len(cells_done)} cells (label budget × seed × student depth), each an ordinary run folder under "
        f"`cells/`{f'; {planned} more planned, not run yet' if planned else ''}. Base preset "
        f"`{record.config.base}`, CPU: {record.cpu}. Scores are on {first.test_rows:,} test rows, "
        f"the same for every cell. Intervals are 95 % t-intervals over seeds; differences are paired by seed (the "
        f"same seed gives the same labelled rows, data order and initialisation).", "",
        "**Protocol.**",
        f"- The students' {first.student_rows:,} train rows: under a label budget, that many carry labels (a "
        "stratified choice made by the seed). The baseline trains on them only. The distilled student trains on "
        "them (cross-entropy + soft targets) and on the rest, the unlabelled transfer pool, from the teacher's soft "
        f"targets alone (T = {cfg.distill.temperature}, alpha = {cfg.distill.alpha}).",
        "- The teacher of a budget and seed is fine-tuned on that budget's labelled rows only. Cells that would "
        "train the same teacher share it and its logits.",
        f"- Checkpoints: teacher `{tt.select}`, students `{st.select}`"
        + (" (the final weights after a fixed number of steps: no validation label chooses anything)"
           if "best" not in (tt.select, st.select) else
           f" (`best`: the validation pass with the best accuracy, on {cfg.data.validation_rows:,} labelled "
           "validation rows that a budget does not count)")
        + f". Students: {st.epochs:g} epoch(s) of their rows, at least {st.min_steps} steps; teacher: "
        f"{tt.epochs:g} epoch(s), at least {tt.min_steps} steps. Test never chooses anything.",
        "",
        "## Accuracy", "",
        "| labels | depth | seeds | teacher | baseline | distilled | distilled − baseline (pt) | paired t p | "
        "McNemar p per seed | |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for g in groups:
        m, d = g.means, g.differences.get("accuracy")
        mc = ", ".join(f"{x.mcnemar.p_value:.2g}" for x in g.mcnemar if x.mcnemar)
        row = [_label(g), g.depth or cfg.student.init, str(len(g.seeds))]
        row += [_ci(m[k]["accuracy"], 100) if k in m else "–" for k in DEFAULT_MODELS]
        row += [_ci(d.difference, 100, "+.2f"), f"{d.p_value:.2g}", mc, _verdict(d)] if d else ["–"] * 4
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Calibration (lower is better)", "",
              f"Negative log-likelihood (nats per row), expected calibration error ({ECE_BINS} equal-width bins) and "
              "Brier score, distilled − baseline paired by seed.", "",
              "| labels | depth | NLL baseline | NLL distilled | Δ NLL | ECE baseline | ECE distilled | Δ ECE | "
              "Δ Brier |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in groups:
        if not g.differences:
            continue
        m, d = g.means, g.differences
        lines.append(f"| {_label(g)} | {g.depth or cfg.student.init} | {_ci(m['baseline']['nll'], 1, '.4f')} | "
                     f"{_ci(m['distilled']['nll'], 1, '.4f')} | {_ci(d['nll'].difference, 1, '+.4f')} | "
                     f"{_ci(m['baseline']['ece'], 1, '.4f')} | {_ci(m['distilled']['ece'], 1, '.4f')} | "
                     f"{_ci(d['ece'].difference, 1, '+.4f')} | {_ci(d['brier'].difference, 1, '+.4f')} |")
    lines += ["", "## In words", ""] + in_words(groups, cfg)
    lines += render_methods(groups, cfg)
    lines += render_teachers(groups)
    models = list(dict.fromkeys(m for c in cells_done for m in c.scores))
    lines += ["", "## Cells", "", "Test accuracy (%) of each model; McNemar p: distilled against baseline.", "",
              "| cell | labelled | seed | " + " | ".join(models) + " | McNemar p | time (s) |",
              "|---|---:|---:|" + "---:|" * len(models) + "---:|---:|"]
    for c in cells_done:
        acc = [f"{100 * c.scores[k].accuracy:.2f}" if k in c.scores else "–" for k in models]
        p = c.mcnemar.p_value if c.mcnemar else None
        borrowed = f" (teacher from {c.teacher_from})" if c.teacher_from else ""
        lines.append(f"| [{c.name}]({c.run_dir}/results.md){borrowed} | {c.labelled_rows:,} | {c.seed} | "
                     + " | ".join(acc) + f" | {'–' if p is None else f'{p:.2g}'} | "
                     + (f"{c.seconds:.0f}" if c.seconds is not None else "–") + " |")
    lines += ["", "Figures: `study.png` (accuracy against label budget) and `study_calibration.png` (NLL and ECE)."]
    return "\n".join(lines) + "\n"


def render_methods(groups: list[Group], cfg: RunConfig, always: bool = False) -> list[str]:
    """The method axis: every method's student per (budget, depth) against the baseline and against kd, paired by
    seed and Holm-corrected; its calibration and what it costs; and the best method of each budget (`always`: even
    for baseline and kd alone, whose comparison the report's other tables give)."""
    if not always and not any(len(g.students) > 2 for g in groups):
        return []
    out = ["", "## Methods", "",
           "Each method's student against the baseline and against kd (`distilled`), paired by seed. p: paired "
           "t-test on accuracy, Holm-adjusted over the methods compared with the same reference; the adjusted "
           "interval is the simultaneous (Bonferroni) one at 1 − 0.05/m, which excludes 0 only where the Holm test "
           "rejects too. Time: the student's training time over the baseline's; with teacher: adding the teacher it "
           "learns from (shared by the methods that use it) and its own procedure (self-training, calibration folds).",
           ""]
    for g in groups:
        seeds = len(g.seeds)
        out += [f"### {_label(g)} labelled rows, {g.depth or cfg.student.init}, {seeds} seed(s)", "",
                "| method | accuracy (%) | − baseline (pt) | adjusted interval | p (Holm) | − kd (pt) | p (Holm) | "
                "NLL | ECE | Brier | time × baseline | with teacher |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in g.students:
            mean, comp, cost = g.means[m], g.comparisons.get(m, {}), g.cost.get(m)
            vb, vk = comp.get(BASELINE), comp.get(KD)
            row = [m, _ci(mean["accuracy"], 100)]
            row += ([_ci(vb.differences["accuracy"].difference, 100, "+.2f"), _ci(vb.adjusted, 100, "+.2f"),
                     _p(vb.p_holm)] if vb else ["–"] * 3)
            row += ([_ci(vk.differences["accuracy"].difference, 100, "+.2f"), _p(vk.p_holm)] if vk
                    else ["–"] * 2)
            row += [_ci(mean[k], 1, ".4f") for k in ("nll", "ece", "brier")]
            row += [f"{c.mean:.2f}" for c in (cost.alone, cost.with_teacher)] if cost else ["–"] * 2
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
        out.append(f"| {_label(g)} | {g.depth or cfg.student.init} | {best} | {_ci(g.means[best]['accuracy'], 100)} | "
                   + (f"{_ci(vb.adjusted, 100, '+.2f')} | {_p(vb.p_holm)}" if vb else "– | –")
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
        out += [f"### {_label(g)} labelled rows, {len(g.seeds)} seed(s)", "",
                "| teacher | accuracy (%) | − teacher (pt) | p (Holm) | ECE | − teacher ECE | NLL | − teacher NLL |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        members = [m for m in g.means if m == TEACHER or m.startswith(MEMBER)]
        for m in [TEACHER, *made, *(x for x in members if x != TEACHER)]:
            mean, vt = g.means[m], g.comparisons.get(m, {}).get(TEACHER)
            row = [m, _ci(mean["accuracy"], 100)]
            row += [_ci(vt.differences["accuracy"].difference, 100, "+.2f"), _p(vt.p_holm)] if vt else ["–"] * 2
            for k in ("ece", "nll"):
                row += [_ci(mean[k], 1, ".4f"), _ci(vt.differences[k].difference, 1, "+.4f") if vt else "–"]
            out.append("| " + " | ".join(row) + " |")
        if len(members) > 1:
            out.append(f"| members' mean ({len(members)}) | "
                       f"{100 * sum(g.means[m]['accuracy'].mean for m in members) / len(members):.2f} | – | – | "
                       f"{sum(g.means[m]['ece'].mean for m in members) / len(members):.4f} | – | "
                       f"{sum(g.means[m]['nll'].mean for m in members) / len(members):.4f} | – |")
        out.append("")
    return out


def _p(p: float) -> str:
    return "–" if p != p else f"{p:.2g}"


def in_words(groups: list[Group], cfg: RunConfig) -> list[str]:
    out = []
    for g in groups:
        if not g.differences:
            continue
        where = f"With {_label(g)} labelled rows ({g.depth or cfg.student.init}, {len(g.seeds)} seeds)"
        acc, nll, ece = (g.differences[k].difference for k in ("accuracy", "nll", "ece"))
        if acc.n < 2:
            out.append(f"- {where}: one seed, no interval; distilled − baseline {100 * acc.mean:+.2f} pt.")
            continue
        acc_words = (f"distillation gains {100 * acc.mean:+.2f} pt, 95 % CI [{100 * acc.low:+.2f}, "
                     f"{100 * acc.high:+.2f}]: "
                     + ("a gain (the CI excludes 0)" if acc.low > 0 else
                        "a loss (the CI excludes 0)" if acc.high < 0 else "noise (the CI includes 0)"))
        cal = []
        for name, d in (("NLL", nll), ("ECE", ece)):
            if d.high < 0:
                cal.append(f"{name} lower ({d.mean:+.4f}, CI excludes 0)")
            elif d.low > 0:
                cal.append(f"{name} higher ({d.mean:+.4f}, CI excludes 0)")
            else:
                cal.append(f"{name} {d.mean:+.4f} (noise)")
        out.append(f"- {where}: {acc_words}; calibration: {', '.join(cal)}.")
    return out


def plot_metric(groups: list[Group], panels: list[tuple[str, str, float]]) -> bytes:
    """One column per student depth, one row per metric: the mean against labelled rows (log x) with its CI band,
    per model."""
    import numpy as np

    from kd.report import figure_png, plt

    depths = list(dict.fromkeys(g.depth for g in groups))
    fig, axes = plt.subplots(len(panels), len(depths), figsize=(5.5 * len(depths), 3.8 * len(panels)),
                             squeeze=False, layout="constrained")
    models = list(dict.fromkeys(m for g in groups for m in g.means))
    palette = iter(plt.get_cmap("tab10").colors[2:])
    styles = {m: dict(color="grey", linestyle="--" if m == "teacher" else ":") if m.startswith("teacher") else
              dict(color="tab:blue") if m == BASELINE else dict(color="tab:orange") if m == KD else
              dict(color=next(palette)) for m in models}
    for col, depth in enumerate(depths):
        part = sorted((g for g in groups if g.depth == depth), key=lambda g: g.labelled_rows)
        x = np.array([g.labelled_rows for g in part], dtype=float)
        for row, (metric, label, scale) in enumerate(panels):
            ax = axes[row][col]
            for model, style in styles.items():
                if not all(model in g.means for g in part):
                    continue
                ci = [g.means[model][metric] for g in part]
                mean = np.array([c.mean for c in ci]) * scale
                ax.plot(x, mean, marker="o", label=model, **style)
                low, high = (np.array([getattr(c, k) for c in ci]) * scale for k in ("low", "high"))
                if np.isfinite(low).all():
                    ax.fill_between(x, low, high, alpha=0.2, color=style["color"])
            ax.set_xscale("log")
            ax.set_xlabel("labelled rows (log scale; the last point: all)")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"student {depth or 'of the base preset'}")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
    return figure_png(fig)
