"""Run a model (any engine's `run`) over real texts, in the same batches, with dynamic padding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from export.engines import Runner


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
                progress: str | None = None) -> np.ndarray:
    """Logits for every text, in the texts' order (with a progress bar named `progress`, if given)."""
    out = None
    batches = length_sorted_batches(tokenizer, texts, max_length, batch_size)
    if progress:
        batches = tqdm(list(batches), desc=progress, leave=False)
    for rows, batch in batches:
        logits = runner(batch)
        if out is None:
            out = np.empty((len(texts), logits.shape[-1]), dtype=np.float32)
        out[rows] = logits
    return out

