"""onnx/report.md and report.json: one row per model and precision, from each folder's export_report.json."""

from __future__ import annotations

import json
from pathlib import Path

from kd.runfolder import MODEL_NAMES, write_json, write_text


def collect(onnx_root: Path) -> dict[str, dict]:
    return {m: json.loads((onnx_root / m / "export_report.json").read_text()) for m in MODEL_NAMES
            if (onnx_root / m / "export_report.json").is_file()}


def render(reports: dict[str, dict]) -> str:
    lines = [
        "| model | precision | graph / variant | max abs Δlogits vs PyTorch | argmax agreement | "
        "validation acc (PyTorch) | size MB (PyTorch) | export s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        fp32, int8 = r["fp32"], r["int8"]
        lines.append(f"| {name} | fp32 | {fp32['graph']} | {fp32['max_abs_diff']:.1e} | {fp32['agreement']:.2%} | "
                     f"{fp32['accuracy']:.2%} ({r['pytorch_validation_accuracy']:.2%}) | "
                     f"{fp32['size_mb']:.1f} ({r['pytorch_size_mb']:.1f}) | {r['export_seconds']:.1f} |")
        lines.append(f"| {name} | int8 | {int8['variant']} from {int8.get('source', 'fused')} | "
                     f"{int8['max_abs_diff']:.1e} | {int8['agreement']:.2%} | "
                     f"{int8['accuracy']:.2%} | {int8['size_mb']:.1f} | {int8['quantize_seconds']:.1f} |")
    lines.append("")
    lines.append(f"Rows checked per model: the validation split ({_rows(reports)} rows) plus parity probes at batch "
                 "sizes and lengths listed in each export_report.json. Gates: fp32 max |Δ| ≤ "
                 f"{_gate(reports, 'fp32_max_abs_diff'):.0e} and 100 % agreement; int8 agreement ≥ "
                 f"{_gate(reports, 'int8_min_agreement'):.0%} and accuracy drop ≤ "
                 f"{_gate(reports, 'int8_max_accuracy_drop') * 100:.1f} pt vs fp32.")
    lines.append("")
    for name, r in reports.items():
        lines.append(f"- {name}: graph {r['graph_choice']}; int8 {r['int8_choice']}; "
                     f"whole export {r['total_seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def _rows(reports: dict[str, dict]) -> str:
    return ", ".join(sorted({str(r["validation_rows"]) for r in reports.values()}))


def _gate(reports: dict[str, dict], key: str) -> float:
    return next(iter(reports.values()))["gates"][key]


def write_run_report(onnx_root: Path) -> dict:
    reports = collect(onnx_root)
    summary = {"models": reports}
    write_json(onnx_root / "report.json", summary)
    write_text(onnx_root / "report.md", render(reports))
    return summary
