"""`kd export-check`: the exported files, loaded as a user would (the ONNX Runtime engine's `plain` option: an
`onnxruntime.InferenceSession` with no options; the OpenVINO IRs with the engine's settings: fp32 in f32), classify
the whole test split; their predictions are compared with the PyTorch test logits the training run saved
(models/<model>/test_logits.npy)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from engines import engine, load
from engines.inference import logits_over
from kd.atomic import write_json, write_text
from kd.errors import KdError
from kd.metrics import accuracy, agreement
from kd.runfolder import RunFolder

ONNX = engine("onnxruntime")
OPENVINO = engine("openvino")


def plain_logits(path: Path, tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    model = load(ONNX.name, path, precision=ONNX.precision_of(path), plain=True)  # no options: as a user would
    return logits_over(model.run, tokenizer, texts, max_length, batch_size, progress=path.name)


def export_check(run_dir: Path, data: str | None = None) -> dict:
    run = RunFolder(Path(run_dir))
    names = [m for m in run.model_names() if ONNX.model_file(run, m, "fp32").is_file()]
    if not names:
        raise KdError(f"{run.onnx_root}: no exported models; run `make export` first")
    texts, labels, max_length = run.split(data, "test")
    rows = {}
    for name in names:
        folder = ONNX.folder(run, name)
        torch_logits = np.load(run.model_dir(name) / "test_logits.npy", allow_pickle=False)
        if len(torch_logits) != len(texts):
            raise KdError(f"{run.model_dir(name)}/test_logits.npy has {len(torch_logits)} rows, the test split "
                          f"{len(texts)}: was the model trained on other data?")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        torch_pred = torch_logits.argmax(-1)
        row = {"test_rows": len(texts), "pytorch_accuracy": accuracy(torch_pred, labels)}
        for precision in ("fp32", "int8"):
            started = time.perf_counter()
            row[precision] = compared(plain_logits(ONNX.model_file(run, name, precision), tokenizer, texts,
                                                   max_length), torch_logits, labels, started)
            ir = OPENVINO.model_file(run, name, precision)
            if ir.is_file():
                started = time.perf_counter()
                model = load(OPENVINO.name, ir, precision=precision)
                logits = logits_over(model.run, tokenizer, texts, max_length, 32, progress=f"openvino {precision}")
                row.setdefault("openvino", {})[precision] = compared(logits, torch_logits, labels, started)
        row["fp32_identical"] = row["fp32"]["differing_predictions"] == 0
        row["int8_accuracy_drop_pt"] = 100 * (row["pytorch_accuracy"] - row["int8"]["accuracy"])
        rows[name] = row
        print(f"kd: {name}: fp32 {row['fp32']['differing_predictions']} of {len(texts)} predictions differ from "
              f"PyTorch; int8 accuracy {row['int8']['accuracy']:.2%} vs PyTorch {row['pytorch_accuracy']:.2%}"
              + ("".join(f"; OpenVINO {p} {r['differing_predictions']} differ, accuracy {r['accuracy']:.2%}"
                         for p, r in row.get("openvino", {}).items())), flush=True)
    write_json(run.onnx_root / "test_check.json", rows)
    md = render(rows)
    write_text(run.onnx_root / "test_check.md", md)
    print(md)
    return rows


def compared(logits: np.ndarray, torch_logits: np.ndarray, labels: np.ndarray, started: float) -> dict:
    """One file's test predictions against PyTorch's."""
    pred, torch_pred = logits.argmax(-1), torch_logits.argmax(-1)
    return {"accuracy": accuracy(pred, labels), "agreement": agreement(pred, torch_pred),
            "differing_predictions": int((pred != torch_pred).sum()),
            "max_abs_diff": float(np.abs(logits - torch_logits).max()), "seconds": time.perf_counter() - started}


def render(rows: dict) -> str:
    lines = ["| model | file | test rows | accuracy (PyTorch) | predictions differing from PyTorch | max abs Δ | "
             "agreement | accuracy change (pt) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        files = {f"ONNX {p}": r[p] for p in ("fp32", "int8")}
        files.update({f"OpenVINO {p}": c for p, c in r.get("openvino", {}).items()})
        for what, c in files.items():
            lines.append(f"| {name} | {what} | {r['test_rows']} | {c['accuracy']:.2%} ({r['pytorch_accuracy']:.2%}) | "
                         f"{c['differing_predictions']} | {c['max_abs_diff']:.1e} | {c['agreement']:.2%} | "
                         f"{100 * (c['accuracy'] - r['pytorch_accuracy']):+.2f} |")
    return "\n".join(lines) + "\n"
