"""One cell of a study: an ordinary run folder made by kd.pipeline's train-all, skipped when finished, its teacher
taken from the cell that trained the same one (its donor), and its record (cells/<cell>.json) written. Every
executor runs cells through `run_cell`: this process, a Ray task, a --shard."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kd.config import RunConfig
from kd.errors import KdError
from kd.runfolder import RunFolder, atomic_dir
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
    finished: bool  # finished when planned: only its record is (re)written


def run_cell(job: CellJob) -> CellRecord:
    """One cell: skipped when finished, else its teacher taken from its donor where the donor has it, then an
    ordinary train-all (which resumes a cell that was stopped). Writes and returns the cell's record."""
    from kd.pipeline import Pipeline

    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    cell, root = job.cell, job.root
    pipe = Pipeline(job.config, root / "cells" / cell.name)
    entry = settings(cell, finished_entries(root, [cell]).get(cell.name))
    where = f"cell {job.index} of {job.total} ({cell.name})"
    if all(pipe.is_current(m) for m in pipe.model_names) and pipe.run.results_json.is_file():
        print(f"kd: study {job.study}: {where} already finished, skipped", flush=True)
    else:
        print(f"kd: study {job.study}: {where} [pid {os.getpid()}]", flush=True)
        if job.donor and not pipe.is_current("teacher"):
            donor = RunFolder(root / "cells" / job.donor)
            if not (donor.model_dir("teacher") / "metrics.json").is_file():
                raise KdError(f"cell {cell.name}: the teacher it shares with cell {job.donor} is not trained yet")
            share_teacher(donor, pipe.run)
            entry.teacher_from = job.donor
            print(f"kd: teacher and its logits taken from cell {job.donor} (same data, labelled rows and teacher "
                  "settings)", flush=True)
        cell_started = time.perf_counter()
        pipe.train_all()
        entry.seconds = round(time.perf_counter() - cell_started, 1)
    entry = finish(entry, pipe.run)
    write_cell_record(root, cell, entry)
    return entry


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

