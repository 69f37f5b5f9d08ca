"""`kd predict`: label and probability for each text, from a PyTorch folder, an ONNX folder or .onnx file, or an
OpenVINO folder or .xml file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engines import Loaded, engine_for, file_suffixes, load_model
from engines.inference import logits_over
from kd.errors import KdError


def load(target: Path, allow_pickle: bool = False) -> Loaded:
    """A save_pretrained folder (PyTorch), an export folder (its model.onnx), an .onnx file, or an OpenVINO folder
    (its model.xml) or .xml file."""
    from transformers import AutoTokenizer

    target = Path(target)
    if not target.exists():
        raise KdError(f"--model {target}: no such file or folder")
    found = engine_for(target)
    if found is None:
        raise KdError(f"--model {target}: expected a model folder or an {' or '.join(file_suffixes())} file")
    engine, file = found
    folder = target.parent if target.is_file() else target
    if not (folder / "config.json").is_file():
        raise KdError(f"--model {target}: no config.json in {folder} (label names come from it)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise KdError(f"--model {target}: no usable tokenizer in {folder} ({str(exc).splitlines()[0]})") from None
    options = {}
    if engine.file_suffix is None:  # a model folder: safetensors only unless opted in
        from kd.models import resolve_source

        resolve_source(str(folder), "--model", allow_pickle)
        options["allow_pickle"] = allow_pickle
    return load_model(engine.name, file, "cpu", engine.precision_of(file), tokenizer=tokenizer, **options)


def predict(loaded: Loaded, texts: list[str], batch_size: int = 32) -> list[dict]:
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise KdError(f"text {empty[0]} is empty: give non-empty texts")
    logits = logits_over(loaded.engine.run, loaded.tokenizer, texts, loaded.max_length, batch_size)
    shifted = logits - logits.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    out = []
    for text, p in zip(texts, probs):
        k = int(p.argmax())
        out.append({"text": text, "label": loaded.label_names[k], "label_id": k, "probability": float(p[k]),
                    "probabilities": {n: float(v) for n, v in zip(loaded.label_names, p)}})
    return out


def read_texts(path: Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KdError(f"--file {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise KdError(f"--file {path}: not UTF-8 text (byte {exc.start})") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise KdError(f"--file {path}: no non-empty lines")
    return texts


def format_lines(rows: list[dict], as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    return "\n".join(f"{r['label']}\t{r['probability']:.4f}\t{_snippet(r['text'])}" for r in rows)


def _snippet(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"
