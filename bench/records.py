"""The bench's two records, one schema each: the summary of a bench run (runs/<name>/bench/summary.json, written
by `kd bench`) and a baseline (bench/baselines/<preset>-<device>-<cpu>.json, written by `kd bench-baseline`).
Both are written from these dataclasses and read back into them (kd/typed.py); `version` changes with the
schema, and a file of another version is refused in one line that names the command writing a current one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bench.cpu import Theoretical
from bench.yardstick import Efficiency, Peak
from engines.cpu import CpuIdentity
from kd.typed import Record

THROUGHPUT, LATENCY = "throughput", "b1 p50 latency"


@dataclass(frozen=True)
class Ratio:
    """A speed ratio measured inside one bench run (machine speed cancels out): how many times faster the `fast`
    row is than the `slow` one (row ids), in batch-32 throughput or in batch-1 p50 latency."""

    fast: str
    slow: str
    what: Literal["throughput", "b1 p50 latency"]
    value: float

    def __post_init__(self):
        if self.what not in (THROUGHPUT, LATENCY):
            raise ValueError(f"ratio {self.what!r}: expected {THROUGHPUT!r} or {LATENCY!r}")

    @property
    def key(self) -> tuple[str, str, str]:
        """What is compared, without the value: the same key in two runs is the same ratio."""
        return self.fast, self.slow, self.what

    @property
    def name(self) -> str:
        """As tables and messages show it."""
        return f"{self.fast} vs {self.slow}: {self.what}"


@dataclass(frozen=True)
class Settings:
    """What must match for two bench runs to be comparable at all."""

    samples: int | None
    batch_size: int
    order: str


@dataclass(frozen=True)
class Machine:
    cpu: CpuIdentity  # what the int8 choice and the gate's speed ratios hold for (engines/cpu.py)
    cpus_usable: int
    cpus_host: int | None
    threads: dict[str, int]
    accelerator: str | None
    platform: str


@dataclass
class SummaryRow:
    """One model x backend x device x precision: the parts of its measurements merged (bench/summary.py), and its
    speed-ups against the teacher's rows of the same run. None: not measured (a row may lack latency or
    throughput) or no reference to divide by."""

    row: str
    model: str
    backend: str
    device: str
    precision: str
    params: int | None
    size_mb: float | None
    int8_variant: str | None = None
    # batch 1: p50 is the fastest part's median; p90-p99 and the mean over every call of every part
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p50_parts_ms: list[float] = field(default_factory=list)
    p50_all_calls_ms: float | None = None
    mean_ms: float | None = None
    latency_calls: int | None = None
    flop_per_call: float | None = None
    # batch 32 over the whole split, the parts added up
    samples: int | None = None
    seconds: float | None = None
    padded_tokens: int | None = None
    real_tokens: int | None = None
    gflops_per_s: float | None = None
    accuracy: float | None = None
    f1_macro: float | None = None
    samples_per_s: float | None = None
    bulk_mode: str | None = None
    # beside the other rows of the run
    tokenize_b1_ms: float | None = None
    vs_teacher: str | None = None  # the reference row of the speed-ups
    throughput_speedup: float | None = None
    latency_speedup: float | None = None
    vs_fastest_b32: str | None = None  # the teacher's fastest PyTorch row on the device, per workload
    vs_fastest_b1: str | None = None
    throughput_speedup_vs_fastest: float | None = None
    latency_speedup_vs_fastest: float | None = None
    floor_ms: float | None = None  # the engine's per-call floor at batch 1 (CPU rows)
    arithmetic_ms: float | None = None  # its FLOPs per call at the best matrix-product rate of its precision


@dataclass(frozen=True)
class VariantsSide:
    """The int8 variants side by side (test_int8_variants): seconds per call, and how many times the fastest
    variant's time the one the engine picked took, per workload."""

    chosen: str | None
    seconds: dict[str, dict[str, float]]
    chosen_vs_fastest: dict[str, float]
    b1_texts: int
    b32_batches: int


@dataclass
class BenchSummary(Record):
    VERSION: ClassVar[int] = 3  # 2: the untyped summary with "format"
    FIX: ClassVar[str] = "run `make bench` (kd bench) on the run again"

    preset: str | None
    config: dict[str, Any]  # BenchConfig.to_dict: what `kd bench` ran with, to bench again the same way
    settings: Settings
    machine: Machine
    versions: dict[str, str]
    datetime: str | None
    rows: list[SummaryRow]
    skipped: dict[str, str]  # row id -> why this machine or run lacks it
    tokenize: dict[str, dict[str, float]]  # model -> {"b1_ms", "b32_ms"}
    floors_ms: dict[str, float]  # engine -> per-call floor at batch 1
    int8_variants: dict[str, VariantsSide]
    ratios: list[Ratio]
    cpu_peaks: list[Peak]
    cpu_theoretical_peak: Theoretical | None
    efficiency: dict[str, Efficiency]
    version: int = VERSION

    @property
    def device(self) -> str:
        """The accelerator its rows ran on, else cpu: what its baseline's file name says."""
        devices = {r.device for r in self.rows}
        return next((d for d in ("cuda", "mps") if d in devices), "cpu")

    def row(self, row_id: str) -> SummaryRow | None:
        return next((r for r in self.rows if r.row == row_id), None)


@dataclass(frozen=True)
class BaselineRow:
    accuracy: float  # the lowest of the bench runs
    f1_macro: float
    samples_per_s: float | None  # absolute figures, the bench runs' median: shown, not gated
    p50_ms: float | None


@dataclass(frozen=True)
class GateConfig:
    max_accuracy_drop_pt: float = 1.0  # accuracy and macro-F1, in points
    max_ratio_drop: float = 0.25  # a within-run speed ratio may fall this share below the baseline's
    # Batch-1 latency ratios between two rows that both answer in under this many ms (every row of the smoke
    # preset) are shown, not gated: such a call is mostly per-call overhead, which swings between sessions by more
    # than the gate allows (docs/bench.md). The cpu preset's rows stay gated, and so does a row that becomes slow.
    latency_floor_ms: float = 2.5
    why: str | None = None  # a baseline's own limits say why, for its readers


@dataclass
class Baseline(Record):
    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = "record it again with `make bench-baseline` (kd bench-baseline)"

    preset: str | None
    recorded: str
    bench_runs: int
    settings: Settings
    machine: Machine  # the first bench run's; machine.cpu is whose speed ratios these are
    versions: dict[str, str]
    rows: dict[str, BaselineRow]
    ratios: list[Ratio]
    gate: GateConfig | None = None  # limits of its own (a preset whose ratios swing more between sessions)
    version: int = VERSION
