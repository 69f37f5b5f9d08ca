"""A study's grid: its YAML (kd/studies/), its cells (label budget x seed x student depth) and each cell's run
settings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd.config import RunConfig, build_dataclass, load_config, read_named_yaml, yaml_names
from kd.errors import KdError

STUDY_DIR = Path(__file__).parent.parent / "studies"
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
    # the methods every cell trains (kd/methods/); each is compared with baseline and kd, paired by seed
    methods: list[str] = field(default_factory=lambda: ["baseline", "kd"])
    # CPU threads per cell: torch's thread count in every executor, so that a cell gives the same bits whichever
    # runs it, and the CPUs a Ray task asks for. None: every CPU of the machine in one process, 1 per Ray task.
    cpus: int | None = None
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
    if not study.methods or not all(isinstance(m, str) for m in study.methods):
        raise KdError(f"{path}: methods={study.methods!r}: expected a list of method names (kd/methods/)")
    if study.cpus is not None and (not isinstance(study.cpus, int) or isinstance(study.cpus, bool) or study.cpus < 1):
        raise KdError(f"{path}: cpus={study.cpus!r}: expected a positive number of CPU threads per cell, or null")
    if not isinstance(study.set, dict):
        raise KdError(f"{path}: set: expected a mapping of dotted run-config keys to values")
    return study


def cells(study: StudyConfig) -> list[Cell]:
    """The grid in the order it runs: per depth, budgets from the smallest, every seed of a budget together."""
    common = (*(f"{k}={json.dumps(v)}" for k, v in study.set.items()), f"methods={json.dumps(study.methods)}")
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


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """--shard i/N (1 <= i <= N): which share of the grid this process runs, as a Slurm array task would."""
    if spec is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise KdError(f"--shard {spec}: expected i/N with 1 <= i <= N, e.g. --shard 1/4 "
                      "(a Slurm array: --shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT)")
    return int(m[1]), int(m[2])
