"""Running a study's grid: planned here whichever executor runs it (every cell's settings checked before anything
is written, which cells are finished, which cell trains each shared teacher: its donor), then each cell run by
kd.study.cell.run_cell, one after another in this process, as Ray tasks (kd.study.ray_executor), or a --shard of
them, with study.json rewritten after every cell."""

from __future__ import annotations

import time
from pathlib import Path

from kd.errors import KdError
from kd.study.cell import CellJob, run_cell
from kd.study.grid import StudyConfig, cell_config, cells
from kd.study.record import finished_entries, write_record
from kd.study.report import write_study_report

EXECUTORS = ("local", "ray")


def plan(study: StudyConfig, root: Path, data: str | None, sections: dict[str, type]) -> list[CellJob]:
    """Every cell's run built and checked (a mistake stops the study before any cell writes), with its donor and
    state; each job carries its run to the cell that runs it in this process."""
    from kd.run import RunContext, check_inputs, finished, stages  # torch and transformers: only when cells run
    from kd.run.keys import teacher_key

    grid = cells(study)
    root = root.resolve()
    configs = {cell: cell_config(study, cell, data, sections) for cell in grid}
    donors: dict[str, str] = {}  # teacher stage key -> the first cell in grid order with it
    jobs = []
    for i, cell in enumerate(grid, 1):
        ctx = RunContext(configs[cell], root / "cells" / cell.name)
        table = stages(ctx)
        check_inputs(ctx, table)
        ctx.drop_teacher()
        donor = donors.setdefault(teacher_key(ctx), cell.name)
        jobs.append(CellJob(study.name, cell, configs[cell], root, None if donor == cell.name else donor,
                            study.cpus, i, len(grid), finished(ctx, table), context=ctx))
    return jobs


def shard(jobs: list[CellJob], spec: tuple[int, int] | None) -> list[CellJob]:
    """Shard i of N: every N-th teacher group, where the cells that share a teacher (with their donor) count as
    one, so that no shard trains a teacher another shard trains too, and no shard waits on another."""
    if spec is None:
        return jobs
    i, n = spec
    groups: list[str] = []
    for job in jobs:
        if (job.donor or job.cell.name) not in groups:
            groups.append(job.donor or job.cell.name)
    mine = set(groups[i - 1::n])
    return [job for job in jobs if (job.donor or job.cell.name) in mine]


def run_study(study: StudyConfig, root: Path, data: str | None, sections: dict[str, type], executor: str = "local",
              address: str | None = None, shard_spec: tuple[int, int] | None = None) -> dict:
    if executor not in EXECUTORS:
        raise KdError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}")
    started = time.perf_counter()
    if executor == "ray":
        from kd.study import ray_executor

        ray_executor.connect(address)  # a missing Ray or a wrong address stops here, before any write
    grid = cells(study)
    jobs = shard(plan(study, root, data, sections), shard_spec)
    part = f" (shard {shard_spec[0]} of {shard_spec[1]}: {len(jobs)} of {len(grid)} cells)" if shard_spec else ""
    print(f"kd: study {study.name}: {sum(j.finished for j in jobs)} of {len(jobs)} cells already finished{part}",
          flush=True)
    if executor == "ray":
        done = ray_executor.run(jobs, root, lambda: write_record(root, study, grid))
    else:
        for job in jobs:
            run_cell(job)
            write_record(root, study, grid)
        done = sum(not j.finished for j in jobs)
    seconds = time.perf_counter() - started
    print(f"kd: study {study.name}: {done} cells run in {seconds / 60:.1f} min",
          flush=True)
    return report_study(study, root)


def report_study(study: StudyConfig, root: Path) -> dict:
    """study.json merged from every finished cell's record (whoever ran it), then the report."""
    if finished_entries(root, cells(study)):
        write_record(root, study, cells(study))
    return write_study_report(root)
