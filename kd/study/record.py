"""study.json: the grid with each cell's settings, state and scores, read and written whole."""

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


def write_record(root: Path, study: StudyConfig, finished: list[dict], grid: list[Cell]) -> None:
    names = {c["name"] for c in finished}
    planned = [{"name": c.name, "budget": c.budget or ALL, "seed": c.seed, "depth": c.depth or None,
                "run_dir": f"cells/{c.name}", "overrides": list(c.overrides), "state": "planned"}
               for c in grid if c.name not in names]
    write_json(root / "study.json", {"study": study.name, "config": asdict(study), "cpu": cpu_model(),
                                     "cells": finished + planned})
