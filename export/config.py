"""Export settings: a dataclass with defaults that pass on this project's models, overridable by --set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Gates:
    fp32_max_abs_diff: float = 1e-4  # max |logits_onnx - logits_torch| over every parity probe
    fp32_min_agreement: float = 1.0  # argmax agreement with PyTorch, fraction of rows
    int8_min_agreement: float = 0.99
    int8_max_accuracy_drop: float = 0.005  # validation accuracy, int8 vs fp32 ONNX (0.005 = 0.5 pt)


@dataclass
class ExportConfig:
    opset: int = 17
    # legacy: torch.onnx's TorchScript exporter, whose graphs ONNX Runtime's transformer optimizer knows how to
    # fuse; dynamo: torch.export-based (torch's default).
    exporter: str = "legacy"
    # auto: run ONNX Runtime's transformer optimizer and keep its graph only if it passes the gates and is
    # faster; always / never.
    optimize: str = "auto"
    # int8 variants tried (export/quantize.py's CANDIDATES), each on the whole validation split; of those that pass
    # the gates and are equal in accuracy (int8_same_accuracy_p), the first listed ships as model_int8.onnx unless
    # another is over `speed_margin` faster here, and all of them are kept for the per-CPU choice
    # (engines/int8_host.py). The defaults are the two dynamic per-channel variants, int8 and uint8 weights, whose
    # speed differs from CPU to CPU (docs/export.md); each one more costs every export its quantization and its
    # validation pass.
    int8_candidates: list[str] = field(default_factory=lambda: ["qint8-per-channel", "quint8-per-channel"])
    openvino: bool = True  # also write the OpenVINO fp32 and int8 IRs (openvino/, openvino_int8/)
    # training rows (a fixed random sample; never validation or test) that calibrate the static int8 variants:
    # ONNX Runtime's qdq-static and OpenVINO's NNCF int8
    calibration_rows: int = 300
    # two int8 variants are equal in validation accuracy unless an exact McNemar test on the rows where exactly one
    # is right gives p below this
    int8_same_accuracy_p: float = 0.05
    # A choice made on speed (fused graph, int8 variant) moves off its default only for a contender at least this
    # much faster: closer timings are noise here (baseline and distilled, the same architecture, once got
    # different graphs from differences of a percent), and a rerun must ship the same files.
    speed_margin: float = 0.05
    validation_rows: int | None = None  # rows of the validation split to check on (None: all)
    # rows in each parity probe (several batch sizes and lengths, with padding); batches of 32 with padding are
    # the validation pass's own
    probe_rows: int = 16
    probe_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 16])
    probe_max_lengths: list[int] = field(default_factory=lambda: [16, 128])
    batch_size: int = 32  # batches of the full validation pass
    gates: Gates = field(default_factory=Gates)


def export_config(run_dir: Path, overrides: list[str] = ()) -> ExportConfig:
    """The run's export settings: its preset's `export` section (recorded in the manifest), then `--set`s."""
    from kd.config import build_dataclass
    from kd.runfolder import RunFolder

    manifest = RunFolder(Path(run_dir)).read_manifest()
    return build_dataclass(ExportConfig, manifest.get("config", {}).get("export") or {}, overrides)
