"""The export's records, one schema each: a model's export_report.json (beside its exported files) and the run's
onnx/report.json. Written from these dataclasses and read back into them (kd/typed.py); `version` changes
with the schema. Each file's check against PyTorch is parity.Check's fields, flat, with what that file adds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from export.config import Gates
from export.parity import Check
from kd.typed import Record

REPORT = "export_report.json"  # in each model's export folder


@dataclass(frozen=True)
class McNemar:
    """An int8 variant's exact McNemar test against the most accurate passing variant (kd.metrics.mcnemar)."""

    most_accurate: str
    only_a_right: int
    only_b_right: int
    p_value: float


@dataclass(kw_only=True)
class Fp32Candidate(Check):
    """The plain or the fused fp32 graph, as the graph choice saw it (export/choose.py)."""

    fused_ops: dict[str, int] | None = None  # the fused graph: how many of each fused operator
    optimize_seconds: float | None = None
    timed_seconds: float | None = None  # on the timing batches, where speed decided


@dataclass(kw_only=True)
class Int8Candidate(Check):
    """One int8 variant on the whole validation split, whether it shipped or not."""

    quantize_seconds: float
    size_mb: float
    validation_seconds: float
    failures: list[str]  # the gates it fails (none: it passes)
    mcnemar_vs_most_accurate: McNemar | None = None
    timed_seconds: float | None = None


@dataclass(kw_only=True)
class Fp32File(Check):
    """model.onnx as it ships."""

    graph: str  # plain or fused
    size_mb: float


@dataclass(kw_only=True)
class Int8File(Check):
    """model_int8.onnx as it ships: the chosen variant's record, with its check on the whole split."""

    variant: str
    source: str  # the fp32 graph it was quantized from
    quantize_seconds: float
    size_mb: float
    validation_seconds: float
    mcnemar_vs_most_accurate: McNemar | None = None


@dataclass(kw_only=True)
class OpenVinoFp32(Check):
    convert_seconds: float
    precision_hint: str  # the INFERENCE_PRECISION_HINT it was checked (and is run) with
    size_mb: float


@dataclass(kw_only=True)
class OpenVinoInt8(Check):
    quantize_seconds: float
    size_mb: float
    calibration_rows: int
    failures: list[str]


@dataclass(frozen=True)
class OpenVinoRecord:
    fp32: OpenVinoFp32
    int8: OpenVinoInt8


@dataclass(kw_only=True)
class ExportReport(Record):
    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = "export the run again with `make export` (kd export --force)"

    model: str
    key: str  # what it was made from (exporter.export_key): weights and settings
    source: str  # the PyTorch model folder
    validation_rows: int
    gates: Gates
    pytorch_validation_accuracy: float
    pytorch_size_mb: float
    inputs: list[str]  # the graph's input names
    export_seconds: float
    total_seconds: float
    fp32_candidates: dict[str, Fp32Candidate]
    graph_choice: str  # which fp32 graph shipped, and why
    int8_candidates: dict[str, Int8Candidate]
    int8_choice: str  # which int8 variant model_int8.onnx is, and why
    int8_variants: dict[str, float] | None = None  # every variant kept in int8_variants/ (MB), where several passed
    fp32: Fp32File
    int8: Int8File
    openvino: OpenVinoRecord | None = None
    openvino_skipped: str | None = None  # why no OpenVINO IRs were written
    version: int = VERSION


@dataclass
class RunExportReport(Record):
    """onnx/report.json: every model's export report, in the run's order."""

    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = ExportReport.FIX

    models: dict[str, ExportReport]
    version: int = VERSION
