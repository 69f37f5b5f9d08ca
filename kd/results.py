"""results.json: a run's comparison of its models, one schema written from these dataclasses and read back into
them (kd.typed). kd/report.py builds it from the models' metrics.json files and the manifest; `kd report`
rebuilds it; a study reads every cell's. Light on purpose (no numpy, no matplotlib): `kd study --help` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kd.intervals import Interval
from kd.typed import KEY, REST, Record, read


@dataclass
class McNemar:
    """The exact McNemar test of model b against model a on the same test rows (kd.metrics.mcnemar)."""

    only_a_right: int
    only_b_right: int
    p_value: float


@dataclass
class Rows:
    """The row counts of the run's splits: train, the students' share of it, the labelled rows among those (all of
    them without a label budget), validation and test."""

    train: int
    student_train: int
    labelled: int
    validation: int
    test: int


@dataclass
class DataSummary:
    """The manifest's data section (kd/manifest.py writes it); the keys this schema does not name are kept in
    `more` (the splits' fingerprints, the label names)."""

    source: str | None
    rows: Rows
    more: dict[str, Any] = field(default_factory=dict, metadata={REST: True})


@dataclass
class Device:
    """The manifest's device section: the device and the CPU the run trained on; the rest (threads, platform,
    precision, processes, GPU) in `more`."""

    device: str
    cpu: str
    more: dict[str, Any] = field(default_factory=dict, metadata={REST: True})


@dataclass
class ModelRow:
    """One model's test scores and costs, taken from its metrics.json (written by the pipeline); None where that
    model's file has no such score."""

    accuracy: float
    f1_macro: float
    f1_weighted: float
    nll: float | None = None
    ece: float | None = None
    brier: float | None = None
    params: int | None = None
    size_mb: float | None = None
    train_seconds: float | None = None
    validation_accuracy: float | None = None
    f1_per_class: dict[str, float] = field(default_factory=dict)
    test_rows: int | None = None
    batch: dict[str, int] | None = None  # kd.trainer.BatchPlan: world_size, global_batch, per_process_batch, ...
    method: str | None = None  # the recipe that trained it (kd/methods/); None: the teacher
    teacher: str | None = None  # the model folder of the teacher it learnt from
    procedure_seconds: float | None = None  # its teacher's own procedure (self-training rounds, calibration folds)
    teacher_file: str | None = None  # a student taught by soft labels from a file (teacher: file): that file
    teacher_file_sha256: str | None = None
    members: list[str] | None = None  # an ensemble: its members' model folders (its scores: their pooled probabilities)
    member_models: list[str | None] | None = None  # an ensemble: each member's teacher.model
    members_mean: dict[str, float] | None = None  # an ensemble: its members' mean scores (accuracy, nll, ece, ...)


@dataclass
class MethodTest:
    """A method's student against the baseline on the test rows, Holm-adjusted over the `compared` methods."""

    method: str | None
    teacher: str | None
    gain_pt: float  # accuracy points over the baseline
    mcnemar: McNemar  # a: the baseline, b: this student
    p_holm: float
    significant: bool = field(metadata={KEY: "significant_at_0.05"})
    compared: int


@dataclass
class Distillation:
    """kd's student (`distilled`) against the baseline, and against the teacher where the run has one."""

    temperature: float | None
    alpha: float | None
    gain_pt: float
    gap_closed: float | None  # share of the teacher-baseline gap closed; None: no teacher, or no gap
    distilled_over_teacher: float | None
    mcnemar: McNemar = field(metadata={KEY: "mcnemar_baseline_vs_distilled"})  # unadjusted
    significant: bool = field(metadata={KEY: "significant_at_0.05"})


@dataclass
class SeedComparison:
    """A student against the baseline over training seeds, paired by seed (the same seed: the same data order)."""

    difference: Interval  # accuracy, student - baseline, with its 95 % t-interval over seeds
    p_value: float  # paired t-test
    p_permutation: float  # exact sign-flip test (its smallest p with k seeds is 2 / 2^k)
    won: float  # the share of seeds on which the student beat the baseline (ties half)


@dataclass
class OverSeeds:
    """The run's students at several training seeds (kd train-all --seeds N): the run's own and its seeds/ runs."""

    seeds: list[int]
    accuracy: dict[str, list[float]]  # model -> test accuracy per seed
    means: dict[str, Interval]  # model -> mean accuracy with its 95 % t-interval over seeds
    versus_baseline: dict[str, SeedComparison] = field(default_factory=dict)
    train_seconds: float | None = None  # every student's training over every seed
    other_settings: list[str] = field(default_factory=list)  # seeds/ runs left out: settings not this run's


@dataclass
class Results(Record):
    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = "`kd report --run-dir {folder}` rebuilds it from the models"

    preset: str | None
    device: Device
    data: DataSummary
    models: dict[str, ModelRow]
    methods: dict[str, MethodTest] = field(default_factory=dict)  # each method's student against the baseline
    distillation: Distillation | None = None
    teacher_label_match: str | None = None  # how the teacher's label names met the data's
    over_seeds: OverSeeds | None = None  # the students at more training seeds, where the run trained them
    version: int = VERSION


def model_row(metrics: dict, where: str) -> ModelRow:
    """A model's row from its metrics.json (read as written by the pipeline; the row takes the scores it names)."""
    names = ModelRow.__dataclass_fields__
    return read(ModelRow, {k: v for k, v in metrics.items() if k in names}, where)


