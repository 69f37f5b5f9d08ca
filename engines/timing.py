"""Small, honest timings for choices made during export (fused graph or not, which int8): warm up, then time
real padded batches, interleaving the contenders. (What a model costs is measured by the bench suite.)"""

from __future__ import annotations

import time

import numpy as np

from engines.inference import Runner, encode


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


def faster(runners: dict[str, Runner], batches: list[dict], rounds: int = 3, min_seconds: float = 0.5,
           max_rounds: int = 60) -> dict[str, float]:
    """Total seconds per runner over the batches, best of the rounds, the runners interleaved each round so that
    a noisy neighbour slows them alike. At least `rounds`, and more until every runner has been timed for
    `min_seconds` (up to `max_rounds`): a small model's round takes milliseconds, where one scheduler hiccup is a
    large share of it."""
    for run in runners.values():
        run(batches[0])  # warm-up: first calls allocate and pick kernels
    best = {name: float("inf") for name in runners}
    spent = dict.fromkeys(runners, 0.0)
    done = 0
    while done < rounds or (min(spent.values()) < min_seconds and done < max_rounds):
        for name, run in runners.items():
            seconds = float(call_times(run, batches).sum())
            best[name] = min(best[name], seconds)
            spent[name] += seconds
        done += 1
    return best


def clearly_faster(contender: float, default: float, margin: float) -> bool:
    """True when the contender's time beats the default's by more than `margin` (a share): a choice made on a
    difference smaller than the timings' noise would differ from run to run."""
    return contender < default * (1 - margin)
