"""`make optimum-check`, the optimum side: every export folder of a run, loaded the way an optimum user loads it,
must predict what kd's own ONNX Runtime run predicted, row for row.

It runs in the separate environment .venv/optimum/ (requirements-optimum.txt: optimum-onnx, transformers 4.x),
so it never imports kd (kd needs transformers 5). It reads what `python -m export.optimum_reference` wrote in
<run>/onnx/optimum-check/ and, per model folder and precision (model.onnx, model_int8.onnx), classifies the
test split twice:
  ORTModel  ORTModelForSequenceClassification.from_pretrained(folder, file_name=...) on the folder tokenizer's
            batches
  pipeline  transformers.pipeline("text-classification", model=that ORTModel, tokenizer=the folder's)
Both are fed kd's batches (same rows together, same padding): dynamic int8 scales each activation over the
whole batch, so other batches would move int8 logits for reasons that are not optimum's.
Writes result.json and result.md beside the reference; exit 1, with one line per failing folder, when a
prediction differs, a folder does not load, or its tokenizer tokenizes otherwise than kd's.

    .venv/optimum/bin/python scripts/optimum_check.py runs/smoke/onnx/optimum-check

Importable without optimum (the tests import it in kd's environment): optimum is imported inside the runners.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

PREFIX = "optimum-check"
# a runner: (folder, file_name, tokenizer, texts, batches, max_length) -> logits in the texts' order
Runner = Callable[[Path, str, object, list, list, int], np.ndarray]


@dataclass
class Comparison:
    """One export file run one way, against kd's logits for the same file."""

    model: str
    precision: str
    way: str  # "ORTModel" or "pipeline"
    folder: str
    rows: int
    differing: int  # rows whose argmax differs from kd's
    max_abs_diff: float  # max |logit - kd's logit| over all rows and labels
    first_differing_row: int | None = None

    @property
    def ok(self) -> bool:
        return self.differing == 0


@dataclass
class Failure:
    folder: str
    what: str  # "int8 via pipeline", "tokenizer", ...
    reason: str

    def line(self) -> str:
        return f"{PREFIX}: FAILED {self.folder}: {self.what}: {self.reason}"


@dataclass
class Result:
    ok: bool
    rows: int
    versions: dict[str, str]
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


def compare(model: str, precision: str, way: str, folder: str, reference: np.ndarray,
            logits: np.ndarray) -> Comparison:
    reference, logits = np.asarray(reference, dtype=np.float32), np.asarray(logits, dtype=np.float32)
    if reference.shape != logits.shape:
        raise ValueError(f"logits of shape {logits.shape}, kd's are {reference.shape}")
    differ = np.flatnonzero(reference.argmax(-1) != logits.argmax(-1))
    return Comparison(model, precision, way, folder, len(reference), int(differ.size),
                      float(np.abs(reference - logits).max()) if reference.size else 0.0,
                      int(differ[0]) if differ.size else None)


def failure_of(c: Comparison) -> Failure | None:
    if c.ok:
        return None
    return Failure(c.folder, f"{c.precision} via {c.way}",
                   f"{c.differing} of {c.rows} predictions differ from kd's ONNX Runtime run "
                   f"(first: test row {c.first_differing_row}; max |Δlogit| {c.max_abs_diff:.2e})")


def token_mismatch(folder: str, tokenizer, texts: list[str], max_length: int,
                   reference_ids: np.ndarray) -> Failure | None:
    """kd's token ids (padded with -1) vs this tokenizer's: a mismatch is a tokenizer problem, not the model's."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    bad = [row for row, seq in enumerate(ids)
           if len(seq) > reference_ids.shape[1] or list(reference_ids[row][reference_ids[row] >= 0]) != list(seq)]
    if not bad:
        return None
    return Failure(folder, "tokenizer", f"{len(bad)} of {len(texts)} rows tokenize otherwise than in kd "
                                    f"(first: test row {bad[0]}; max_length {max_length})")


def batches_of(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


# ---- the two ways an optimum user runs an export (optimum imported here only) ----------------------------------

def ortmodel_logits(folder: Path, file_name: str, tokenizer, texts: list[str], batches: list[np.ndarray],
                    max_length: int) -> np.ndarray:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    model = ORTModelForSequenceClassification.from_pretrained(folder, file_name=file_name)
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    for rows in batches:
        enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        out[rows] = np.asarray(model(**enc).logits)
    return out


def pipeline_logits(folder: Path, file_name: str, tokenizer, texts: list[str], batches: list[np.ndarray],
                    max_length: int) -> np.ndarray:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import pipeline

    model = ORTModelForSequenceClassification.from_pretrained(folder, file_name=file_name)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer)
    label_id = {label: int(i) for i, label in model.config.id2label.items()}
    order = np.concatenate(batches)
    # rows in kd's order with kd's batch size: the pipeline's DataLoader then forms kd's batches;
    # top_k=None + function_to_apply="none": every label's raw logit instead of the top softmax score
    found = classify([texts[i] for i in order], batch_size=len(batches[0]), top_k=None, function_to_apply="none",
                     truncation=True, max_length=max_length)
    out = np.empty((len(texts), len(label_id)), dtype=np.float32)
    for row, scores in zip(order, found):
        for s in scores:
            out[row, label_id[s["label"]]] = s["score"]
    return out


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


RUNNERS: dict[str, Runner] = {"ORTModel": ortmodel_logits, "pipeline": pipeline_logits}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("optimum-onnx", "optimum", "transformers", "tokenizers", "onnxruntime", "torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def shown_path(folder: Path) -> str:
    """Relative to the working directory when under it (the Makefile's runs/<preset>/...), else absolute."""
    return os.path.relpath(folder) if folder.is_relative_to(Path.cwd()) else str(folder)


def check(ref_dir: Path, runners: dict[str, Runner] = RUNNERS,
          tokenizer_loader: Callable[[Path], object] = load_tokenizer) -> Result:
    """Every model x precision x way of the reference in `ref_dir`."""
    started = time.perf_counter()
    meta = json.loads((ref_dir / "reference.json").read_text())
    arrays = np.load(ref_dir / meta["arrays"], allow_pickle=False)
    texts = [str(t) for t in arrays["texts"]]
    result = Result(ok=True, rows=len(texts), versions=versions())
    for name, ref in meta["models"].items():
        folder = (ref_dir / ref["folder"]).resolve()
        shown = shown_path(folder)
        if not folder.is_dir():  # else transformers takes the path for a hub id and says something obscure
            result.failures.append(Failure(shown, "folder", "no such folder (exported since the reference was made?)"))
            continue
        try:
            tokenizer = tokenizer_loader(folder)
        except Exception as exc:  # any load error is the finding: report it for this folder, check the others
            result.failures.append(Failure(shown, "tokenizer", f"does not load: {first_line(exc)}"))
            continue
        # the export saves the run's max_length as model_max_length: an optimum user truncates there
        max_length = int(min(tokenizer.model_max_length, 10**6))
        mismatch = token_mismatch(shown, tokenizer, texts, max_length, arrays[ref["input_ids"]])
        if mismatch:
            result.failures.append(mismatch)
        batches = batches_of(arrays[ref["order"]], meta["batch_size"])
        for precision, file_name in ref["files"].items():
            for way, runner in runners.items():
                try:
                    logits = runner(folder, file_name, tokenizer, texts, batches, max_length)
                    c = compare(name, precision, way, shown, arrays[ref["logits"][precision]], logits)
                except Exception as exc:
                    result.failures.append(Failure(shown, f"{precision} via {way}",
                                                   f"{file_name} does not load or run: {first_line(exc)}"))
                    continue
                result.comparisons.append(c)
                fail = failure_of(c)
                if fail:
                    result.failures.append(fail)
                print(f"{PREFIX}: {name} {precision} via {way}: {c.rows - c.differing}/{c.rows} identical, "
                      f"max |Δlogit| {c.max_abs_diff:.1e}", file=sys.stderr, flush=True)
    result.ok = not result.failures
    result.seconds = time.perf_counter() - started
    return result


def render(result: Result) -> str:
    ways = list(dict.fromkeys(c.way for c in result.comparisons))
    head = ["model", "precision", "rows"] + [f"{w} {col}" for w in ways for col in ("identical", "max abs Δlogit")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells: dict[tuple[str, str], dict[str, Comparison]] = {}
    for c in result.comparisons:
        cells.setdefault((c.model, c.precision), {})[c.way] = c
    for (model, precision), by_way in cells.items():
        row = [model, precision, str(next(iter(by_way.values())).rows)]
        for w in ways:
            c = by_way.get(w)
            row += [f"{c.rows - c.differing}/{c.rows}", f"{c.max_abs_diff:.1e}"] if c else ["–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    versions_line = ", ".join(f"{k} {v}" for k, v in result.versions.items())
    return "\n".join(lines) + f"\n\n{versions_line}; {result.seconds:.0f} s\n"


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # aside, then renamed: a reader never sees half a file
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None, runners: dict[str, Runner] = RUNNERS,
         tokenizer_loader: Callable[[Path], object] = load_tokenizer) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference_dir", type=Path, help="<run>/onnx/optimum-check (written by export.optimum_reference)")
    args = p.parse_args(argv)
    if not (args.reference_dir / "reference.json").is_file():
        print(f"{PREFIX}: FAILED {args.reference_dir}: no reference.json; run `python -m export.optimum_reference` "
              "first (make optimum-check does)", file=sys.stderr)
        return 2
    result = check(args.reference_dir, runners, tokenizer_loader)
    result_dict = {**asdict(result), "comparisons": [{**asdict(c), "ok": c.ok} for c in result.comparisons]}
    write_text(args.reference_dir / "result.json", json.dumps(result_dict, indent=2) + "\n")
    md = render(result)
    write_text(args.reference_dir / "result.md", md)
    print(md)
    for f in result.failures:
        print(f.line(), file=sys.stderr)
    if not result.ok:
        return 1
    print(f"{PREFIX}: every export loads in optimum and predicts what kd's ONNX Runtime run predicts "
          f"({result.rows} test rows, {len(result.comparisons)} model x precision x way)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
