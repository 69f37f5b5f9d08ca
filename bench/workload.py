"""What the bench runs on: the run's own test split (re-made and fingerprint-checked), tokenized outside the
timed calls into batches of 32 with dynamic padding and into single texts for latency."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.config import BenchConfig, flag
from engines import Loaded
from engines.inference import encode, length_sorted_batches
from kd.runfolder import RunFolder

Batch = dict[str, np.ndarray]


@dataclass
class Workload:
    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    max_length: int
    latency_rows: np.ndarray  # indices of the texts timed one at a time
    _tokenized: dict = field(default_factory=dict)  # per model: the parts of a row reuse its batches

    @classmethod
    def load(cls, cfg: BenchConfig) -> Workload:
        from kd.errors import KdError

        run = RunFolder(cfg.run_dir)
        texts, labels, max_length = run.split(cfg.data, "test")
        if cfg.samples:
            if cfg.samples > len(texts):
                raise KdError(f"{flag('samples')} {cfg.samples}: the test split of {run.root} has only {len(texts)} "
                              "rows")
            texts, labels = texts[:cfg.samples], labels[:cfg.samples]
        names = run.read_manifest().get("data", {}).get("label_names") or [str(i) for i in range(labels.max() + 1)]
        rng = np.random.default_rng(cfg.seed)
        latency_rows = rng.choice(len(texts), size=min(cfg.latency_texts, len(texts)), replace=False)
        return cls(texts, labels, list(names), max_length, latency_rows)

    def throughput_batches(self, model: str, tokenizer, cfg: BenchConfig) -> list[tuple[np.ndarray, Batch]]:
        """(row indices, padded batch) covering every text once; each batch padded to its longest text."""
        key = ("batches", model)
        if key not in self._tokenized:
            self._tokenized[key] = self._batches(tokenizer, cfg)
        return self._tokenized[key]

    def _batches(self, tokenizer, cfg: BenchConfig) -> list[tuple[np.ndarray, Batch]]:
        if cfg.order == "length":
            return list(length_sorted_batches(tokenizer, self.texts, self.max_length, cfg.batch_size))
        starts = range(0, len(self.texts), cfg.batch_size)
        return [(np.arange(s, min(s + cfg.batch_size, len(self.texts))),
                 encode(tokenizer, self.texts[s:s + cfg.batch_size], self.max_length)) for s in starts]

    def single_texts(self, model: str, tokenizer) -> list[Batch]:
        key = ("singles", model)
        if key not in self._tokenized:
            self._tokenized[key] = [encode(tokenizer, [self.texts[i]], self.max_length) for i in self.latency_rows]
        return self._tokenized[key]


@dataclass
class RowState:
    """One row's model, loaded once for all its parts, and what the bench has run on it so far."""

    loaded: Loaded
    modes: tuple[str, ...]  # the bulk modes still timed at batch 32 (after the first part: the fastest alone)
    warmed: dict[str, set[tuple]] = field(default_factory=dict)  # mode ("single": batch 1) -> input shapes run
    latency_medians: list[float] = field(default_factory=list)  # each latency part's median, seconds
    passes: dict[str, int] = field(default_factory=dict)  # "latency"/"throughput" -> passes per part (first part's)

    def warm(self, mode: str, batches: list[Batch]) -> int:
        """Run one batch of each input shape in `batches` that `mode` has not run yet, for an engine that builds
        its kernels per shape; the number run. OpenVINO's CPU plugin does: without this, its first pass over the
        split scored 641 samples/s and the next ones 834-898 (distilled int8, async queue, AMD EPYC Zen 4), and the
        bench, which times each batch once, measured mostly first sights. A deployed model has seen them."""
        engine = self.loaded.engine
        if not engine.compiles_per_shape:
            return 0
        seen = self.warmed.setdefault(mode, set())
        new: dict[tuple, Batch] = {}
        for batch in batches:
            shape = batch["input_ids"].shape
            if shape not in seen:
                new.setdefault(shape, batch)
        if mode == "single":
            for batch in new.values():
                engine.run(batch)
        elif new:
            engine.run_many(list(new.values()), mode)
        seen.update(new)
        return len(new)

    def ready(self, mode: str, batches: list[Batch], warmup: list[Batch]) -> None:
        """Before a timed pass in `mode`: its shapes warmed, then `warmup` batches run (the threads woken up)."""
        self.warm(mode, batches)
        self.loaded.engine.run_many(warmup, mode)

    def keep_fastest_mode(self, mode_seconds: dict[str, float]) -> None:
        """After the first part: only the fastest bulk mode on its batches is timed again. Timing every mode in every
        part doubled OpenVINO's rows for nothing: on 2 cores its two modes were within a few percent in every part,
        each the faster in some (docs/bench.md), so the better of the two per part only picked the luckier pass."""
        self.modes = (min(mode_seconds, key=mode_seconds.get),)

    def latency_settled(self, agreement: float) -> bool:
        """Two parts' medians within `agreement` of the lowest: the lowest is no lucky or slowed part, and more
        parts would not move the row's p50 by more than that."""
        low = min(self.latency_medians, default=None)
        return low is not None and sum(m <= low * (1 + agreement) for m in self.latency_medians) >= 2


def token_counts(batches: list[Batch]) -> tuple[int, int]:
    """(tokens computed including padding, real tokens)."""
    padded = sum(int(b["input_ids"].size) for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return padded, real
