"""study.json and the cells' records, read and written whole (their schema: kd/study/schema.py).

Each finished cell also leaves its own record, cells/<cell>.json (a CellRecord), written by whatever ran it (this
process, a Ray task, another --shard). study.json is the merge of those over the grid, so that processes that run
parts of one grid never lose each other's cells: the last writer's study.json may lack a cell another process
finished meanwhile, and `kd study NAME --report` merges again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kd.manifest import cpu_model
from kd.results import Results
from kd.runfolder import TEACHER, RunFolder, is_teacher
from kd.study.grid import ALL, Cell, StudyConfig
from kd.study.schema import METRICS, CellRecord, Scores, StudyRecord, Times


def read_record(root: Path) -> StudyRecord | None:
    """study.json, or None where the study has not written one yet."""
    path = root / "study.json"
    if not path.is_file():
        return None
    return StudyRecord.read(path)


def cell_record_path(root: Path, cell: Cell) -> Path:
    return root / "cells" / f"{cell.name}.json"


def write_cell_record(root: Path, cell: Cell, entry: CellRecord) -> None:
    entry.write(cell_record_path(root, cell))


def finished_entries(root: Path, grid: list[Cell]) -> dict[str, CellRecord]:
    """The finished cells of the grid, by name: each cell's own record, else (a study written before cells had
    their own) its entry in study.json."""
    record = read_record(root)
    entries = {c.name: c for c in (record.finished if record else [])}
    for cell in grid:
        path = cell_record_path(root, cell)
        if path.is_file():
            entries[cell.name] = CellRecord.read(path)
    return {c.name: entries[c.name] for c in grid if c.name in entries}


def settings(cell: Cell, previous: CellRecord | None = None) -> CellRecord:
    """A cell's record with its settings: a planned one, or the one it had (its scores, time and donor kept)."""
    given = dict(name=cell.name, budget=cell.budget or ALL, seed=cell.seed, depth=cell.depth or None,
                 run_dir=f"cells/{cell.name}", overrides=list(cell.overrides))
    return dataclasses.replace(previous, **given) if previous else CellRecord(**given)


def finish(entry: CellRecord, run: RunFolder) -> CellRecord:
    """The cell finished: its record with the test scores per model from its results.json, the sizes of its label
    budget, each student's training times and the McNemar tests."""
    results = Results.read(run.results_json)
    rows, models = results.data.rows, results.models
    teacher_seconds = (models[TEACHER].train_seconds or 0.0) if TEACHER in models else 0.0
    # the teacher it learns from (self-trained: the fine-tuned one first) and its own procedure
    times = {n: Times(m.train_seconds, (teacher_seconds if m.teacher else 0.0) + (m.procedure_seconds or 0.0))
             for n, m in models.items() if not is_teacher(n)}
    scores = {n: Scores(**{k: getattr(m, k) for k in METRICS}) for n, m in models.items()}
    mcnemar = results.distillation.mcnemar if results.distillation else None
    return dataclasses.replace(entry, state="finished", times=times, tests=results.methods,
                               labelled_rows=rows.labelled, student_rows=rows.student_train, test_rows=rows.test,
                               scores=scores, mcnemar=mcnemar, cpu=results.device.cpu)


def write_record(root: Path, study: StudyConfig, grid: list[Cell]) -> StudyRecord:
    """study.json from the cells' own records: finished cells, then the planned ones, in grid order."""
    finished = finished_entries(root, grid)
    cells = [finished[c.name] for c in grid if c.name in finished] + [settings(c) for c in grid
                                                                      if c.name not in finished]
    record = StudyRecord(study.name, study, cpu_model(), cells)
    write_record_file(root, record)
    return record


def write_record_file(root: Path, record: StudyRecord) -> None:
    record.write(root / "study.json")

