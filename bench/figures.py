"""What each bench measurement records beside pytest-benchmark's timings: one dataclass per kind of measurement,
written into the benchmark's `extra_info` once (`Figure.info`) and read back by the summary with `read_figure`.
pytest-benchmark computes min, max, mean, median and IQR only; percentiles, throughput, accuracy and FLOPs are
ours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bench.cpu import Theoretical
from bench.records import Machine
from bench.yardstick import Peak
from kd.typed import read, to_data

KINDS: dict[str, type[Figure]] = {}


class Figure:
    kind: ClassVar[str]  # extra_info's "kind": which measurement wrote it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        KINDS[cls.kind] = cls

    def info(self) -> dict:
        """For `benchmark.extra_info.update`."""
        return {"kind": self.kind, **to_data(self)}


def read_figure(info: dict, where: str, path: tuple = (), fix: str = "") -> Figure:
    """The figure a measurement wrote into its extra_info (`where`: the file, `path`: the benchmark's extra_info in
    it), or one KdError naming the field."""
    kind = read(Literal[tuple(KINDS)], info.get("kind"), where, (*path, "kind"), fix)
    return read(KINDS[kind], {k: v for k, v in info.items() if k != "kind"}, where, path, fix)


@dataclass(frozen=True)
class PeakFigure(Figure):
    """test_cpu_peak: a matrix product's rate, and the CPU's theoretical fp32 peak beside it."""

    kind: ClassVar[str] = "peak"
    peak: Peak
    theoretical: Theoretical | None


@dataclass(frozen=True)
class TokenizeFigure(Figure):
    kind: ClassVar[str] = "tokenize"
    model: str
    batch_size: int
    calls: int
    ms_per_call: float  # the median call
    texts_per_s: float


@dataclass(frozen=True)
class FloorFigure(Figure):
    """test_floor: an engine's per-call floor at batch 1 (bench/floor.py)."""

    kind: ClassVar[str] = "floor"
    backend: str
    calls: int
    p50_ms: float


@dataclass(frozen=True)
class RowFields:
    """Which row a latency or throughput part measured, and the model it loaded."""

    row: str
    model: str
    backend: str
    device: str
    precision: str
    params: int | None
    size_mb: float | None
    file: str | None
    int8_variant: str | None  # ONNX Runtime int8: the export's variant this CPU runs (engines/int8_host.py)


@dataclass(frozen=True)
class LatencyFigure(Figure):
    """One part of a row's batch-1 latency (test_latency): every latency text, in `passes` passes."""

    kind: ClassVar[str] = "latency"
    of: RowFields
    part: int
    parts: int
    texts: int
    passes: int
    mean_tokens: float
    flop_per_call: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class ThroughputFigure(Figure):
    """One part of a row's batch-32 throughput (test_throughput): its share of the split's batches."""

    kind: ClassVar[str] = "throughput"
    of: RowFields
    part: int
    parts: int
    batch_size: int
    order: str
    samples: int
    batches: int
    passes: int
    seconds: float  # the fastest pass in the fastest bulk mode
    bulk_mode: str
    mode_seconds: dict[str, float]
    median_pass_seconds: float
    confusion_matrix: list[list[int]]
    padded_tokens: int
    real_tokens: int
    flop: float


@dataclass(frozen=True)
class Int8VariantsFigure(Figure):
    """test_int8_variants: each int8 variant's seconds per call on the bench's texts, and the one the engine
    picked for this CPU."""

    kind: ClassVar[str] = "int8_variants"
    model: str
    chosen: str | None
    b1_texts: int
    b32_batches: int
    seconds: dict[str, dict[str, float]]  # variant -> {"b1": per call, "b32": per batch}


@dataclass(frozen=True)
class Skip:
    test: str  # the test's id, e.g. test_latency[teacher-openvino-cpu-int8-1of3]
    reason: str


@dataclass(frozen=True)
class SuiteMeta:
    """What the summary needs beyond the measurements (bench/conftest.py writes it as the JSON's "kd_bench")."""

    config: dict[str, Any]  # BenchConfig.to_dict
    preset: str | None
    skipped: list[Skip]
    machine: Machine
    versions: dict[str, str]
