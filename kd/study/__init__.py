"""A study: when does distillation pay? A grid of ordinary runs, one run folder per cell (label budget x seed x
student depth), each made by kd.run like any `train-all`, then one report over them: the mean of every
score over seeds with its 95 % t-interval, the paired difference distilled - baseline per seed with its
interval and a paired t-test, and each seed's McNemar test.

runs/<study>/
  study.json                 the grid (each cell's settings, run folder, state and scores) and the aggregates
  study.md                   the report; study.png (accuracy against label budget), study_calibration.png
  cells/<cell>/              one run folder per cell (manifest, models, results.md, ...)
  cells/<cell>.json          a finished cell's record (settings, scores, time); study.json merges them

A cell that has finished is skipped, and one that was stopped resumes like any run (finished stages are kept,
the stage that was cut short continues from its last checkpoint). Cells that would train the same teacher (the
same data, labelled rows and teacher settings: every seed at the full budget, every depth of a budget and seed)
take it, and its logits over the students' rows, from the first cell that trained it: the pipeline checks them
like its own (stage key, weights sha256, logits cache record) before using them.

The cells run one after another in one process, as Ray tasks across machines (kd.study.ray_executor), or in
shards (--shard i/N, one process each, e.g. a Slurm array) whose records --report merges.
"""

from __future__ import annotations

from kd.study.grid import (
    ALL,
    Cell,
    StudyConfig,
    available_studies,
    cell_config,
    cells,
    load_study,
    parse_shard,
    with_settings,
)
from kd.study.report import write_study_report
from kd.study.run import report_study, run_study

__all__ = ["ALL", "Cell", "StudyConfig", "available_studies", "cell_config", "cells", "load_study", "parse_shard",
           "report_study", "run_study", "with_settings", "write_study_report"]
