"""onnx/report.md and report.json: one row per model, format and precision, from each folder's export_report.json."""

from __future__ import annotations

from pathlib import Path

from export.records import REPORT, ExportReport, Int8Candidate, RunExportReport
from kd.atomic import write_text
from kd.runfolder import RunFolder


def collect(onnx_root: Path) -> dict[str, ExportReport]:
    names = RunFolder(onnx_root.parent).model_names()  # the run's order: teachers first, then its methods
    return {m: ExportReport.read(onnx_root / m / REPORT) for m in names if (onnx_root / m / REPORT).is_file()}


def render(reports: dict[str, ExportReport]) -> str:
    lines = [
        "| model | format | precision | graph / variant | max abs Δlogits vs PyTorch | argmax agreement | "
        "validation acc (PyTorch) | size MB (PyTorch) | export s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gates = next(iter(reports.values())).gates if reports else None
    for name, r in reports.items():
        fp32, int8 = r.fp32, r.int8
        lines.append(f"| {name} | ONNX | fp32 | {fp32.graph} | {fp32.max_abs_diff:.1e} | {fp32.agreement:.2%} | "
                     f"{fp32.accuracy:.2%} ({r.pytorch_validation_accuracy:.2%}) | "
                     f"{fp32.size_mb:.1f} ({r.pytorch_size_mb:.1f}) | {r.export_seconds:.1f} |")
        lines.append(f"| {name} | ONNX | int8 | {int8.variant} from {int8.source} | {int8.max_abs_diff:.1e} | "
                     f"{int8.agreement:.2%} | {int8.accuracy:.2%} | {int8.size_mb:.1f} | {int8.quantize_seconds:.1f} |")
        ov = r.openvino
        if ov:
            lines.append(f"| {name} | OpenVINO | fp32 | IR (run in f32) | {ov.fp32.max_abs_diff:.1e} | "
                         f"{ov.fp32.agreement:.2%} | {ov.fp32.accuracy:.2%} | {ov.fp32.size_mb:.1f} | "
                         f"{ov.fp32.convert_seconds:.1f} |")
            lines.append(f"| {name} | OpenVINO | int8 | NNCF, {ov.int8.calibration_rows} training rows | "
                         f"{ov.int8.max_abs_diff:.1e} | {ov.int8.agreement:.2%} | {ov.int8.accuracy:.2%} | "
                         f"{ov.int8.size_mb:.1f} | {ov.int8.quantize_seconds:.1f} |")
    lines.append("")
    lines.append(f"Rows checked per model: the validation split ({_rows(reports)} rows); the fp32 files also parity "
                 "probes at the batch sizes and lengths listed in each export_report.json. Gates: fp32 max |Δ| ≤ "
                 f"{gates.fp32_max_abs_diff:.0e} and 100 % agreement; int8 agreement ≥ "
                 f"{gates.int8_min_agreement:.0%} and accuracy drop ≤ "
                 f"{gates.int8_max_accuracy_drop * 100:.1f} pt vs fp32.")
    lines.append("")
    lines.append("ONNX Runtime int8 variants, each on the whole validation split, whether it shipped or not:")
    for name, r in reports.items():
        lines.append(f"- {name}: " + "; ".join(f"{c}: {describe_candidate(c, record)}"
                                               for c, record in r.int8_candidates.items()))
    lines.append("")
    for name, r in reports.items():
        lines.append(f"- {name}: graph {r.graph_choice}; int8 {r.int8_choice}; whole export {r.total_seconds:.0f} s"
                     + (f"; {r.openvino_skipped}" if r.openvino_skipped else ""))
    return "\n".join(lines) + "\n"


def describe_candidate(name: str, record: Int8Candidate) -> str:
    """One int8 candidate's outcome: its check on the validation split, its McNemar test against the most accurate
    passing variant and its timing where it got that far."""
    text = f"{record.size_mb:.1f} MB, validation accuracy {record.accuracy:.2%} and agreement {record.agreement:.2%}"
    if record.failures:
        text += f" (fails: {'; '.join(record.failures)})"
    test = record.mcnemar_vs_most_accurate
    if test and test.most_accurate != name:
        text += f", McNemar p = {test.p_value:.2g} against {test.most_accurate}"
    if record.timed_seconds is not None:
        text += f", {record.timed_seconds * 1e3:.0f} ms on the timing batches"
    return text


def _rows(reports: dict[str, ExportReport]) -> str:
    return ", ".join(sorted({str(r.validation_rows) for r in reports.values()}))


def write_run_report(onnx_root: Path) -> RunExportReport:
    summary = RunExportReport(collect(onnx_root))
    summary.write(onnx_root / "report.json")
    write_text(onnx_root / "report.md", render(summary.models))
    return summary
