"""Run a model (any engine's `run`) over real texts, in the same batches, with dynamic padding."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tqdm import tqdm

from engines import Batch, Runner

Many = Callable[[list[Batch]], list[np.ndarray]]  # batches -> their logits, in order


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: v for k, v in enc.items() if k in tokenizer.model_input_names}


def length_sorted_batches(tokenizer, texts: list[str], max_length: int, batch_size: int
                          ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, padded batch), longest first, so each batch pads little."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, encode(tokenizer, [texts[i] for i in rows], max_length)


def logits_over(runner: Runner, tokenizer, texts: list[str], max_length: int, batch_size: int,
                progress: str | None = None, many: Many | None = None) -> np.ndarray:
    """Logits for every text, in the texts' order (with a progress bar named `progress`, if given). `many`, where
    given, scores all the batches in one call instead of `runner` one at a time (an engine's request queue)."""
    return logits_of(list(length_sorted_batches(tokenizer, texts, max_length, batch_size)), runner, progress, many)


def logits_of(batches: list[tuple[np.ndarray, Batch]], runner: Runner, progress: str | None = None,
              many: Many | None = None) -> np.ndarray:
    """`logits_over` on batches tokenized already ((row indices, padded batch), as length_sorted_batches gives)."""
    if many is not None:
        outputs = many([batch for _, batch in batches])
    else:
        outputs = (runner(batch) for _, batch in (tqdm(batches, desc=progress, leave=False) if progress else batches))
    out = None
    for (rows, _), logits in zip(batches, outputs):
        if out is None:
            out = np.empty((sum(len(r) for r, _ in batches), logits.shape[-1]), dtype=np.float32)
        out[rows] = logits
    return out
