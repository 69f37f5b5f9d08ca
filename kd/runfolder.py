"""The run folder contract: where every stage reads and writes, and how writes stay atomic.

runs/<name>/
  manifest.json                      config, versions, git commit, device, data fingerprints, timings
  models/<model>/                    save_pretrained (safetensors) + tokenizer + metrics.json
                                     + test_logits.npy + log_history.json; <model>: teacher, a self-trained
                                     teacher-self-train, an ensemble's members teacher-member<i>, and one
                                     student per method (baseline, distilled, ...); an ensemble teacher
                                     (teacher-ensemble) holds metrics.json and test_logits.npy only: its
                                     weights are its members' (metrics.json "members")
  cache/<kind>/<key>/                one entry (kd.cache.cached) + kd_cache.json, the record of what made it:
                                     tokenized/ a split (datasets save_to_disk); teacher_logits/ logits.npy, a
                                     teacher's over the students' train rows; calibration/ calibration.json, a
                                     teacher's fitted temperature (calibrated methods)
  work/<stage>/                      Trainer checkpoints while a stage runs (removed when it finishes)
  results.json, results.md, confusion_matrices.png, loss_curves.png
  seeds/seed<k>/                     `kd train-all --seeds N`: the students again with student.train.seed k, each
                                     a run folder of its own that shares this run's teachers; results.md here
                                     gives every student's accuracy over the seeds
  onnx/<model>/                      `kd export`: model.onnx, model_int8.onnx, export_report.json, tokenizer
  onnx/report.{json,md}, onnx/test_check.{json,md}
  bench/                             `kd bench`: summary.{json,md}, pareto.png, pytest-benchmark.json;
                                     `kd bench-train`: train_speed.json
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd.atomic import atomic_dir, write_bytes, write_json
from kd.errors import KdError

TEACHER = "teacher"  # the fine-tuned teacher's model folder
# the models of a run without a recorded list (train-all records it in the manifest's "models")
DEFAULT_MODELS = (TEACHER, "baseline", "distilled")

MEMBER = "-member"  # an ensemble member's model folder: <base>-member<i> (member_folder)
# 2: metrics.json records the sha256 of model.safetensors, and stage keys include the data fingerprints
FORMAT_VERSION = 2


def member_folder(base: str, i: int) -> str:
    """The model folder of an ensemble's i-th member: base is TEACHER for the members fine-tuned on the labelled rows
    (the first of them is the teacher itself), the self-trained ensemble's folder for its retrained members."""
    return f"{base}{MEMBER}{i}"


def is_member(name: str, base: str | None = None) -> bool:
    """Whether a model folder is an ensemble member's (of `base`'s ensemble, where given)."""
    head, sep, tail = name.rpartition(MEMBER)
    return bool(sep) and tail.isdigit() and (base is None or head == base)


def is_teacher(name: str) -> bool:
    """A model folder a teacher procedure made (teacher, teacher-ensemble, teacher-member2, ...), not a student."""
    return name.startswith(TEACHER)


def default_run_dir(name: str) -> Path:
    """runs/<preset or study> ($KD_RUNS instead of runs/)."""
    return Path(os.environ.get("KD_RUNS", "runs")) / name


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def work_dir(self, name: str) -> Path:
        return self.root / "work" / name

    def cache_dir(self, kind: str) -> Path:
        return self.root / "cache" / kind

    def seed_dir(self, seed: int) -> Path:
        return self.root / "seeds" / f"seed{seed}"

    def seed_runs(self) -> list[RunFolder]:
        """The runs of this run's students at other seeds that have a report (kd/run/seeds.py)."""
        found = [RunFolder(p.parent) for p in (self.root / "seeds").glob("seed*/results.json")]
        return sorted(found, key=lambda r: int(r.root.name.removeprefix("seed")))

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def onnx_root(self) -> Path:
        return self.root / "onnx"

    def onnx_dir(self, name: str) -> Path:
        return self.onnx_root / name

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    @property
    def bench_summary(self) -> Path:
        return self.bench_dir / "summary.json"

    def read_manifest(self) -> dict[str, Any]:
        """The manifest ({} for a new folder); a clear error for one that is damaged or of another format."""
        if not self.manifest.is_file():
            return {}
        try:
            manifest = json.loads(self.manifest.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise KdError(f"{self.manifest}: not readable JSON ({type(exc).__name__}); "
                          "this run folder is damaged: pass another --run-dir (or RUN=...)") from None
        if not isinstance(manifest, dict):
            raise KdError(f"{self.manifest}: expected a JSON object; pass another --run-dir (or RUN=...)")
        found = manifest.get("format_version", "1 or older")
        if found != FORMAT_VERSION:
            raise KdError(f"run folder {self.root} has format {found}, this kd-bench reads format "
                          f"{FORMAT_VERSION}: pass a new --run-dir (or RUN=...) and train again")
        return manifest

    def check_writable(self) -> None:
        """Fail before any work when the run folder cannot take files (read-only, not a folder, full)."""
        probe = self.root / f".kd-write-probe-{uuid.uuid4().hex[:8]}"
        existed = self.root.is_dir()
        try:
            write_bytes(probe, b"kd")
        except OSError as exc:
            if not existed:
                with contextlib.suppress(OSError):
                    self.root.rmdir()
            raise KdError(f"run folder {self.root}: cannot write there ({exc.strerror or exc}); "
                          "choose another --run-dir (or RUN=...)") from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def model_metrics(self, name: str) -> dict[str, Any]:
        """What a finished stage recorded in its metrics.json (scores, params, the sha256 of its weights)."""
        folder = self.model_dir(name)
        try:
            return json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            raise KdError(f"{folder}: no readable metrics.json; the {name} stage did not finish here "
                          "(run make train-all)") from None

    def recorded_sha256(self, name: str) -> str | None:
        """The sha256 of its weights that a finished stage recorded in its metrics.json."""
        return self.model_metrics(name).get("weights_sha256")

    def members(self, name: str) -> list[str]:
        """The member models of an ensemble (their predictions pooled; it has no weights of its own); [] for a model."""
        return list(self.model_metrics(name).get("members") or [])

    def verified_model(self, name: str) -> Path:
        """The model folder of a finished stage, after checking its weights are the ones it saved (an ensemble's:
        each member's)."""
        folder = self.model_dir(name)
        for member in self.members(name):
            self.verified_model(member)
        if self.members(name):
            return folder
        weights = folder / "model.safetensors"
        recorded = self.recorded_sha256(name)
        if not weights.is_file():
            raise KdError(f"{weights}: missing; run the {name} stage again (make train-all with --force)")
        if recorded != sha256_file(weights):
            raise KdError(f"{weights}: its sha256 is not the one recorded when the {name} stage saved it "
                          "(truncated or changed since); remove the folder or pass --force to train it again")
        return folder

    def model_names(self, with_weights: bool = False) -> list[str]:
        """The run's finished models in its own order: the list train-all recorded (teachers first, then a student
        per method), then any other finished model folder. `with_weights`: only those that are one model (export
        and bench take them), not an ensemble's pooled predictions."""
        recorded = self.read_manifest().get("models") or list(DEFAULT_MODELS)
        folder = self.root / "models"
        found = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")
                       and (p / "metrics.json").is_file()) if folder.is_dir() else []
        if with_weights:
            found = [m for m in found if not self.members(m)]
        return [m for m in recorded if m in found] + [m for m in found if m not in recorded]

    def trained_models(self, wanted: list[str] | None = None) -> list[str]:
        """The run's finished models (wanted ones only, when given), each checked against its recorded sha256."""
        found = self.model_names(with_weights=True)  # (a clear error for a damaged folder or one of another format)
        if not found:
            raise KdError(f"{self.root}: no trained models in {self.root / 'models'}; run make train-all first "
                          "(or pass the run folder with RUN=... / --run-dir)")
        if wanted:
            missing = [m for m in wanted if m not in found]
            if missing:
                raise KdError(f"--models {missing[0]}: not trained in {self.root} (trained: {', '.join(found)})")
            found = [m for m in found if m in wanted]
        for name in found:
            self.verified_model(name)
        return found

    def split(self, data: str | None, split: str) -> tuple[list[str], np.ndarray, int]:
        """One of the run's own splits (texts, labels) and its max length, re-made from the manifest's config
        and checked against the fingerprint recorded at training time."""
        return self.splits(data, [split])[0]

    def splits(self, data: str | None, names: list[str]) -> list[tuple[list[str], np.ndarray, int]]:
        """`split` for several splits, made in one go (re-making them takes seconds)."""
        from kd.config import RunConfig, build_dataclass
        from kd.data import fingerprint, load_splits

        manifest = self.read_manifest()
        if "config" not in manifest:
            raise KdError(f"{self.manifest}: missing or without a config; is {self.root} a run folder?")
        cfg = build_dataclass(RunConfig, manifest["config"])
        cfg.data.source = data or manifest.get("data", {}).get("source") or cfg.data.source
        made = load_splits(cfg.data)
        out = []
        for split in names:
            ds = getattr(made, split)
            expected = manifest.get("data", {}).get("fingerprints", {}).get(split)
            if expected and fingerprint(ds) != expected:
                raise KdError(f"data {cfg.data.source}: its {split} split differs from the one {self.root} was "
                              "trained with (fingerprint mismatch); pass the training data with --data")
            # whole columns at once: iterating a Column goes row by row (seconds for 30,000 rows)
            out.append((ds["text"][:], np.asarray(ds["label"][:]), cfg.data.max_length))
        return out

    def update_manifest(self, **fields: Any) -> None:
        """Merge top-level fields (dicts are merged one level deep) and rewrite atomically."""
        manifest = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key].update(value)
            else:
                manifest[key] = value
        manifest["format_version"] = FORMAT_VERSION
        write_json(self.manifest, manifest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


def share_teachers(donor: RunFolder, run: RunFolder) -> None:
    """Give `run` the teachers `donor` trained (the fine-tuned one and every teacher-* a procedure made), their
    cached logits and fitted temperatures, as hard links (both folders only ever replace files whole, never write
    into them), falling back to copies where links cannot be made. The run checks them like its own before using
    them."""
    def place(src: Path, dst: Path) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    entries = [f for kind in ("teacher_logits", "calibration") for f in sorted(donor.cache_dir(kind).glob("[!.]*"))]
    for folder in [f for f in sorted(donor.root.glob("models/teacher*")) if (f / "metrics.json").is_file()] + entries:
        mine = run.root / folder.relative_to(donor.root)
        if folder.is_dir() and not mine.exists():
            with atomic_dir(mine) as tmp:
                for src in folder.iterdir():
                    place(src, tmp / src.name)
