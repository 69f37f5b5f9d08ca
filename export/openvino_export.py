"""The OpenVINO IRs of one model: `openvino.convert_model` of the plain fp32 ONNX graph, and NNCF's static int8
(`nncf.quantize`, transformer preset, calibrated on training rows), held to the ONNX exports' gates: the fp32 IR
run in f32 matches PyTorch; the int8 IR agrees with it and keeps its validation accuracy."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from engines import Batch, engine, feed, not_installed
from engines.sessions.openvino import FOLDERS, input_names
from export.choose import run_graph
from export.parity import Check, ExportGateError, Outputs, ParitySet, fp32_failures, int8_failures

OPENVINO = engine("openvino")


def missing_packages() -> str | None:
    """One line naming what the OpenVINO export lacks (openvino itself, or NNCF for its int8), None: nothing."""
    return OPENVINO.not_installed() or not_installed("nncf")


def checked(parity: ParitySet, reference: Outputs, file: Path, precision: str, what: str) -> Check:
    """The IR against PyTorch on the whole validation split (and the probes, where `parity` has them); one that
    cannot run fails the gate."""
    return parity.compare(run_graph(parity, file, what, kind=OPENVINO, precision=precision), reference)


def save(model, folder: Path, extras) -> Path:
    """model.xml + model.bin in `folder` with the tokenizer and config (`extras`: objects with save_pretrained)."""
    import openvino as ov

    folder.mkdir()
    file = folder / "model.xml"
    ov.save_model(model, file, compress_to_fp16=False)  # save_model halves the weights to fp16 unless told not to
    for extra in extras:
        extra.save_pretrained(folder)
    return file


@dataclass
class OpenVinoInt8:
    """NNCF's int8 IR as written, before its gate."""

    file: Path
    quantize_seconds: float  # NNCF's, with the IR's saving
    calibration_rows: int


def quantize_openvino(model, out: Path, calibration: list[Batch], extras) -> OpenVinoInt8:
    """out/openvino_int8/: NNCF's int8 of the converted fp32 `model`."""
    import nncf

    t0 = time.perf_counter()
    logging.getLogger("nncf").setLevel(logging.ERROR)  # progress bars and INFO lines per step
    feeds = [feed(input_names(model), batch, "the OpenVINO model") for batch in calibration]
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds))
    file = save(quantized, out / FOLDERS["int8"], extras)
    return OpenVinoInt8(file, time.perf_counter() - t0, sum(len(b["input_ids"]) for b in calibration))


def export_openvino(name: str, onnx_graph: Path, out: Path, parity: ParitySet, reference: Outputs,
                    calibration: list[Batch], gates, extras, say) -> dict:
    """Write out/openvino/ and out/openvino_int8/; the record for export_report.json. Raises ExportGateError (with
    the record as evidence) when either IR fails its gate."""
    import openvino as ov

    record: dict = {}
    t0 = time.perf_counter()
    model = ov.convert_model(onnx_graph)
    fp32_file = save(model, out / FOLDERS["fp32"], extras)
    convert_seconds = time.perf_counter() - t0
    try:
        fp32 = checked(parity, reference, fp32_file, "fp32", f"{name}: OpenVINO fp32 IR")
        record["fp32"] = {**fp32.to_dict(), "convert_seconds": convert_seconds, "precision_hint": "f32",
                          "size_mb": size_mb(fp32_file)}
        problems = fp32_failures(fp32, gates)
        if problems:
            raise ExportGateError(f"{name}: OpenVINO fp32 IR (run in f32) does not match PyTorch: "
                                  + "; ".join(problems))
        say(f"OpenVINO fp32 IR: max |Δlogits| {fp32.max_abs_diff:.1e}, agreement {fp32.agreement:.2%}")
        int8_ir = quantize_openvino(model, out, calibration, extras)
        # (on the validation split only, as the ONNX int8 variants: the int8 gates read nothing else)
        int8 = checked(parity.without_probes(), reference, int8_ir.file, "int8", f"{name}: OpenVINO int8 IR")
        failures = int8_failures(int8, fp32, gates)
        record["int8"] = {**int8.to_dict(), "quantize_seconds": int8_ir.quantize_seconds,
                          "size_mb": size_mb(int8_ir.file), "calibration_rows": int8_ir.calibration_rows,
                          "failures": failures}
        if failures:
            raise ExportGateError(f"{name}: OpenVINO int8 IR fails the gates: " + "; ".join(failures))
        say(f"OpenVINO int8 IR (NNCF): validation accuracy {int8.accuracy:.2%}, agreement {int8.agreement:.2%}")
    except ExportGateError as exc:
        exc.evidence = {"openvino": record, **exc.evidence}
        raise
    return record


def size_mb(xml: Path) -> float:
    return (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20
