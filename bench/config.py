"""Bench settings: a dataclass whose fields are the suite's command-line options (bench/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEVICES = ("cpu", "cuda", "mps")


@dataclass
class BenchConfig:
    run_dir: Path = Path("runs/cpu")
    data: str | None = None  # the run's own data source unless given (checked against its fingerprint)
    samples: int | None = None  # test rows for accuracy, F1 and throughput (None: the whole split)
    batch_size: int = 32
    # Throughput batches: "length" sorts the rows by token count before batching (bulk scoring, as
    # sentence-transformers' encode does); "file" keeps the split's order (requests as they arrive).
    order: str = "length"
    throughput_warmup: int = 3  # batches run before the timed pass
    latency_texts: int = 400  # single texts timed at batch 1 (a fixed random sample of the test split)
    latency_warmup: int = 20
    # Each row is measured in this many parts (a share of the texts each), the parts of all rows taking turns:
    # a slow spell on a shared machine then hits every row alike instead of whichever row ran during it, and
    # the ratios between rows stay honest.
    parts: int = 3
    # A measurement shorter than this repeats its pass over the texts (up to max_passes): tiny models finish a
    # pass in milliseconds, where one scheduler hiccup moves the figure by 30 %. Throughput is then the
    # fastest pass; latency percentiles are over every call.
    min_seconds: float = 2.0
    max_passes: int = 20
    devices: list[str] = field(default_factory=lambda: list(DEVICES))  # rows on other devices are deselected
    models: list[str] = field(default_factory=lambda: ["teacher", "baseline", "distilled"])
    seed: int = 0  # picks the latency texts

    def check(self) -> None:
        from kd.errors import KdError

        if self.order not in ("length", "file"):
            raise KdError(f"--bench-order {self.order!r}: expected length or file")
        unknown = [d for d in self.devices if d not in DEVICES]
        if unknown:
            raise KdError(f"--bench-devices {unknown[0]!r}: expected some of {', '.join(DEVICES)}")
        for name in ("samples", "batch_size", "latency_texts", "parts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise KdError(f"--bench-{name.replace('_', '-')} {value}: expected a positive number")
