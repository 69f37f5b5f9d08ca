"""A run's students over more training seeds (`kd train-all --seeds N`). One training run of each student says
which test rows favour it, not whether another seed would: the McNemar test of the run's report covers the test
rows drawn, and training randomness (data order, head initialisation) moves a student by as much as a method's
gain. This trains every student again at seeds student.train.seed + 1, ..., + N - 1, each in its own run folder
(seeds/seed<k>/) that shares the run's teachers (their stage key does not hold the students' seed, so they are
not trained again), then writes the run's report with the students' accuracy over the seeds, paired by seed."""

from __future__ import annotations

import copy

from kd.errors import KdError
from kd.report import write_report
from kd.run.context import RunContext
from kd.run.stages import train_all
from kd.runfolder import share_teachers


def seeds_of(cfg, n: int) -> list[int]:
    """The students' seeds of a run over n seeds: its own first."""
    if n < 1:
        raise KdError(f"--seeds {n}: expected a positive number of training seeds (SEEDS=...)")
    return [cfg.student.train.seed + i for i in range(n)]


def train_seeds(ctx: RunContext, n: int, force: bool = False) -> None:
    """The run (train_all), then its students at n - 1 more seeds, then the report over them all."""
    seeds = seeds_of(ctx.cfg, n)
    train_all(ctx, force=force)
    for i, seed in enumerate(seeds[1:], 2):
        cfg = copy.deepcopy(ctx.cfg)
        cfg.student.train.seed = seed
        sub = RunContext(cfg, ctx.run.seed_dir(seed), ctx.methods)
        if ctx.state.is_main_process:
            share_teachers(ctx.run, sub.run)
        ctx.state.wait_for_everyone()
        ctx.log(f"students at seed {seed} ({i} of {n}): {sub.run.root}")
        train_all(sub, force=force)
    if ctx.state.is_main_process and n > 1:
        write_report(ctx.run)
