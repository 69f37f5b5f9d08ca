"""`kd export`: every trained model of a run folder to ONNX + int8, then one table for the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.config import ExportConfig
from export.exporter import export_key, export_model, is_current
from export.report import write_run_report
from kd.config import RunConfig, build_dataclass
from kd.errors import KdError
from kd.runfolder import MODEL_NAMES, RunFolder


def trained_models(run: RunFolder, wanted: list[str] | None) -> list[str]:
    """The run's finished models (wanted ones only, when given), each checked against its recorded sha256."""
    run.read_manifest()  # a clear error for a damaged folder or one of another format
    found = [m for m in MODEL_NAMES if (run.model_dir(m) / "metrics.json").is_file()]
    if not found:
        raise KdError(f"{run.root}: no trained models in {run.root / 'models'}; run make train-all first "
                      "(or pass the run folder with RUN=... / --run-dir)")
    if wanted:
        missing = [m for m in wanted if m not in found]
        if missing:
            raise KdError(f"--models {missing[0]}: not trained in {run.root} (trained: {', '.join(found)})")
        found = [m for m in found if m in wanted]
    for name in found:
        run.verified_model(name)
    return found


def run_split(run: RunFolder, data: str | None, split: str) -> tuple[list[str], np.ndarray, int]:
    """One of the run's own splits (texts, labels) and its max length, re-made from the manifest's config and
    checked against the fingerprint recorded at training time."""
    from kd.data import fingerprint, load_splits

    manifest = run.read_manifest()
    if "config" not in manifest:
        raise KdError(f"{run.manifest}: missing or without a config; is {run.root} a run folder?")
    cfg = build_dataclass(RunConfig, manifest["config"])
    cfg.data.source = data or manifest.get("data", {}).get("source") or cfg.data.source
    splits = load_splits(cfg.data)
    ds = getattr(splits, split)
    expected = manifest.get("data", {}).get("fingerprints", {}).get(split)
    if expected and fingerprint(ds) != expected:
        raise KdError(f"data {cfg.data.source}: its {split} split differs from the one {run.root} was "
                      "trained with (fingerprint mismatch); pass the training data with --data")
    return list(ds["text"]), np.asarray(ds["label"]), cfg.data.max_length


def export_config(run_dir: Path, overrides: list[str] = ()) -> ExportConfig:
    """The run's export settings: its preset's `export` section (recorded in the manifest), then `--set`s."""
    manifest = RunFolder(Path(run_dir)).read_manifest()
    return build_dataclass(ExportConfig, manifest.get("config", {}).get("export") or {}, overrides)


def export_run(run_dir: Path, cfg: ExportConfig, models: list[str] | None = None, data: str | None = None,
               force: bool = False) -> dict:
    run = RunFolder(Path(run_dir))
    names = trained_models(run, models)
    texts, labels, max_length = run_split(run, data, "validation")
    if cfg.validation_rows:
        texts, labels = texts[:cfg.validation_rows], labels[:cfg.validation_rows]
    onnx_root = run.root / "onnx"
    for name in names:
        out_dir = onnx_root / name
        key = export_key(run.recorded_sha256(name), cfg)  # trained_models checked the file against it
        if not force and is_current(out_dir, key):
            print(f"kd: {name}: already exported with these weights and settings, skipped ({out_dir})")
            continue
        report = export_model(name, run.model_dir(name), out_dir, texts, labels, cfg, max_length,
                              log=lambda m: print(f"kd: {m}", flush=True), key=key)
        print(f"kd: {name}: exported in {report['total_seconds']:.0f} s -> {out_dir}", flush=True)
    summary = write_run_report(onnx_root)
    print((onnx_root / "report.md").read_text())
    return summary
