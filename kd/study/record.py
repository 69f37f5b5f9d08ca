"""study.json: the grid with each cell's settings, state and scores, read and written whole.

Each finished cell also leaves its own record, cells/<cell>.json, written by whatever ran it (this process, a
Ray task, another --shard). study.json is the merge of those over the grid, so that processes that run parts of
one grid never lose each other's cells: the last writer's study.json may lack a cell another process finished
meanwhile, and `kd study NAME --report` merges again."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from kd.errors import KdError
from kd.manifest import cpu_model
from kd.runfolder import write_json
from kd.study.grid import ALL, Cell, StudyConfig


def read_record(root: Path) -> dict:
    path = root / "study.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise KdError(f"{path}: not readable JSON; this study folder is damaged: pass another --run-dir") from None


def cell_record_path(root: Path, cell: Cell) -> Path:
    return root / "cells" / f"{cell.name}.json"


def write_cell_record(root: Path, cell: Cell, entry: dict) -> None:
    write_json(cell_record_path(root, cell), entry)


def finished_entries(root: Path, grid: list[Cell]) -> dict[str, dict]:
    """The finished cells of the grid, by name: each cell's own record, else (a study written before cells had
    their own) its entry in study.json."""
    entries = {c["name"]: c for c in read_record(root).get("cells", []) if c.get("state") == "finished"}
    for cell in grid:
        path = cell_record_path(root, cell)
        if path.is_file():
            try:
                entries[cell.name] = json.loads(path.read_text())
            except ValueError:
                raise KdError(f"{path}: not readable JSON: delete it, and the cell runs again") from None
    return {c.name: entries[c.name] for c in grid if c.name in entries}


def settings(cell: Cell) -> dict:
    return {"name": cell.name, "budget": cell.budget or ALL, "seed": cell.seed, "depth": cell.depth or None,
            "run_dir": f"cells/{cell.name}", "overrides": list(cell.overrides)}


def write_record(root: Path, study: StudyConfig, grid: list[Cell]) -> dict:
    """study.json from the cells' own records: finished cells, then the planned ones, in grid order."""
    finished = finished_entries(root, grid)
    record = {"study": study.name, "config": asdict(study), "cpu": cpu_model(),
              "cells": [finished[c.name] for c in grid if c.name in finished]
              + [{**settings(c), "state": "planned"} for c in grid if c.name not in finished]}
    write_json(root / "study.json", record)
    return record
