"""Run a PyTorch model or an ONNX Runtime session over real texts, in the same batches, with dynamic padding."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from export.ort import run_logits
from kd.models import model_input_names

Runner = Callable[[dict], np.ndarray]  # a padded batch from the tokenizer (numpy arrays) -> logits


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


def synchronize(device: torch.device) -> None:
    """Wait for the accelerator: its calls return before the work is done, so a timer must wait too."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def torch_runner(model: torch.nn.Module) -> Runner:
    """Host arrays in, host logits out: the copies to and from the device and a synchronize are part of the call."""
    names = set(model_input_names(model))
    device = next(model.parameters()).device

    def run(batch: dict) -> np.ndarray:
        inputs = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items() if k in names}
        with torch.inference_mode():
            logits = model(**inputs).logits
            synchronize(device)
            return logits.float().cpu().numpy()

    return run


def ort_runner(sess) -> Runner:
    return lambda batch: run_logits(sess, batch)

