"""Running a study's grid: each cell an ordinary run folder made by kd.pipeline, finished cells skipped, a
teacher shared between cells that would train the same one, and study.json written after every cell."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from kd.runfolder import MODEL_NAMES, RunFolder, atomic_dir
from kd.study.aggregate import METRICS
from kd.study.grid import ALL, StudyConfig, cell_config, cells
from kd.study.record import read_record, write_record
from kd.study.report import write_study_report


def run_study(study: StudyConfig, root: Path, data: str | None, sections: dict[str, type]) -> dict:
    from kd.pipeline import Pipeline  # torch and transformers: only when cells run

    grid = cells(study)
    configs = {cell: cell_config(study, cell, data, sections) for cell in grid}  # every mistake before a write
    started = time.perf_counter()
    record = read_record(root)
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
        write_record(root, study, [state[c.name] for c in grid if c.name in state], grid)
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
