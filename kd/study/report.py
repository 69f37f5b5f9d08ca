"""A study's report: study.md, its plots, and the aggregates written back into study.json."""

from __future__ import annotations

from pathlib import Path

from kd.atomic import write_bytes, write_text
from kd.config import RunConfig, build_dataclass
from kd.errors import KdError
from kd.intervals import PairedDifference
from kd.runfolder import DEFAULT_MODELS, TEACHER, RunFolder, is_teacher
from kd.study.aggregate import BASELINE, KD, Group, aggregate
from kd.study.record import StudyRecord, read_record, write_record_file
from kd.study.tables import budget_label, fmt_ci, render_methods, render_primary, render_teachers

# scikit-learn (kd.metrics) and matplotlib are imported by the functions that plot: `kd study --help` needs neither

def write_study_report(root: Path) -> StudyRecord:
    from kd.metrics import ECE_BINS

    record = read_record(root)
    if record is None or not record.cells:
        raise KdError(f"{root}: no study.json with cells; run `kd study <name>` first")
    record.groups = aggregate(record.cells, record.config.primary_models())
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


def _verdict(diff: PairedDifference, exploratory: bool) -> str:
    """The accuracy difference's verdict (higher is better); `exploratory`: the study declares other comparisons
    primary, so this one's unadjusted interval is a lead, not a finding."""
    d = diff.difference
    if d.n < 2:
        return "one seed: no interval"
    if not d.excludes_zero:
        return "noise (CI includes 0)"
    found = "**distilled better**" if d.mean > 0 else "**distilled worse**"
    return f"exploratory: {found.strip('*')}" if exploratory else found


def exploratory(g: Group) -> bool:
    """Whether distilled − baseline is an exploratory comparison of this group (others declared primary)."""
    declared = any(c.primary for by in g.comparisons.values() for c in by.values())
    kd = g.comparisons.get(KD, {}).get(BASELINE)
    return declared and not (kd and kd.primary)


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
        row = [budget_label(g), g.depth or cfg.student.init, str(len(g.seeds))]
        row += [fmt_ci(m[k]["accuracy"], 100) if k in m else "–" for k in DEFAULT_MODELS]
        row += [fmt_ci(d.difference, 100, "+.2f"), f"{d.p_value:.2g}", mc, _verdict(d, exploratory(g))] if d \
            else ["–"] * 4
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
        lines.append(f"| {budget_label(g)} | {g.depth or cfg.student.init} | "
                     f"{fmt_ci(m['baseline']['nll'], 1, '.4f')} | "
                     f"{fmt_ci(m['distilled']['nll'], 1, '.4f')} | {fmt_ci(d['nll'].difference, 1, '+.4f')} | "
                     f"{fmt_ci(m['baseline']['ece'], 1, '.4f')} | {fmt_ci(m['distilled']['ece'], 1, '.4f')} | "
                     f"{fmt_ci(d['ece'].difference, 1, '+.4f')} | {fmt_ci(d['brier'].difference, 1, '+.4f')} |")
    lines += ["", "## In words", ""] + in_words(groups, cfg)
    lines += render_primary(groups, cfg)
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


def in_words(groups: list[Group], cfg: RunConfig) -> list[str]:
    out = []
    for g in groups:
        if not g.differences:
            continue
        where = f"With {budget_label(g)} labelled rows ({g.depth or cfg.student.init}, {len(g.seeds)} seeds)"
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
        lead = " (exploratory: the study's primary comparisons are others, so this interval is unadjusted)" \
            if exploratory(g) else ""
        out.append(f"- {where}: {acc_words}{lead}; calibration: {', '.join(cal)}.")
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
    styles = {m: dict(color="grey", linestyle="--" if m == TEACHER else ":") if is_teacher(m) else
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
