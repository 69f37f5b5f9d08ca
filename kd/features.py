"""Tokenize once (no padding: batches pad themselves) and cache the result in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datasets import Dataset, load_from_disk

from kd.cache import cached, key
from kd.digest import json_fingerprint


def tokenizer_fingerprint(tokenizer, max_length: int) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calling a fast tokenizer stores its last truncation/padding settings in this state: leave them out.
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        vocab = json.dumps(state, sort_keys=True)
    else:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    return json_fingerprint([vocab, list(tokenizer.model_input_names), max_length, tokenizer.padding_side])


def tokenize(ds: Dataset, tokenizer, max_length: int, fingerprint: str | None = None) -> Dataset:
    """`fingerprint`: the result's datasets fingerprint, where the caller has a key for what made it; without one,
    datasets hashes `encode` with the tokenizer inside it, vocabulary and all (seconds per call)."""
    names = set(tokenizer.model_input_names)

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        out = {k: v for k, v in enc.items() if k in names}
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out

    return ds.map(encode, batched=True, remove_columns=["text"], desc="tokenize", load_from_cache_file=False,
                  new_fingerprint=fingerprint)


def tokenized(ds: Dataset, data_fp: str, tokenizer, max_length: int, cache_root: Path, state) -> Dataset:
    """The tokenized split from the cache when it was made from this data, tokenizer and length; else made anew
    (by the main process; the others read its entry)."""
    made_from = {"data": data_fp, "tokenizer": tokenizer_fingerprint(tokenizer, max_length), "max_length": max_length,
                 "rows": len(ds)}
    return cached(cache_root, made_from, lambda: tokenize(ds, tokenizer, max_length, fingerprint=key(made_from)),
                  save=lambda tok, folder: tok.save_to_disk(str(folder)),
                  load=lambda folder: load_from_disk(str(folder)), state=state, together=False)[0]


def length_order(tok: Dataset) -> np.ndarray:
    """Longest first: batches of similar lengths pad little, and the biggest batch comes first."""
    return np.argsort(-np.asarray(tok["length"]), kind="stable")
