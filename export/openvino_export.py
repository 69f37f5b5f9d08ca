"""The OpenVINO IRs of one model: `openvino.convert_model` of the plain fp32 ONNX graph, and NNCF's static int8
(`nncf.quantize`, transformer preset, calibrated on training rows), held to the ONNX exports' gates: the fp32 IR
run in f32 matches PyTorch; the int8 IR agrees with it and keeps its validation accuracy."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from export.choose import run_graph
from export.engines import Batch, engine, feed
from export.engines.openvino import FOLDERS
from export.parity import Check, ExportGateError, Outputs, ParitySet, fp32_failures, int8_failures

OPENVINO = engine("openvino")


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
class OpenVinoFiles:
    """The two IRs as written, before their gates."""

    fp32: Path
    int8: Path
    convert_seconds: float
    quantize_seconds: float  # NNCF's, with the int8 IR's saving
    calibration_rows: int


def write_openvino(onnx_graph: Path, out: Path, calibration: list[Batch], extras) -> OpenVinoFiles:
    """Write out/openvino/ (the converted fp32 IR) and out/openvino_int8/ (NNCF's int8 of it)."""
    import nncf
    import openvino as ov

    t0 = time.perf_counter()
    model = ov.convert_model(onnx_graph)
    fp32_file = save(model, out / FOLDERS["fp32"], extras)
    convert_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    logging.getLogger("nncf").setLevel(logging.ERROR)  # progress bars and INFO lines per step
    names = [i.get_any_name() for i in model.inputs]  # the graph's inputs (DistilBERT: no token_type_ids)
    feeds = [feed(names, batch, "the OpenVINO model") for batch in calibration]
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds))
    int8_file = save(quantized, out / FOLDERS["int8"], extras)
    return OpenVinoFiles(fp32_file, int8_file, convert_seconds, time.perf_counter() - t0,
                         sum(len(b["input_ids"]) for b in calibration))


def check_openvino(name: str, files: OpenVinoFiles, parity: ParitySet, reference: Outputs, gates, say) -> dict:
    """The IRs' gates; the record for export_report.json. Raises ExportGateError (with the record as evidence)
    when either fails."""
    record: dict = {}
    try:
        fp32 = checked(parity, reference, files.fp32, "fp32", f"{name}: OpenVINO fp32 IR")
        record["fp32"] = {**fp32.to_dict(), "convert_seconds": files.convert_seconds, "precision_hint": "f32",
                          "size_mb": size_mb(files.fp32)}
        problems = fp32_failures(fp32, gates)
        if problems:
            raise ExportGateError(f"{name}: OpenVINO fp32 IR (run in f32) does not match PyTorch: "
                                  + "; ".join(problems))
        say(f"OpenVINO fp32 IR: max |Δlogits| {fp32.max_abs_diff:.1e}, agreement {fp32.agreement:.2%}")
        # (on the validation split only, as the ONNX int8 variants: the int8 gates read nothing else)
        int8 = checked(parity.without_probes(), reference, files.int8, "int8", f"{name}: OpenVINO int8 IR")
        failures = int8_failures(int8, fp32, gates)
        record["int8"] = {**int8.to_dict(), "quantize_seconds": files.quantize_seconds,
                          "size_mb": size_mb(files.int8), "calibration_rows": files.calibration_rows,
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
