"""Caches bound to what they were made from.

Every cache entry (tokenized splits, teacher logits, a fitted temperature) is a folder, cache/<kind>/<key>/, named
by a short hash of what it is made from and holding, beside its files, a small JSON record: the fingerprints it was
made from and the sha256 of its own files. An entry is used only when the record matches what the caller would
make now and the files still hash the same; a stale entry (other data, tokenizer or teacher), a foreign one
(copied in, renamed, edited) or a damaged one is rebuilt, never silently used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

from kd.atomic import atomic_dir, write_json
from kd.digest import json_fingerprint
from kd.runfolder import sha256_file

T = TypeVar("T")

RECORD = "kd_cache.json"


def key(made_from: dict) -> str:
    """The entry's name: a short hash of what it is made from."""
    return json_fingerprint(made_from)


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


def data_files(entry: Path) -> list[Path]:
    return [f for f in entry.glob("*") if f.is_file() and f.name != RECORD]


def cached(kind_dir: Path, made_from: dict, compute: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T], state, together: bool = True) -> tuple[T, str | None]:
    """The entry of `kind_dir` made from `made_from`: read with `load` from its folder when its record matches, else
    made by `compute`, written whole by `save` into a folder (its record last: an entry without one is never used)
    and read back. Returns it and why it was made anew (None: reused).

    `state`: accelerate's process state; only the main process writes. `together`: every process computes (a
    distributed predict needs them all); else the main process alone, and the others wait and read its entry."""
    entry = kind_dir / key(made_from)
    why = None
    with nullcontext() if together else state.main_process_first():
        if together or state.is_main_process:
            why = mismatch(entry / RECORD, made_from, data_files(entry))
            if why is not None:
                if entry.exists() and state.is_main_process:
                    print(f"kd: {kind_dir.name} cache {entry} not used: {why}; computing it again", flush=True)
                value = compute()
                if state.is_main_process:
                    with atomic_dir(entry) as tmp:
                        save(value, tmp)
                        write_record(tmp / RECORD, made_from, data_files(tmp))
    if together:
        state.wait_for_everyone()
    return load(entry), why
