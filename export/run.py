"""`kd export`: every trained model of a run folder to ONNX + int8, then one table for the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.config import ExportConfig
from export.exporter import export_key, export_model, is_current
from export.report import write_run_report
from kd.runfolder import RunFolder


def calibration_texts(texts: list[str], rows: int) -> list[str]:
    """A fixed random sample of the run's training split (`texts`): static int8 is calibrated on rows the gates
    never see."""
    if rows < 1:
        return []
    picked = np.random.default_rng(0).choice(len(texts), size=min(rows, len(texts)), replace=False)
    return [texts[i] for i in sorted(picked)]


def export_run(run_dir: Path, cfg: ExportConfig, models: list[str] | None = None, data: str | None = None,
               force: bool = False) -> dict:
    run = RunFolder(Path(run_dir))
    names = run.trained_models(models)
    (texts, labels, max_length), (train_texts, _, _) = run.splits(data, ["validation", "train"])
    if cfg.validation_rows:
        texts, labels = texts[:cfg.validation_rows], labels[:cfg.validation_rows]
    calibration = calibration_texts(train_texts, cfg.calibration_rows)
    timings: dict = {}  # one for all: the students' graphs have one structure, timed once
    for name in names:
        out_dir = run.onnx_dir(name)
        key = export_key(run.recorded_sha256(name), cfg)  # trained_models checked the file against it
        if not force and is_current(out_dir, key):
            print(f"kd: {name}: already exported with these weights and settings, skipped ({out_dir})")
            continue
        report = export_model(name, run.model_dir(name), out_dir, texts, labels, cfg, max_length,
                              log=lambda m: print(f"kd: {m}", flush=True), key=key, calibration_texts=calibration,
                              timings=timings)
        print(f"kd: {name}: exported in {report.total_seconds:.0f} s -> {out_dir}", flush=True)
    summary = write_run_report(run.onnx_root)
    print((run.onnx_root / "report.md").read_text())
    return summary
