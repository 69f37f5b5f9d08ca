"""The kd side of `make optimum-check`: the project's own ONNX Runtime predictions on the run's test split, for
every export (fp32 and int8), saved where scripts/optimum_check.py (run in the separate optimum environment,
which cannot import kd) reads them. They come from `kd export-check`'s runner: the ONNX Runtime engine's
`plain` session (ONNX Runtime's defaults), as optimum opens it. kd's tuned session (bench, predict) turns
SkipLayerNormFusion off, which can move an int8 prediction or two in 7,600 (docs/export.md): kd's own choice,
not something optimum does to the folder.

  <run>/onnx/optimum-check/reference.npz   texts, labels; per model: order, input_ids, fp32 and int8 logits
  <run>/onnx/optimum-check/reference.json  what the arrays are: models, folders, files, max_length, batch_size

    python -m export.optimum_reference --preset smoke   # prints the folder on stdout (logs go to stderr)
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from engines import engine
from engines.inference import length_sorted_batches
from export.check import plain_logits
from kd.atomic import write_bytes, write_json
from kd.errors import KdError
from kd.runfolder import RunFolder

ONNX = engine("onnxruntime")
PRECISIONS = ("fp32", "int8")
FOLDER = "optimum-check"
# The same batches on both sides: dynamic int8 quantizes each activation with one scale per tensor, padding
# included, so an int8 logit depends on which rows share its batch (the smoke run's int8 exports, batched in
# the texts' order instead: 1-2 predictions of 1,000 flipped, logits up to 0.12 away). optimum gets these batches.
BATCH_SIZE = 32


@dataclass
class ModelReference:
    folder: str  # the export folder optimum loads, relative to this file's folder (the run may have moved)
    files: dict[str, str]  # precision -> file name in the folder (ORTModel's file_name=)
    order: str  # npz key: row indices, batch after batch (length-sorted, as kd's own runs batch them)
    input_ids: str  # npz key: kd's token ids per row, padded with -1 (tells a tokenizer mismatch from a model one)
    logits: dict[str, str]  # precision -> npz key of kd's logits, in the texts' order


@dataclass
class Reference:
    run_dir: str
    rows: int
    max_length: int  # the run's: kd truncates there, optimum at the tokenizer's model_max_length (the same)
    batch_size: int
    arrays: str  # the .npz beside this file
    models: dict[str, ModelReference]


def reference_dir(run: RunFolder) -> Path:
    return run.onnx_root / FOLDER


def padded_ids(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    out = np.full((len(ids), max_length), -1, dtype=np.int32)
    for row, seq in enumerate(ids):
        out[row, :len(seq)] = seq
    return out


def dump_reference(run_dir: Path, data: str | None = None, batch_size: int = BATCH_SIZE) -> Reference:
    run = RunFolder(Path(run_dir))
    names = [m for m in run.model_names() if ONNX.model_file(run, m, "fp32").is_file()]
    if not names:
        raise KdError(f"{run.onnx_root}: no exported models; run `make export` first")
    texts, labels, max_length = run.split(data, "test")  # the run's test split, re-made as the bench does
    arrays = {"texts": np.asarray(texts, dtype=str), "labels": np.asarray(labels)}
    models = {}
    for name in names:
        folder = ONNX.folder(run, name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ref = ModelReference(folder=os.path.relpath(folder, reference_dir(run)),
                             files={p: ONNX.files[p] for p in PRECISIONS}, order=f"{name}/order",
                             input_ids=f"{name}/input_ids", logits={p: f"{name}/{p}" for p in PRECISIONS})
        arrays[ref.order] = np.concatenate(
            [rows for rows, _ in length_sorted_batches(tokenizer, texts, max_length, batch_size)])
        arrays[ref.input_ids] = padded_ids(tokenizer, texts, max_length)
        for precision in PRECISIONS:
            arrays[ref.logits[precision]] = plain_logits(ONNX.model_file(run, name, precision), tokenizer, texts,
                                                         max_length, batch_size)
        models[name] = ref
        print(f"kd: {name}: fp32 and int8 logits of {len(texts)} test rows", file=sys.stderr, flush=True)
    out = reference_dir(run)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(out / "reference.npz", buffer.getvalue())
    reference = Reference(str(run.root), len(texts), max_length, batch_size, "reference.npz", models)
    write_json(out / "reference.json", asdict(reference))
    return reference


def main(argv: list[str] | None = None) -> int:
    from kd.config import choose_preset
    from kd.errors import say_error
    from kd.runfolder import default_run_dir

    p = argparse.ArgumentParser(prog="python -m export.optimum_reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="the run's preset (default: as kd chooses it)")
    p.add_argument("--data", help="the run's data folder or hub id (default: the one it was trained with)")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset>)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = p.parse_args(argv)
    run_dir = args.run_dir or default_run_dir(Path(choose_preset(args.preset)).stem)
    try:
        dump_reference(run_dir, args.data, args.batch_size)
    except KdError as exc:
        say_error(str(exc))
        return exc.exit_code
    print(reference_dir(RunFolder(Path(run_dir))))  # the one stdout line: the Makefile hands it to the check
    return 0


if __name__ == "__main__":
    sys.exit(main())
