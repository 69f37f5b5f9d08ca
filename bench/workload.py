"""What the bench runs on: the run's own test split (re-made and fingerprint-checked), tokenized outside the
timed calls into batches of 32 with dynamic padding and into single texts for latency."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.config import BenchConfig, flag
from export.inference import encode, length_sorted_batches
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

    def shapes(self, model: str, tokenizer, cfg: BenchConfig) -> tuple[list[Batch], list[Batch]]:
        """One single text and one throughput batch of each input shape the bench will time (the first of each)."""
        def firsts(batches: list[Batch]) -> list[Batch]:
            seen: dict[tuple, Batch] = {}
            for batch in batches:
                seen.setdefault(batch["input_ids"].shape, batch)
            return list(seen.values())

        return (firsts(self.single_texts(model, tokenizer)),
                firsts([b for _, b in self.throughput_batches(model, tokenizer, cfg)]))

    def single_texts(self, model: str, tokenizer) -> list[Batch]:
        key = ("singles", model)
        if key not in self._tokenized:
            self._tokenized[key] = [encode(tokenizer, [self.texts[i]], self.max_length) for i in self.latency_rows]
        return self._tokenized[key]


def warm_up(loaded, model: str, workload: Workload, cfg: BenchConfig):
    """Runs every input shape the bench times once, in each bulk mode, before any timing: a deployed model has
    seen them. OpenVINO's CPU plugin builds its kernels for a shape the first time it sees it; without this, the
    first pass over the split scored 641 samples/s and the next ones 834-898 (distilled int8, async queue,
    AMD EPYC Zen 4), and the bench, which times each batch once, measured mostly first sights."""
    singles, batches = workload.shapes(model, loaded.tokenizer, cfg)
    for single in singles:
        loaded.engine.run(single)
    for mode in loaded.engine.bulk_modes:
        loaded.engine.run_many(batches, mode)
    return loaded


def token_counts(batches: list[Batch]) -> tuple[int, int]:
    """(tokens computed including padding, real tokens)."""
    padded = sum(int(b["input_ids"].size) for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return padded, real
