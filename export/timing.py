"""Small, honest timings for choices made during export (fused graph or not, which int8): warm up, then time
real padded batches, interleaving the contenders. (What a model costs is measured by the bench suite.)"""

from __future__ import annotations

import time

import numpy as np

from export.inference import Runner, encode


def timing_batches(tokenizer, texts: list[str], max_length: int, batch_size: int, count: int) -> list[dict]:
    """`count` consecutive batches of real texts (file order: natural lengths and padding)."""
    return [encode(tokenizer, texts[i * batch_size:(i + 1) * batch_size], max_length) for i in range(count)
            if texts[i * batch_size:(i + 1) * batch_size]]


def call_times(runner: Runner, batches: list[dict]) -> np.ndarray:
    """Seconds per call, one call per batch."""
    out = np.empty(len(batches))
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        runner(batch)
        out[i] = time.perf_counter() - start
    return out


def faster(runners: dict[str, Runner], batches: list[dict], rounds: int = 3) -> dict[str, float]:
    """Total seconds per runner over the batches, best of `rounds`, the runners interleaved each round
    so that a noisy neighbour slows them alike."""
    for run in runners.values():
        run(batches[0])  # warm-up: first calls allocate and pick kernels
    best = {name: float("inf") for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            best[name] = min(best[name], float(call_times(run, batches).sum()))
    return best
