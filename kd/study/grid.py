"""A study's grid: its YAML (kd/studies/), its cells (label budget x seed x student depth) and each cell's run
settings."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from kd.config import RunConfig, load_config, read_named_yaml, yaml_names
from kd.errors import KdError
from kd.typed import Check, read, says

STUDY_DIR = Path(__file__).parent.parent / "studies"
ALL = "all"  # the budget where every student row carries its label: train-all's own comparison


BUDGET = Check(lambda b: b == ALL or b >= 1, f"a positive number of labelled rows or {ALL!r}")


@dataclass
class StudyConfig:
    base: str = "cpu"  # the run preset (name or YAML) every cell starts from
    seeds: Annotated[list[int], Check(lambda s: s and len(set(s)) == len(s), "a list of different integers")] = \
        field(default_factory=lambda: [1, 2, 3])
    # labelled rows among the students' train rows; "all": every row (no pool)
    budgets: Annotated[list[Annotated[int | Literal["all"], BUDGET]], Check(bool, "at least one label budget")] = \
        field(default_factory=lambda: [ALL])
    # student.init of each student depth, e.g. from-teacher:0,2,4; empty: the base preset's own
    depths: list[str] = field(default_factory=list)
    # run-config fields set in every cell (dotted keys)
    set: Annotated[dict[str, Any], says("a mapping of dotted run-config keys to values")] = \
        field(default_factory=dict)
    # the methods every cell trains (kd/methods/); each is compared with baseline and kd, paired by seed
    methods: Annotated[list[str], Check(bool, "a list of method names (kd/methods/)")] = \
        field(default_factory=lambda: ["baseline", "kd"])
    # CPU threads per cell: torch's thread count in every executor, so that a cell gives the same bits whichever
    # runs it, and the CPUs a Ray task asks for. None: every CPU of the machine in one process, 1 per Ray task.
    cpus: Annotated[int | None, Check(lambda c: c is None or c >= 1,
                                      "a positive number of CPU threads per cell, or null")] = None
    # The comparisons the study is for, each [method, reference method], e.g. [[ensemble-kd, kd]]: Holm corrects over
    # these alone, and every other comparison is reported beside them as exploratory, unadjusted. None declared: each
    # method against the baseline and against kd, Holm over the methods compared with the same reference.
    primary: Annotated[list[Annotated[list[str], Check(lambda p: len(p) == 2 and p[0] != p[1],
                                                         "a pair [method, reference method]")]],
                       says("a list of [method, reference method] pairs")] = field(default_factory=list)
    # Seeds added after `seeds`, one at a time, until every primary comparison's interval (the one Holm's family
    # gives) is at most ±precision accuracy points, or the study has max_seeds seeds. The stop reads the intervals'
    # widths, never a p-value or a difference (docs/study.md says why that keeps the intervals honest).
    precision: Annotated[float | None, Check(lambda p: p is None or p > 0, "a half-width in points > 0, or null")] \
        = None
    max_seeds: Annotated[int | None, Check(lambda n: n is None or n >= 2, "a number of seeds >= 2, or null")] = None
    name: str = ""
    file: str = ""  # where it was read from (set on loading)

    def primary_models(self) -> list[tuple[str, str]]:
        """The primary comparisons as (model folder, reference model folder): kd's student is `distilled`."""
        from kd.methods import load_method

        return [(load_method(a).model_name, load_method(b).model_name) for a, b in self.primary]


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
    study = read(StudyConfig, raw, f"{path}:")
    study.name, study.file = study.name or path.stem, str(path)
    for pair in study.primary:
        if not set(pair) <= set(study.methods):
            raise KdError(f"{path}: primary: {pair}: expected two of the study's methods {study.methods}")
    if study.precision is not None and not (study.primary and study.max_seeds):
        raise KdError(f"{path}: precision: {study.precision}: needs primary comparisons whose intervals it bounds "
                      "and max_seeds, the most seeds it may add up to")
    if study.max_seeds is not None and study.max_seeds < len(study.seeds):
        raise KdError(f"{path}: max_seeds: {study.max_seeds}: expected at least the {len(study.seeds)} seeds listed")
    return study


# run-config keys that each cell sets from the grid: a study's --set cannot
GRID_KEYS = {"student.train.seed": "seeds", "data.labelled_seed": "seeds", "data.labelled_rows": "budgets",
             "student.init": "depths"}


def with_settings(study: StudyConfig, overrides: list[str]) -> StudyConfig:
    """The study with `--set key=value` run-config settings added to its `set` (a value parsed as YAML, as a run's
    --set), for every cell; a key that is no run-config field stops the study when its cells are planned."""
    import yaml

    extra, methods = {}, study.methods
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise KdError(f"--set {item!r}: expected key=value, e.g. --set student.train.learning_rate=5e-5")
        if key in GRID_KEYS:
            raise KdError(f"--set {key}: set by the study's grid ({GRID_KEYS[key]}), not by --set")
        if key == "methods":  # the study's own axis, which its cells set after `set`
            methods = read(StudyConfig, {"methods": yaml.safe_load(value)}, "--set").methods
        else:
            extra[key] = yaml.safe_load(value)
    return dataclasses.replace(study, set={**study.set, **extra}, methods=methods)


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
