"""`kd export-speed`: one model as PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8, timed side by side
on real test texts: batch-1 latency percentiles and batch-32 throughput. The backends take turns call by
call, so a noisy neighbour slows them alike and the ratios stay honest."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from export.inference import ort_runner, torch_runner
from export.ort import session
from export.run import run_split
from export.timing import timing_batches
from kd.device import cpu_count
from kd.errors import KdError
from kd.runfolder import RunFolder, write_json, write_text


def measure(runners: dict, batches: list[dict], warmup: int) -> dict[str, np.ndarray]:
    for run in runners.values():
        for batch in batches[:warmup]:
            run(batch)
    times = {name: np.empty(len(batches)) for name in runners}
    for i, batch in enumerate(batches):
        for name, run in runners.items():
            start = time.perf_counter()
            run(batch)
            times[name][i] = time.perf_counter() - start
    return times


def export_speed(run_dir: Path, model: str = "distilled", data: str | None = None, single: int = 200,
                 batches: int = 24, batch_size: int = 32) -> dict:
    run = RunFolder(Path(run_dir))
    torch_dir, onnx_dir = run.model_dir(model), run.root / "onnx" / model
    for needed in (torch_dir / "model.safetensors", onnx_dir / "model.onnx", onnx_dir / "model_int8.onnx"):
        if not needed.is_file():
            raise KdError(f"{needed}: missing; run `make train-all` and `make export` for {run.root} first")
    texts, _, max_length = run_split(run, data, "test")
    torch.set_num_threads(cpu_count())
    tokenizer = AutoTokenizer.from_pretrained(torch_dir)
    pt = AutoModelForSequenceClassification.from_pretrained(torch_dir, use_safetensors=True).eval()
    runners = {"pytorch fp32": torch_runner(pt), "onnxruntime fp32": ort_runner(session(onnx_dir / "model.onnx")),
               "onnxruntime int8": ort_runner(session(onnx_dir / "model_int8.onnx"))}
    # tokenization happens here, outside the timed calls
    ones = timing_batches(tokenizer, texts, max_length, 1, single)
    full = timing_batches(tokenizer, texts[single:], max_length, batch_size, batches)
    b1 = measure(runners, ones, warmup=10)
    b32 = measure(runners, full, warmup=2)
    rows = {}
    for name in runners:
        rows[name] = {
            "b1_p50_ms": float(np.percentile(b1[name], 50) * 1e3),
            "b1_p90_ms": float(np.percentile(b1[name], 90) * 1e3),
            "b1_p99_ms": float(np.percentile(b1[name], 99) * 1e3),
            f"b{batch_size}_samples_per_s": float(sum(len(b["input_ids"]) for b in full) / b32[name].sum()),
        }
    base = rows["pytorch fp32"]
    for r in rows.values():
        r["b1_p50_speedup"] = base["b1_p50_ms"] / r["b1_p50_ms"]
        r["throughput_speedup"] = r[f"b{batch_size}_samples_per_s"] / base[f"b{batch_size}_samples_per_s"]
    result = {"model": model, "threads": cpu_count(), "batch1_texts": len(ones), "batches": len(full),
              "batch_size": batch_size, "backends": rows}
    write_json(run.root / "onnx" / f"speed_{model}.json", result)
    md = render(result)
    write_text(run.root / "onnx" / f"speed_{model}.md", md)
    print(md)
    return result


def render(result: dict) -> str:
    bs = result["batch_size"]
    lines = [f"{result['model']}: {result['batch1_texts']} single texts and {result['batches']} batches of {bs} "
             f"real test texts, {result['threads']} threads, backends interleaved call by call", "",
             f"| backend | b1 p50 ms | b1 p90 ms | b1 p99 ms | b{bs} samples/s | b1 p50 speed-up | "
             f"b{bs} throughput speed-up |", "|---|---|---|---|---|---|---|"]
    for name, r in result["backends"].items():
        lines.append(f"| {name} | {r['b1_p50_ms']:.2f} | {r['b1_p90_ms']:.2f} | {r['b1_p99_ms']:.2f} | "
                     f"{r[f'b{bs}_samples_per_s']:.0f} | {r['b1_p50_speedup']:.2f}× | "
                     f"{r['throughput_speedup']:.2f}× |")
    return "\n".join(lines) + "\n"
