"""study.json's schema: a study's cells (CellRecord, also each cell's own cells/<cell>.json) and its aggregates
over seeds (Group), as dataclasses that kd.typed writes and reads back. Light on purpose (no numpy, no scipy):
`kd study --help` imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kd.intervals import Interval, PairedDifference
from kd.results import McNemar, MethodTest
from kd.runfolder import is_teacher
from kd.study.grid import StudyConfig
from kd.typed import Record

METRICS = ("accuracy", "f1_macro", "nll", "ece", "brier")  # the scores a study keeps of each model
PRIMARY, EXPLORATORY = "primary", "exploratory"  # Comparison.family of a study that declares primary comparisons


@dataclass
class Scores:
    """A model's test scores in a cell (the study's METRICS); None where its metrics.json has none."""

    accuracy: float
    f1_macro: float
    nll: float | None = None
    ece: float | None = None
    brier: float | None = None


@dataclass
class Times:
    """A student's training seconds, and its teacher's (the fine-tuned one it learnt from, plus the teacher's own
    procedure: self-training rounds or calibration folds)."""

    student: float | None
    teacher: float


@dataclass
class CellRecord(Record):
    """A cell: its settings (all a planned cell has), then what a finished one scored."""

    VERSION: ClassVar[int] = 1  # also study.json's cells
    FIX: ClassVar[str] = "delete it, and `kd study` writes it again (a finished cell is not trained again)"

    name: str
    budget: int | Literal["all"]
    seed: int
    depth: str | None  # student.init; None: the base preset's
    run_dir: str  # relative to the study folder
    overrides: list[str]
    state: Literal["planned", "finished"] = "planned"
    seconds: float | None = None  # the cell's wall time where this process trained it
    teacher_from: str | None = None  # the cell whose teacher it took
    times: dict[str, Times] = field(default_factory=dict)  # student model -> its training times
    tests: dict[str, MethodTest] = field(default_factory=dict)  # each method's student against the baseline
    labelled_rows: int | None = None
    student_rows: int | None = None
    test_rows: int | None = None
    scores: dict[str, Scores] = field(default_factory=dict)  # model -> its test scores
    mcnemar: McNemar | None = None  # distilled against baseline
    cpu: str | None = None
    version: int = VERSION

    @property
    def finished(self) -> bool:
        return self.state == "finished"


@dataclass
class Comparison:
    """One model against a reference model (the baseline, kd, the fine-tuned teacher), paired by seed."""

    reference: str
    differences: dict[str, PairedDifference]  # metric -> model - reference
    # the accuracy t-test's p, Holm-adjusted over the comparison's family: the study's declared primary comparisons
    # (family "primary"); none for an exploratory one beside them (a family of one: unadjusted); or, in a study that
    # declares none, every model compared with the same reference (family "<reference>")
    p_holm: float
    # the accuracy difference's interval at 1 - 0.05 / m (m comparisons in the family): Bonferroni's simultaneous
    # interval, which excludes 0 only where Holm's first step would reject too, so it never overstates a gain
    adjusted: Interval
    family: str = ""
    p_permutation: float = float("nan")  # the sign-flip permutation test's p, Holm-adjusted like p_holm
    bootstrap: Interval | None = None  # the BCa bootstrap interval at adjusted's confidence
    won: float = float("nan")  # the share of seeds on which the model beat the reference (ties half)

    @property
    def primary(self) -> bool:
        return self.family == PRIMARY

    @property
    def tests_disagree(self) -> bool:
        """t and the permutation test on different sides of 0.05."""
        return (self.p_holm < 0.05) != (self.p_permutation < 0.05) if self.p_permutation == self.p_permutation \
            else False


@dataclass
class Cost:
    """A student's training time over the baseline's, per seed: alone, and with the teachers it needed; and the same
    in seconds, as the cells measured them (None in a study.json written before they were kept)."""

    alone: Interval
    with_teacher: Interval
    seconds: Interval | None = None
    seconds_with_teacher: Interval | None = None


@dataclass
class SeedTest:
    """A seed's McNemar test of distilled against baseline (none where the cell has no distilled student)."""

    seed: int
    mcnemar: McNemar | None = None


@dataclass
class Group:
    """One (label budget, student depth) over its seeds."""

    budget: int | Literal["all"]
    depth: str | None
    labelled_rows: int
    seeds: list[int]
    means: dict[str, dict[str, Interval]]  # model -> metric -> mean over seeds
    differences: dict[str, PairedDifference]  # metric -> distilled - baseline
    mcnemar: list[SeedTest]
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # model -> reference -> Comparison
    cost: dict[str, Cost] = field(default_factory=dict)  # student model -> its training time over the baseline's

    @property
    def students(self) -> list[str]:
        return [m for m in self.means if not is_teacher(m)]

    def best(self) -> str | None:
        """The student with the highest mean accuracy."""
        return max(self.students, key=lambda m: self.means[m]["accuracy"].mean, default=None)


@dataclass
class StudyRecord(Record):
    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = ("this study folder is damaged or older: delete study.json and `kd study NAME --run-dir "
                          "{folder} --report` rebuilds it from the cells' records")

    study: str
    config: StudyConfig
    cpu: str
    cells: list[CellRecord]
    groups: list[Group] = field(default_factory=list)  # the aggregates over seeds, written by the report
    version: int = VERSION

    @property
    def finished(self) -> list[CellRecord]:
        return [c for c in self.cells if c.finished]
