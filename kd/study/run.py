"""Running a study's grid: planned here whichever executor runs it (every cell's settings checked before anything
is written, which cells are finished, which cell trains each shared teacher: its donor), then each cell run by
kd.study.cell.run_cell, one after another in this process, as Ray tasks (kd.study.ray_executor), or a --shard of
them, with study.json rewritten after every cell."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from kd.config import RunConfig, key_settings
from kd.errors import KdError
from kd.runfolder import TEACHER, RunFolder
from kd.study.cell import CellJob, run_cell
from kd.study.grid import Cell, StudyConfig, cell_config, cells
from kd.study.plan import next_seed
from kd.study.record import cell_record_path, finished_entries, write_record
from kd.study.report import write_study_report

EXECUTORS = ("local", "ray")


def finished_as_recorded(root: Path, cell: Cell, cfg: RunConfig) -> str | None:
    """A cell that finished with exactly these settings (its record, its report, and its manifest's config equal to
    `cfg`): its teacher's recorded stage key ("" where it has no teacher). None: it has to be planned in full. A
    finished cell is not built again: its record is what the study reads of it, and a cell that takes its teacher
    checks the teacher's weights when it does."""
    run = RunFolder(root / "cells" / cell.name)
    if not (cell_record_path(root, cell).is_file() and run.results_json.is_file()):
        return None
    if key_settings(run.read_manifest().get("config")) != json.loads(json.dumps(cfg.identity())):
        return None
    teacher = run.model_dir(TEACHER) / "metrics.json"
    return json.loads(teacher.read_text()).get("stage_key", "") if teacher.is_file() else ""


def plan(study: StudyConfig, root: Path, data: str | None, sections: dict[str, type]) -> list[CellJob]:
    """Every cell's run built and checked (a mistake stops the study before any cell writes), with its donor and
    state; each job carries its run to the cell that runs it in this process. A cell finished with its settings
    is taken as recorded, without building its run."""
    from kd.run import RunContext, check_inputs, finished, stages  # torch and transformers: only when cells run
    from kd.run.keys import teacher_key

    grid = cells(study)
    root = root.resolve()
    configs = {cell: cell_config(study, cell, data, sections) for cell in grid}
    donors: dict[str, str] = {}  # teacher stage key -> the first cell in grid order with it
    jobs = []
    for i, cell in enumerate(grid, 1):
        recorded = finished_as_recorded(root, cell, configs[cell])
        if recorded is not None:
            if recorded:
                donors.setdefault(recorded, cell.name)
            jobs.append(CellJob(study.name, cell, configs[cell], root, None, study.cpus, i, len(grid), True))
            continue
        ctx = RunContext(configs[cell], root / "cells" / cell.name)
        table = stages(ctx)
        check_inputs(ctx, table)
        ctx.drop_teacher()
        # a cell of methods without a teacher trains none, and takes none
        donor = donors.setdefault(teacher_key(ctx), cell.name) if TEACHER in table else cell.name
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
    if shard_spec and study.precision is not None:
        raise KdError(f"--shard {shard_spec[0]}/{shard_spec[1]}: a study with precision: adds seeds as its "
                      "intervals come in, which shards cannot share; run it whole (or as Ray tasks)")
    started = time.perf_counter()
    if executor == "ray":
        from kd.study import ray_executor

        ray_executor.connect(address)  # a missing Ray or a wrong address stops here, before any write
    study, done = seeds_so_far(study, root), 0
    while True:
        grid = cells(study)
        jobs = shard(plan(study, root, data, sections), shard_spec)
        part = f" (shard {shard_spec[0]} of {shard_spec[1]}: {len(jobs)} of {len(grid)} cells)" if shard_spec else ""
        print(f"kd: study {study.name}: {sum(j.finished for j in jobs)} of {len(jobs)} cells already finished"
              f"{part}", flush=True)
        if executor == "ray":
            if not ray_executor.import_ray().is_initialized():  # a precision study's next seed: Ray again
                ray_executor.connect(address)
            done += ray_executor.run(jobs, root, lambda s=study, g=grid: write_record(root, s, g))
        else:
            for job in jobs:
                run_cell(job)
                write_record(root, study, grid)
            done += sum(not j.finished for j in jobs)
        seed = next_seed(study, list(finished_entries(root, grid).values()))
        if seed is None:
            break
        print(f"kd: study {study.name}: a primary interval is wider than ±{study.precision:g} pt with "
              f"{len(study.seeds)} seeds: adding seed {seed} (at most {study.max_seeds})", flush=True)
        study = dataclasses.replace(study, seeds=[*study.seeds, seed])
    seconds = time.perf_counter() - started
    print(f"kd: study {study.name}: {done} cells run in {seconds / 60:.1f} min",
          flush=True)
    return report_study(study, root)


def seeds_so_far(study: StudyConfig, root: Path) -> StudyConfig:
    """A `precision:` study with the seeds it added in earlier runs (each seed after the listed ones whose cells
    all finished), so that a stopped study resumes where it was and its report covers them."""
    if study.precision is None:
        return study
    seeds = list(study.seeds)
    while len(seeds) < (study.max_seeds or 0):
        extra = cells(dataclasses.replace(study, seeds=[max(seeds) + 1]))
        if len(finished_entries(root, extra)) < len(extra):
            break
        seeds.append(max(seeds) + 1)
    return dataclasses.replace(study, seeds=seeds)


def report_study(study: StudyConfig, root: Path) -> dict:
    """study.json merged from every finished cell's record (whoever ran it), then the report."""
    study = seeds_so_far(study, root)
    if finished_entries(root, cells(study)):
        write_record(root, study, cells(study))
    return write_study_report(root)
