"""Running a study's grid: each cell an ordinary run folder made by kd.pipeline, finished cells skipped, a
teacher shared between cells that would train the same one, and study.json written after every cell."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from kd.runfolder import RunFolder, atomic_dir
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
        if all(pipe.is_current(m) for m in pipe.model_names) and pipe.run.results_json.is_file():
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
    """Give `run` the teachers `donor` trained (the fine-tuned one and a self-trained one), their cached logits and
    fitted temperatures, as hard links (both folders only ever replace files whole, never write into them), falling
    back to copies where links cannot be made. The pipeline checks them like its own before using them."""
    def place(src: Path, dst: Path) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for folder in sorted(donor.root.glob("models/teacher*")):
        if (folder / "metrics.json").is_file() and not run.model_dir(folder.name).exists():
            with atomic_dir(run.model_dir(folder.name)) as tmp:
                for src in folder.iterdir():
                    place(src, tmp / src.name)
    for kind in ("teacher_logits", "calibration"):
        cache = run.cache_dir(kind)
        cache.mkdir(parents=True, exist_ok=True)
        # each entry before its <key>.json record: an entry without a record is never used
        for src in sorted(donor.cache_dir(kind).glob("*"), key=lambda p: p.suffixes == [".json"]):
            if not (cache / src.name).exists():
                place(src, cache / src.name)


def cell_scores(run: RunFolder) -> dict:
    """A finished cell's test scores per model, the sizes of its label budget and the McNemar test."""
    results = json.loads(run.results_json.read_text())
    rows = results.get("data", {}).get("rows", {})
    distillation = results.get("distillation") or {}
    models = results["models"]
    teacher_seconds = {n: m.get("train_seconds") or 0.0 for n, m in models.items() if n.startswith("teacher")}
    times = {n: {"student": m.get("train_seconds"),
                 # the teacher it learns from (self-trained: the fine-tuned one first) and its own procedure
                 "teacher": (teacher_seconds.get("teacher", 0.0) if m.get("teacher") else 0.0)
                 + (m.get("procedure_seconds") or 0.0)}
             for n, m in models.items() if not n.startswith("teacher")}
    return {
        "times": times,
        "tests": results.get("methods") or {},
        "labelled_rows": rows.get("labelled") or rows.get("student_train"),
        "student_rows": rows.get("student_train"),
        "test_rows": rows.get("test"),
        "scores": {name: {k: m.get(k) for k in METRICS} for name, m in results["models"].items()},
        "mcnemar": distillation.get("mcnemar_baseline_vs_distilled"),
        "cpu": results.get("device", {}).get("cpu"),
    }
