"""Tokenize once (no padding: batches pad themselves) and cache the result in the run folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from datasets import Dataset, load_from_disk

from kd import cache
from kd.runfolder import atomic_dir


def tokenizer_fingerprint(tokenizer, max_length: int) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calling a fast tokenizer stores its last truncation/padding settings in this state: leave them out.
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        vocab = json.dumps(state, sort_keys=True)
    else:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    blob = json.dumps([vocab, list(tokenizer.model_input_names), max_length, tokenizer.padding_side])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    """The tokenized split from the cache when it was made from this data, tokenizer and length; else made anew."""
    made_from = {"data": data_fp, "tokenizer": tokenizer_fingerprint(tokenizer, max_length), "max_length": max_length,
                 "rows": len(ds)}
    key = hashlib.sha256(f"{data_fp}:{made_from['tokenizer']}".encode()).hexdigest()[:16]
    folder = cache_root / key
    with state.main_process_first():
        if state.is_main_process:
            why = cache.mismatch(folder / cache.RECORD, made_from, _data_files(folder))
            if why and folder.exists():
                print(f"kd: tokenized cache {folder} not used: {why}; tokenizing again", flush=True)
            if why:
                with atomic_dir(folder) as tmp:
                    tokenize(ds, tokenizer, max_length, fingerprint=key).save_to_disk(str(tmp))
                    cache.write_record(tmp / cache.RECORD, made_from, _data_files(tmp))
        return load_from_disk(str(folder))


def _data_files(folder: Path) -> list[Path]:
    return [f for f in folder.glob("*") if f.is_file() and f.name != cache.RECORD]


def length_order(tok: Dataset) -> np.ndarray:
    """Longest first: batches of similar lengths pad little, and the biggest batch comes first."""
    return np.argsort(-np.asarray(tok["length"]), kind="stable")
