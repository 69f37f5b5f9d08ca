"""The measurements. Every timed call is a model call on an already-tokenized batch (host arrays in, host
logits out, the device synchronised before it returns); tokenization is timed on its own. Figures that
pytest-benchmark does not compute (percentiles, throughput, accuracy, FLOPs) go into `extra_info`."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.config import flag
from bench.flops import flops_of
from bench.workload import token_counts
from export.inference import encode
from kd.metrics import confusion


def feeder(items: list, warmup: int):
    """pytest-benchmark `setup` handing out one item per round: the first `warmup` items, then all of them."""
    queue = iter(items[:warmup] + items)
    return lambda: ((next(queue),), {})


def passes_needed(runner, probe, calls: int, cfg) -> int:
    """Passes over `calls` items that take at least cfg.min_seconds (shared by the parts), judged from one warm
    call on `probe`."""
    runner(probe)
    start = time.perf_counter()
    runner(probe)
    per_pass = (time.perf_counter() - start) * calls
    return int(min(cfg.max_passes, max(1, np.ceil(cfg.min_seconds / cfg.parts / per_pass))))


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1e3
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 95, 99)} | {
        "mean_ms": float(values.mean())}


def row_info(row, loaded) -> dict:
    described = loaded.engine.describe()
    return {**row.fields(), "params": loaded.params, "size_mb": described["size_mb"], "file": described["file"]}


def test_cpu_fp32_peak(benchmark, bench_cfg):
    """The fp32 rate this CPU reaches on a large matrix product: the yardstick for the models' GFLOP/s."""
    if "cpu" not in bench_cfg.devices:
        pytest.skip(f"cpu not among {flag('devices')}")
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=10, warmup_rounds=2)
    best = min(benchmark.stats.stats.data)
    benchmark.extra_info.update(kind="peak", device="cpu", matrix=n, threads=torch.get_num_threads(),
                                gflops_per_s=2 * n**3 / best / 1e9)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_tokenize(benchmark, tokenizer_model, batch_size, run, workload):
    """The model's tokenizer as the bench calls it (padding to the longest, truncation, numpy arrays)."""
    from transformers import AutoTokenizer

    folder = run.model_dir(tokenizer_model)
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} is missing: run `make train-all` for {run.root}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [workload.texts[i] for i in workload.latency_rows] if batch_size == 1 else workload.texts
    chunks = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    benchmark.pedantic(lambda chunk: encode(tokenizer, chunk, workload.max_length), setup=feeder(chunks, 5),
                       rounds=len(chunks), warmup_rounds=min(5, len(chunks)))
    seconds = benchmark.stats.stats.data
    benchmark.extra_info.update(kind="tokenize", model=tokenizer_model, batch_size=batch_size, calls=len(chunks),
                                ms_per_call=float(np.median(seconds) * 1e3),
                                texts_per_s=len(texts) / float(np.sum(seconds)))


def test_latency(benchmark, part, row, loaded, workload, bench_cfg):
    """Batch 1 over real test texts (this part's share of them): every call's time is kept, and the summary
    takes p50/p90/p95/p99 over all the parts' calls. Warm-up calls first."""
    singles = workload.single_texts(row.model, loaded.tokenizer)[part::bench_cfg.parts]
    if not singles:
        pytest.skip(f"part {part + 1} of {bench_cfg.parts}: no texts left for it (fewer texts than parts)")
    passes = passes_needed(loaded.engine.run, singles[len(singles) // 2], len(singles), bench_cfg)
    benchmark.pedantic(loaded.engine.run, setup=feeder(singles * passes, bench_cfg.latency_warmup),
                       rounds=len(singles) * passes, warmup_rounds=min(bench_cfg.latency_warmup, len(singles)))
    _, real = token_counts(singles)
    benchmark.extra_info.update(kind="latency", part=part, parts=bench_cfg.parts, batch_size=1, texts=len(singles),
                                passes=passes, mean_tokens=real / len(singles), **row_info(row, loaded),
                                **percentiles_ms(benchmark.stats.stats.data))


def test_throughput(benchmark, part, row, loaded, workload, bench_cfg):
    """Batches of 32 with dynamic padding: this part's share of the batches over the (--bench-samples) test split.
    Its time is the fastest pass (one pass unless shorter than min_seconds / parts); its predictions give a
    confusion matrix. The summary adds the parts up: samples/s, accuracy and macro-F1 over the whole split."""
    batches = workload.throughput_batches(row.model, loaded.tokenizer, bench_cfg)[part::bench_cfg.parts]
    if not batches:
        pytest.skip(f"part {part + 1} of {bench_cfg.parts}: no batch left for it (fewer batches than parts)")
    padded_batches = [b for _, b in batches]
    passes = passes_needed(loaded.engine.run, padded_batches[len(batches) // 2], len(batches), bench_cfg)
    outputs = []
    warmup = min(bench_cfg.throughput_warmup, len(batches))
    benchmark.pedantic(lambda batch: outputs.append(loaded.engine.run(batch)), setup=feeder(padded_batches * passes,
                       warmup), rounds=len(batches) * passes, warmup_rounds=warmup)
    rows = np.concatenate([r for r, _ in batches])
    logits = np.concatenate(outputs[-len(batches):])  # the last pass
    assert np.isfinite(logits).all(), f"{row.id}: non-finite logits"
    matrix = confusion(logits.argmax(-1), workload.labels[rows], len(workload.label_names))
    pass_seconds = np.asarray(benchmark.stats.stats.data).reshape(passes, len(batches)).sum(axis=1)
    seconds = float(pass_seconds.min())  # timeit's rule: interference only ever slows a pass down
    padded, real = token_counts(padded_batches)
    benchmark.extra_info.update(
        kind="throughput", part=part, parts=bench_cfg.parts, batch_size=bench_cfg.batch_size, order=bench_cfg.order,
        samples=len(rows), batches=len(batches), passes=passes, seconds=seconds,
        median_pass_seconds=float(np.median(pass_seconds)), confusion_matrix=matrix.tolist(),
        padded_tokens=padded, real_tokens=real, flop=flops_of(loaded.config, padded_batches), **row_info(row, loaded))
