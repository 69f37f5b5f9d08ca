"""Which of an export's int8 variants runs fastest on this CPU, measured the first time the int8 model is loaded here
and recorded beside it with the CPU it was measured on; reused until the CPU changes.

Which ONNX Runtime int8 kernel is fastest depends on the CPU's instruction set (VNNI, AMX): int8 or uint8 weights,
per-channel or per-tensor, win on different CPUs (docs/export.md). A file chosen for speed on the export host is not
the fastest elsewhere, so the export keeps every variant that passes its gates (`int8_variants/`), and the engine
picks one per CPU (engines/cpu.py's identity)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engines.cpu import this_cpu_identity
from engines.timing import faster
from kd.atomic import write_json
from kd.errors import KdError
from kd.typed import read

VARIANTS = "int8_variants"  # beside model_int8.onnx: <variant>.onnx for every variant that passed the gates
RECORD = "host_choice.json"  # in that folder: the choice, the CPU it was measured on, the timings
SHAPES = {"b1": (1, 48), "b32": (32, 48)}  # batch x tokens: a short news text, as the bench's are
B1_CALLS = 10


@dataclass
class HostChoice:
    cpu: str
    variant: str
    seconds: dict[str, dict[str, float]]  # variant -> {"b1": per call, "b32": per call}, the best round
    # the chosen variant's session, opened for the measurement and handed on to run it (None: the choice was taken
    # from the record, measured before on this CPU)
    session: Any = field(default=None, compare=False)  # not part of the record (host_choice.json)

    @property
    def measured(self) -> bool:
        return self.session is not None

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "variant": self.variant, "seconds": self.seconds}

    @classmethod
    def read(cls, path: Path) -> HostChoice | None:
        """The record in `path`; None where there is none or it is unreadable (a cache: measured again)."""
        try:
            return read(cls, json.loads(path.read_text()), f"{path}:")
        except (OSError, ValueError, KdError):  # missing, not JSON, or a field that does not fit
            return None


def variants(int8_file: Path) -> dict[str, Path]:
    """The int8 variants the export kept beside `int8_file` (model_int8.onnx), by name."""
    folder = Path(int8_file).parent / VARIANTS
    return {p.stem: p for p in sorted(folder.glob("*.onnx"))} if folder.is_dir() else {}


def same_bytes(a: Path, b: Path) -> bool:
    """One file, or two of the same contents (a copied export folder holds copies, not the hard link)."""
    if Path(a).samefile(b):
        return True
    if Path(a).stat().st_size != Path(b).stat().st_size:
        return False
    return hashlib.sha256(Path(a).read_bytes()).digest() == hashlib.sha256(Path(b).read_bytes()).digest()


def fastest(seconds: dict[str, dict[str, float]]) -> str:
    """The variant whose worse workload is least behind that workload's fastest variant (within 10 % at both
    batch 1 and batch 32, where one variant is)."""
    best = {shape: min(s[shape] for s in seconds.values()) for shape in SHAPES}
    return min(seconds, key=lambda v: max(seconds[v][shape] / best[shape] for shape in SHAPES))


def measure(runners: dict[str, Callable], workloads: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Seconds per call of each variant on each workload's batches: the variants interleaved, best of several
    rounds (engines/timing.py's `faster`, which the export's own choices use)."""
    seconds = {name: {} for name in runners}
    for shape, batches in workloads.items():
        for name, total in faster(runners, batches).items():
            seconds[name][shape] = total / len(batches)
    return seconds


def synthetic(sess) -> dict[str, list[dict]]:
    """Batches of the graph's own input names at SHAPES (token id 1, in every vocabulary: a kernel's speed does not
    depend on which token it reads); B1_CALLS single rows, one batch of 32."""
    def batch(dims):
        return {i.name: (np.zeros if i.name == "token_type_ids" else np.ones)(dims, np.int64)
                for i in sess.get_inputs()}
    return {"b1": [batch(SHAPES["b1"])] * B1_CALLS, "b32": [batch(SHAPES["b32"])]}


def choose(int8_file: Path, open_session, say=print) -> HostChoice | None:
    """This CPU's variant for `int8_file`: the record's when it was measured on this CPU for these variants, else
    measured now and recorded (where the folder is writable). None: fewer than two variants, or `int8_file` is
    none of them."""
    files = variants(int8_file)
    if len(files) < 2 or not any(same_bytes(int8_file, f) for f in files.values()):
        return None  # nothing to choose from, or a model_int8.onnx that is none of them (replaced): run as it is
    record_path = Path(int8_file).parent / VARIANTS / RECORD
    cpu = this_cpu_identity().key
    record = HostChoice.read(record_path)
    if record and record.cpu == cpu and set(record.seconds) == set(files) and record.variant in files:
        return record  # measured before on this CPU for these variants; otherwise measured again
    sessions = {name: open_session(path) for name, path in files.items()}
    seconds = measure({name: partial(sess.run, None) for name, sess in sessions.items()},
                      synthetic(next(iter(sessions.values()))))
    best = fastest(seconds)
    choice = HostChoice(cpu, best, seconds, sessions[best])
    try:
        write_json(record_path, choice.to_json())
    except OSError as exc:  # a read-only model folder (a mounted volume): the choice holds for this process
        say(f"kd: {record_path} not written ({exc.strerror}); the int8 variant is measured again next time")
    return choice
