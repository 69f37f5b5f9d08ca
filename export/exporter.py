"""Export one trained model: fp32 ONNX, the fused graph where it is faster, the best int8, and the OpenVINO fp32
and int8 IRs, each gated against PyTorch. The folder appears whole or not at all."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification

from engines import load_model
from engines.inference import length_sorted_batches
from engines.int8_host import VARIANTS
from engines.timing import timing_batches
from export.choose import (
    ChoiceContext,
    Int8Choice,
    check_int8,
    choose_fp32,
    choose_int8,
    int8_file,
)
from export.config import ExportConfig
from export.onnx_export import export_onnx
from export.openvino_export import export_openvino, missing_packages
from export.parity import ExportGateError, ParitySet, fp32_failures
from export.quantize import check_candidates
from export.records import REPORT, ExportReport
from kd.atomic import atomic_dir, write_json
from kd.digest import json_fingerprint
from kd.errors import KdError
from kd.metrics import accuracy
from kd.runfolder import sha256_file
from kd.typed import read

# Calibration texts go in length-sorted batches of 16: little padding, whose activations would enter the ranges,
# and fewer calls (fewer tokens and a faster NNCF than file-order batches of 8, at the same validation accuracy).
CALIBRATION_BATCH = 16
# Bumped when the export procedure changes what it ships: exports made by an older one are redone.
PROCEDURE = 6


def export_key(weights_sha256: str, cfg: ExportConfig) -> str:
    """What an export was made from: the weights (their sha256) and the export settings."""
    return json_fingerprint([weights_sha256, asdict(cfg), PROCEDURE])


def is_current(out_dir: Path, key: str) -> bool:
    """Made with this key, and not short of the OpenVINO IRs that this machine can now write."""
    try:
        recorded = ExportReport.read(out_dir / REPORT)
    except KdError:  # none, or one of another schema: exported again
        return False
    return recorded.key == key and not (recorded.openvino_skipped and not missing_packages())


def export_model(name: str, model_dir: Path, out_dir: Path, texts: list[str], labels: np.ndarray,
                 cfg: ExportConfig, max_length: int, log=print, key: str | None = None,
                 calibration_texts: list[str] = (), timings: dict | None = None) -> ExportReport:
    """`texts`, `labels`: the validation rows the gates use; `calibration_texts`: training rows for the static
    int8 variants. `key`: export_key of the weights when the caller has their verified sha256 (hashed here
    otherwise). `timings`: one dict for all of a run's exports, where graphs of the same structure share their
    timings (ChoiceContext.timed)."""
    check_candidates(cfg.int8_candidates)
    if not calibration_texts:
        raise KdError(f"{name}: no calibration texts (OpenVINO's int8 and qdq-static are calibrated on training rows)")
    if cfg.calibration_rows < 1:
        raise KdError(f"export.calibration_rows={cfg.calibration_rows}: expected at least 1 (OpenVINO's int8 and "
                      "the qdq-static variant are calibrated on training rows)")
    if cfg.optimize not in ("auto", "always", "never"):
        raise KdError(f"export.optimize={cfg.optimize!r}: expected auto, always or never")
    started = time.perf_counter()

    def say(message: str) -> None:
        log(f"{name}: {message} [{time.perf_counter() - started:.0f} s]")

    # The reference is the model as users run it (default attention). The graph is traced from a copy with
    # eager attention: the same math, in the pattern ONNX Runtime's optimizer fuses into its Attention op
    # (SDPA's traced pattern is left unfused).
    loaded = load_model("pytorch", model_dir)
    tokenizer, model = loaded.tokenizer, loaded.engine.model
    tokenizer.model_max_length = max_length  # saved beside every export: users truncate where the checks did
    traced = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True,
                                                                attn_implementation="eager").eval()
    parity = ParitySet(tokenizer, texts, labels, cfg, max_length)
    reference = parity.run(loaded.engine.run)
    say("PyTorch reference logits computed")
    key = key or export_key(sha256_file(model_dir / "model.safetensors"), cfg)
    report: dict = {"model": name, "key": key, "source": str(model_dir),
                    "validation_rows": len(texts), "gates": asdict(cfg.gates),
                    "pytorch_validation_accuracy": accuracy(reference.validation.argmax(-1), labels)}
    speed_batches = (timing_batches(tokenizer, texts, max_length, 1, 8)
                     + timing_batches(tokenizer, texts[8:], max_length, cfg.batch_size, 1))
    calibration = [batch for _, batch in length_sorted_batches(tokenizer, list(calibration_texts), max_length,
                                                                CALIBRATION_BATCH)]

    with atomic_dir(out_dir) as tmp:
        plain_path, fused_path = tmp / "model.onnx", tmp / "model_fused.onnx"
        t0 = time.perf_counter()
        inputs = export_onnx(traced, tokenizer, texts, plain_path, cfg.opset, cfg.exporter)
        report["export_seconds"] = time.perf_counter() - t0
        ctx = ChoiceContext(parity, reference, speed_batches, cfg, name, say, tmp, calibration, plain_path,
                            {} if timings is None else timings)
        try:
            fp32 = choose_fp32(ctx, plain_path, fused_path, model.config)
            report.update(fp32_candidates=fp32.candidates, graph_choice=str(fp32))
            say(f"fp32 ONNX graph: {fp32}")
            problems = fp32_failures(fp32.check, cfg.gates)
            if problems:
                raise ExportGateError(f"{name}: fp32 ONNX ({fp32.chosen}) does not match PyTorch: "
                                      + "; ".join(problems))
            checked = check_int8(ctx, fp32.check)
            report["int8_candidates"] = checked.records
            # from the plain graph: OpenVINO fuses attention itself, and the fused graph's contrib ops are
            # ONNX Runtime's own
            if cfg.openvino and missing_packages():
                report["openvino_skipped"] = f"no OpenVINO IRs written: {missing_packages()}"
                say(report["openvino_skipped"])
            elif cfg.openvino:
                report["openvino"] = export_openvino(name, plain_path, tmp, parity, reference, calibration, cfg.gates,
                                                     (loaded.config, tokenizer), say)
            int8 = choose_int8(ctx, checked)
        except ExportGateError as exc:
            # the evidence goes beside (not inside) the export folder, which stays as it was
            failed = out_dir.parent / f"{name}.failed.json"
            write_json(failed, {**report, **exc.evidence, "error": str(exc)})
            raise ExportGateError(f"{exc} (details: {failed})") from None
        report["int8_choice"] = f"{int8}; quantized from the plain graph"
        say(f"int8 choice: {report['int8_choice']}")

        # the folder keeps model.onnx (the chosen fp32 graph), model_int8.onnx (the choice above, for a user who
        # takes one file), every int8 variant that passed the gates when more than one did (the engine picks the
        # fastest on the CPU it runs on: engines/int8_host.py) and the OpenVINO folders
        if len(checked.passing) > 1:
            (tmp / VARIANTS).mkdir()
            for candidate in checked.passing:
                os.replace(int8_file(ctx, candidate), tmp / VARIANTS / f"{candidate}.onnx")
            os.link(tmp / VARIANTS / f"{int8.chosen}.onnx", tmp / "model_int8.onnx")  # one copy on disk
            report["int8_variants"] = {c: (tmp / VARIANTS / f"{c}.onnx").stat().st_size / 2**20
                                       for c in checked.passing}
        else:
            os.replace(int8.file, tmp / "model_int8.onnx")
        if fp32.chosen == "fused":
            os.replace(fused_path, plain_path)
        fused_path.unlink(missing_ok=True)
        for leftover in tmp.glob("int8-*.onnx"):
            leftover.unlink()
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        report.update(
            inputs=inputs,
            fp32={"graph": fp32.chosen, **fp32.check.to_dict(), "size_mb": plain_path.stat().st_size / 2**20},
            int8={"variant": int8.chosen, "source": "plain", **shipped_int8(int8),
                  "size_mb": (tmp / "model_int8.onnx").stat().st_size / 2**20},
            pytorch_size_mb=(model_dir / "model.safetensors").stat().st_size / 2**20,
            total_seconds=time.perf_counter() - started,
        )
        # the pieces were gathered as the export went (a failure writes them as evidence); the record is typed here
        record = read(ExportReport, report, "export report")
        record.write(tmp / REPORT)
    (out_dir.parent / f"{name}.failed.json").unlink(missing_ok=True)
    return record


def shipped_int8(int8: Int8Choice) -> dict:
    """The record of the int8 file that ships: the chosen candidate's, with its check on the whole split."""
    record = {k: v for k, v in int8.candidates[int8.chosen].items() if k not in ("failures", "timed_seconds")}
    return {**record, **int8.check.to_dict()}
