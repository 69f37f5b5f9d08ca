"""A study: when does distillation pay? A grid of ordinary runs, one run folder per cell (label budget x seed x
student depth), each made by kd.pipeline like any `train-all`, then one report over them: the mean of every
score over seeds with its 95 % t-interval, the paired difference distilled - baseline per seed with its
interval and a paired t-test, and each seed's McNemar test.

runs/<study>/
  study.json                 the grid (each cell's settings, run folder, state and scores) and the aggregates
  study.md                   the report; study.png (accuracy against label budget), study_calibration.png
  cells/<cell>/              one run folder per cell (manifest, models, results.md, ...)

A cell that has finished is skipped, and one that was stopped resumes like any run (finished stages are kept,
the stage that was cut short continues from its last checkpoint). Cells that would train the same teacher (the
same data, labelled rows and teacher settings: every seed at the full budget, every depth of a budget and seed)
take it, and its logits over the students' rows, from the first cell that trained it: the pipeline checks them
like its own (stage key, weights sha256, logits cache record) before using them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kd.config import RunConfig, build_dataclass, load_config, read_named_yaml, yaml_names
from kd.errors import KdError
from kd.manifest import cpu_model
from kd.runfolder import MODEL_NAMES, RunFolder, atomic_dir, write_bytes, write_json, write_text

# scipy, scikit-learn (kd.metrics) and matplotlib are imported by the functions that aggregate and plot: `kd study
# --help` and the study's checks need none of them.

STUDY_DIR = Path(__file__).parent / "studies"
METHODS = ("baseline", "distilled")  # compared seed by seed; the teacher is reported beside them
METRICS = ("accuracy", "f1_macro", "nll", "ece", "brier")
ALL = "all"  # the budget where every student row carries its label: train-all's own comparison


@dataclass
class StudyConfig:
    base: str = "cpu"  # the run preset (name or YAML) every cell starts from
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    # labelled rows among the students' train rows; "all": every row (no pool)
    budgets: list[Any] = field(default_factory=lambda: [ALL])
    # student.init of each student depth, e.g. from-teacher:0,2,4; empty: the base preset's own
    depths: list[str] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)  # run-config fields set in every cell (dotted keys)
    name: str = ""
    file: str = ""  # where it was read from (set on loading)


@dataclass(frozen=True)
class Cell:
    budget: int | None  # labelled rows; None: all
    seed: int
    depth: str  # student.init ("" : the base preset's)
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        depth = f"-{re.sub(r'[^A-Za-z0-9]+', '', self.depth.replace('from-teacher:', 'layers'))}" if self.depth else ""
        return f"labels{self.budget or ALL}-seed{self.seed}{depth}"


def available_studies() -> list[str]:
    return yaml_names(STUDY_DIR)


def load_study(name: str) -> StudyConfig:
    """A study from its name (kd/studies/<name>.yaml) or a YAML path, checked before anything runs."""
    path, raw = read_named_yaml(name, STUDY_DIR, "study")
    try:
        study = build_dataclass(StudyConfig, raw)
    except KdError as exc:
        raise KdError(f"{path}: {exc}") from None
    study.name, study.file = study.name or path.stem, str(path)
    bad = next((s for s in study.seeds if not isinstance(s, int) or isinstance(s, bool)), None)
    if not study.seeds or bad is not None or len(set(study.seeds)) < len(study.seeds):
        raise KdError(f"{path}: seeds={study.seeds!r}: expected a list of different integers")
    for b in study.budgets:
        if b != ALL and (not isinstance(b, int) or isinstance(b, bool) or b < 1):
            raise KdError(f"{path}: budgets: {b!r}: expected a positive number of labelled rows or {ALL!r}")
    if not study.budgets:
        raise KdError(f"{path}: budgets: expected at least one label budget")
    if not isinstance(study.set, dict):
        raise KdError(f"{path}: set: expected a mapping of dotted run-config keys to values")
    return study


def cells(study: StudyConfig) -> list[Cell]:
    """The grid in the order it runs: per depth, budgets from the smallest, every seed of a budget together."""
    common = tuple(f"{k}={json.dumps(v)}" for k, v in study.set.items())
    # the full budget labels every student row, and its teacher trains on those rows only, as at every other
    # budget (train-all's teacher trains on the whole train split, of which the students may take a share)
    try:
        student_rows = load_config(study.base, list(common)).student.train_rows
    except KdError as exc:
        raise KdError(f"{study.file}: {exc}") from None
    budgets = sorted((None if b == ALL else b for b in study.budgets), key=lambda b: float("inf") if b is None else b)
    grid = []
    for depth in study.depths or [""]:
        for budget in budgets:
            for seed in study.seeds:
                # the seed: the students' data order and head initialisation, and which rows carry labels
                ov = [*common, f"student.train.seed={seed}"]
                if budget is not None:
                    ov += [f"data.labelled_rows={budget}", f"data.labelled_seed={seed}"]
                elif student_rows is not None:
                    ov.append(f"data.labelled_rows={student_rows}")  # all of them: no seed to pick them
                if depth:
                    ov.append(f"student.init={depth}")
                grid.append(Cell(budget, seed, depth, tuple(ov)))
    return grid


def cell_config(study: StudyConfig, cell: Cell, data: str | None, sections: dict[str, type]) -> RunConfig:
    try:
        cfg = load_config(study.base, list(cell.overrides), sections)
    except KdError as exc:
        raise KdError(f"{study.file}: cell {cell.name}: {exc}") from None
    if data:
        cfg.data.source = data  # as written, like kd's --data
    return cfg


# ---- running the grid ----------------------------------------------------------------------------------


def run_study(study: StudyConfig, root: Path, data: str | None, sections: dict[str, type]) -> dict:
    from kd.pipeline import Pipeline  # torch and transformers: only when cells run

    grid = cells(study)
    configs = {cell: cell_config(study, cell, data, sections) for cell in grid}  # every mistake before a write
    started = time.perf_counter()
    record = _read_record(root)
    state = {c["name"]: c for c in record.get("cells", [])}
    teachers: dict[str, Path] = {}  # teacher stage key -> the cell folder that trained it
    for i, cell in enumerate(grid, 1):
        pipe = Pipeline(configs[cell], root / "cells" / cell.name)
        entry = state.setdefault(cell.name, {})
        entry.update(name=cell.name, budget=cell.budget or ALL, seed=cell.seed, depth=cell.depth or None,
                     run_dir=str(pipe.run.root.relative_to(root)), overrides=list(cell.overrides))
        pipe.check_inputs()
        key = pipe.stage_key("teacher")
        if all(pipe.is_current(m) for m in MODEL_NAMES) and pipe.run.results_json.is_file():
            print(f"kd: study {study.name}: cell {i} of {len(grid)} ({cell.name}) already finished, skipped",
                  flush=True)
        else:
            print(f"kd: study {study.name}: cell {i} of {len(grid)} ({cell.name})", flush=True)
            if key in teachers and not pipe.is_current("teacher"):
                share_teacher(RunFolder(teachers[key]), pipe.run)
                entry["teacher_from"] = teachers[key].name
                print(f"kd: teacher and its logits taken from cell {teachers[key].name} (same data, labelled rows "
                      "and teacher settings)", flush=True)
            cell_started = time.perf_counter()
            pipe.train_all()
            entry["seconds"] = round(time.perf_counter() - cell_started, 1)
        teachers.setdefault(key, pipe.run.root)
        entry.update(state="finished", **cell_scores(pipe.run))
        _write_record(root, study, [state[c.name] for c in grid if c.name in state], grid)
    seconds = time.perf_counter() - started
    print(f"kd: study {study.name}: {len(grid)} cells in {seconds / 60:.1f} min (cells already finished skipped)",
          flush=True)
    return write_study_report(root)


def share_teacher(donor: RunFolder, run: RunFolder) -> None:
    """Give `run` the teacher `donor` trained and its cached logits, as hard links (both folders only ever
    replace files whole, never write into them), falling back to copies where links cannot be made."""
    def place(src: Path, dst: Path) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with atomic_dir(run.model_dir("teacher")) as tmp:
        for src in donor.model_dir("teacher").iterdir():
            place(src, tmp / src.name)
    cache = run.cache_dir("teacher_logits")
    cache.mkdir(parents=True, exist_ok=True)
    # the .npy before its .json record: logits without a record are never used
    for src in sorted(donor.cache_dir("teacher_logits").glob("*"), key=lambda p: p.suffix != ".npy"):
        if not (cache / src.name).exists():
            place(src, cache / src.name)


def cell_scores(run: RunFolder) -> dict:
    """A finished cell's test scores per model, the sizes of its label budget and the McNemar test."""
    results = json.loads(run.results_json.read_text())
    rows = results.get("data", {}).get("rows", {})
    distillation = results.get("distillation") or {}
    return {
        "labelled_rows": rows.get("labelled") or rows.get("student_train"),
        "student_rows": rows.get("student_train"),
        "test_rows": rows.get("test"),
        "scores": {name: {k: m.get(k) for k in METRICS} for name, m in results["models"].items()},
        "mcnemar": distillation.get("mcnemar_baseline_vs_distilled"),
        "cpu": results.get("device", {}).get("cpu"),
    }


def _read_record(root: Path) -> dict:
    path = root / "study.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise KdError(f"{path}: not readable JSON; this study folder is damaged: pass another --run-dir") from None


def _write_record(root: Path, study: StudyConfig, finished: list[dict], grid: list[Cell]) -> None:
    names = {c["name"] for c in finished}
    planned = [{"name": c.name, "budget": c.budget or ALL, "seed": c.seed, "depth": c.depth or None,
                "run_dir": f"cells/{c.name}", "overrides": list(c.overrides), "state": "planned"}
               for c in grid if c.name not in names]
    write_json(root / "study.json", {"study": study.name, "config": asdict(study), "cpu": cpu_model(),
                                     "cells": finished + planned})


# ---- aggregation ------------------------------------------------------------------------------------------


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


def write_study_report(root: Path) -> dict:
    from kd.metrics import ECE_BINS

    record = _read_record(root)
    if not record.get("cells"):
        raise KdError(f"{root}: no study.json with cells; run `kd study <name>` first")
    groups = aggregate(record)
    record["groups"] = [asdict(g) for g in groups]
    write_json(root / "study.json", record)
    first = next(c for c in record["cells"] if c.get("state") == "finished")
    cfg = build_dataclass(RunConfig, RunFolder(root / first["run_dir"]).read_manifest()["config"])
    text = render_study(record, groups, cfg)
    write_text(root / "study.md", text)
    write_bytes(root / "study.png", plot_metric(groups, [("accuracy", "test accuracy (%)", 100)]))
    write_bytes(root / "study_calibration.png",
                plot_metric(groups, [("nll", "test NLL (nats per row)", 1), ("ece", f"test ECE ({ECE_BINS} bins)", 1)]))
    print(text)
    return record


# ---- the report ---------------------------------------------------------------------------------------------


def _ci(d: dict, scale: float = 1, spec: str = ".2f") -> str:
    if d["n"] < 2:
        return f"{scale * d['mean']:{spec}}"
    return f"{scale * d['mean']:{spec}} [{scale * d['low']:{spec}}, {scale * d['high']:{spec}}]"


def _verdict(diff: dict) -> str:
    """The accuracy difference's verdict (higher is better)."""
    from kd.metrics import Interval

    d = Interval(**diff["difference"])
    if d.n < 2:
        return "one seed: no interval"
    if not d.excludes_zero:
        return "noise (CI includes 0)"
    return "**distilled better**" if d.mean > 0 else "**distilled worse**"


def _label(g: Group) -> str:
    return f"all ({g.labelled_rows:,})" if g.budget == ALL else f"{g.labelled_rows:,}"


def render_study(record: dict, groups: list[Group], cfg: RunConfig) -> str:
    from kd.metrics import ECE_BINS

    cells_done = [c for c in record["cells"] if c.get("state") == "finished"]
    planned = len(record["cells"]) - len(cells_done)
    first = cells_done[0]
    st, tt = cfg.student.train, cfg.teacher.train
    lines = [
        f"# kd-bench study `{record['study']}`: when does distillation pay?", "",
        f"{len(cells_done)} cells (label budget × seed × student depth), each an ordinary run folder under "
        f"`cells/`{f'; {planned} more planned, not run yet' if planned else ''}. Base preset "
        f"`{record['config']['base']}`, CPU: {record.get('cpu')}. Scores are on {first['test_rows']:,} test rows, "
        f"the same for every cell. Intervals are 95 % t-intervals over seeds; differences are paired by seed (the "
        f"same seed gives the same labelled rows, data order and initialisation).", "",
        "**Protocol.**",
        f"- The students' {first['student_rows']:,} train rows: under a label budget, that many carry labels (a "
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
        mc = ", ".join(f"{x['p_value']:.2g}" for x in g.mcnemar if "p_value" in x)
        row = [_label(g), g.depth or cfg.student.init, str(len(g.seeds))]
        row += [_ci(m[k]["accuracy"], 100) if k in m else "–" for k in MODEL_NAMES]
        row += [_ci(d["difference"], 100, "+.2f"), f"{d['p_value']:.2g}", mc, _verdict(d)] if d else ["–"] * 4
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
                     f"{_ci(m['distilled']['nll'], 1, '.4f')} | {_ci(d['nll']['difference'], 1, '+.4f')} | "
                     f"{_ci(m['baseline']['ece'], 1, '.4f')} | {_ci(m['distilled']['ece'], 1, '.4f')} | "
                     f"{_ci(d['ece']['difference'], 1, '+.4f')} | {_ci(d['brier']['difference'], 1, '+.4f')} |")
    lines += ["", "## In words", ""] + in_words(groups, cfg)
    lines += ["", "## Cells", "", "| cell | labelled | seed | teacher | baseline | distilled | McNemar p | time (s) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells_done:
        s = c["scores"]
        acc = [f"{100 * s[k]['accuracy']:.2f}" if k in s else "–" for k in MODEL_NAMES]
        p = (c.get("mcnemar") or {}).get("p_value")
        borrowed = f" (teacher from {c['teacher_from']})" if c.get("teacher_from") else ""
        lines.append(f"| [{c['name']}]({c['run_dir']}/results.md){borrowed} | {c['labelled_rows']:,} | {c['seed']} | "
                     + " | ".join(acc) + f" | {'–' if p is None else f'{p:.2g}'} | "
                     + (f"{c['seconds']:.0f}" if c.get("seconds") is not None else "–") + " |")
    lines += ["", "Figures: `study.png` (accuracy against label budget) and `study_calibration.png` (NLL and ECE)."]
    return "\n".join(lines) + "\n"


def in_words(groups: list[Group], cfg: RunConfig) -> list[str]:
    out = []
    for g in groups:
        if not g.differences:
            continue
        where = f"With {_label(g)} labelled rows ({g.depth or cfg.student.init}, {len(g.seeds)} seeds)"
        acc, nll, ece = (g.differences[k]["difference"] for k in ("accuracy", "nll", "ece"))
        if acc["n"] < 2:
            out.append(f"- {where}: one seed, no interval; distilled − baseline {100 * acc['mean']:+.2f} pt.")
            continue
        acc_words = (f"distillation gains {100 * acc['mean']:+.2f} pt, 95 % CI [{100 * acc['low']:+.2f}, "
                     f"{100 * acc['high']:+.2f}]: "
                     + ("a gain (the CI excludes 0)" if acc["low"] > 0 else
                        "a loss (the CI excludes 0)" if acc["high"] < 0 else "noise (the CI includes 0)"))
        cal = []
        for name, d in (("NLL", nll), ("ECE", ece)):
            if d["high"] < 0:
                cal.append(f"{name} lower ({d['mean']:+.4f}, CI excludes 0)")
            elif d["low"] > 0:
                cal.append(f"{name} higher ({d['mean']:+.4f}, CI excludes 0)")
            else:
                cal.append(f"{name} {d['mean']:+.4f} (noise)")
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
    styles = {"teacher": dict(color="grey", linestyle="--"), "baseline": dict(color="tab:blue"),
              "distilled": dict(color="tab:orange")}
    for col, depth in enumerate(depths):
        part = sorted((g for g in groups if g.depth == depth), key=lambda g: g.labelled_rows)
        x = np.array([g.labelled_rows for g in part], dtype=float)
        for row, (metric, label, scale) in enumerate(panels):
            ax = axes[row][col]
            for model, style in styles.items():
                if not all(model in g.means for g in part):
                    continue
                ci = [g.means[model][metric] for g in part]
                mean = np.array([c["mean"] for c in ci]) * scale
                ax.plot(x, mean, marker="o", label=model, **style)
                low, high = (np.array([c[k] for c in ci]) * scale for k in ("low", "high"))
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
