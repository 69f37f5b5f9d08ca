"""Caches bound to what they were made from.

Every cache entry (tokenized splits, teacher logits) sits beside a small JSON record: the fingerprints it was
made from and the sha256 of its own files. An entry is used only when the record matches what the caller would
make now and the files still hash the same; a stale entry (other data, tokenizer or teacher), a foreign one
(copied in, renamed, edited) or a damaged one is rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kd.runfolder import sha256_file, write_json

RECORD = "kd_cache.json"


def key(made_from: dict) -> str:
    """The entry's name: a short hash of what it is made from."""
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:16]


def files_sha256(files: list[Path]) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(files)}


def write_record(path: Path, made_from: dict, files: list[Path]) -> None:
    write_json(path, {"made_from": made_from, "sha256": files_sha256(files)})


def mismatch(path: Path, made_from: dict, files: list[Path]) -> str | None:
    """Why the entry cannot be used (None: it can)."""
    if not path.is_file():
        return "it has no record of what it was made from"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return "its record is not readable"
    if record.get("made_from") != made_from:
        changed = sorted(k for k in set(made_from) | set(record.get("made_from") or {})
                         if (record.get("made_from") or {}).get(k) != made_from.get(k))
        return f"it was made from other inputs ({', '.join(changed)})"
    if any(not f.is_file() for f in files) or record.get("sha256") != files_sha256(files):
        return "its files changed after it was written"
    return None
