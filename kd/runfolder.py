"""The run folder contract: where every stage reads and writes, and how writes stay atomic.

runs/<name>/
  manifest.json                      config, versions, git commit, device, data fingerprints, timings
  models/{teacher,baseline,distilled}/  save_pretrained (safetensors) + tokenizer + metrics.json
                                     + test_logits.npy + log_history.json
  cache/tokenized/<key>/             tokenized splits (datasets save_to_disk)
  cache/teacher_logits/<key>.npy     teacher logits over the students' train rows
  work/<stage>/                      Trainer checkpoints while a stage runs (removed when it finishes)
  results.json, results.md, confusion_matrices.png, loss_curves.png
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAMES = ("teacher", "baseline", "distilled")
FORMAT_VERSION = 1


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

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest.is_file():
            return {}
        return json.loads(self.manifest.read_text())

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write aside, fsync, rename: a reader sees the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a scratch folder beside `path`; on success it replaces `path` whole, on failure it goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
