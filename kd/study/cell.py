"""One cell of a study: an ordinary run folder made by kd.run's train-all, skipped when finished, its teacher
taken from the cell that trained the same one (its donor), and its record (cells/<cell>.json) written. Every
executor runs cells through `run_cell`: this process, a Ray task, a --shard."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd.config import RunConfig
from kd.errors import KdError
from kd.runfolder import TEACHER, RunFolder, share_teachers
from kd.study.grid import Cell
from kd.study.record import CellRecord, finish, finished_entries, settings, write_cell_record


@dataclass
class CellJob:
    """Everything a process needs to run one cell (it is sent to Ray workers whole)."""
    study: str
    cell: Cell
    config: RunConfig
    root: Path  # the study folder, absolute
    donor: str | None  # the cell whose teacher this one takes (it trains it first); None: its own
    threads: int | None  # torch's CPU threads (StudyConfig.cpus)
    index: int  # 1-based place in the grid, for the log
    total: int
    finished: bool  # finished when planned (kd.run.finished): only its record is (re)written
    # the cell's run (kd.run.RunContext) as planned and checked, in the process that planned it; a Ray worker gets
    # the job without it and makes its own
    context: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "context": None}


def run_cell(job: CellJob) -> CellRecord:
    """One cell: skipped when finished, else its teacher taken from its donor where the donor has it, then an
    ordinary train-all (which resumes a cell that was stopped). Writes and returns the cell's record."""
    cell, root = job.cell, job.root
    run = RunFolder(root / "cells" / cell.name)
    entry = settings(cell, finished_entries(root, [cell]).get(cell.name))
    where = f"cell {job.index} of {job.total} ({cell.name})"
    if job.finished:
        print(f"kd: study {job.study}: {where} already finished, skipped", flush=True)
    else:
        from kd.run import RunContext, train_all
        from kd.run.keys import is_current, teacher_key

        if job.threads:
            import torch

            torch.set_num_threads(job.threads)
        print(f"kd: study {job.study}: {where} [pid {os.getpid()}]", flush=True)
        ctx = job.context or RunContext(job.config, run.root)
        if job.donor and not is_current(ctx, TEACHER, teacher_key(ctx)):
            donor = RunFolder(root / "cells" / job.donor)
            if not (donor.model_dir(TEACHER) / "metrics.json").is_file():
                raise KdError(f"cell {cell.name}: the teacher it shares with cell {job.donor} is not trained yet")
            share_teachers(donor, run)
            entry.teacher_from = job.donor
            print(f"kd: teacher and its logits taken from cell {job.donor} (same data, labelled rows and teacher "
                  "settings)", flush=True)
        cell_started = time.perf_counter()
        train_all(ctx, checked=job.context is not None)
        entry.seconds = round(time.perf_counter() - cell_started, 1)
    entry = finish(entry, run)
    write_cell_record(root, cell, entry)
    return entry
