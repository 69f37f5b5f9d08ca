"""The measurements. Every timed call is a model call on an already-tokenized batch (host arrays in, host
logits out, the device synchronised before it returns); tokenization is timed on its own. Figures that
pytest-benchmark does not compute (percentiles, throughput, accuracy, FLOPs) go into `extra_info` as one typed
figure per measurement (bench/figures.py). Each test stands alone: what it needs comes from fixtures, so any one of
them runs by itself (`pytest bench -k <id>`)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.config import flag
from bench.cpu import theoretical_peak, this_cpu
from bench.figures import (
    FloorFigure,
    Int8VariantsFigure,
    LatencyFigure,
    PeakFigure,
    RowFields,
    ThroughputFigure,
    TokenizeFigure,
)
from bench.floor import BACKENDS, floor_batches, open_floor
from bench.flops import flops_of
from bench.workload import token_counts
from bench.yardstick import BENCH_STICKS, Peak, prepare, unavailable
from engines.inference import encode
from kd.device import cpu_count
from kd.metrics import confusion

VARIANT_BATCHES = 16  # batches of 32 each int8 variant runs side by side, spread over the length-sorted split


def feeder(items: list, warmup: int):
    """pytest-benchmark `setup` handing out one item per round: the first `warmup` items, then all of them."""
    queue = iter(items[:warmup] + items)
    return lambda: ((next(queue),), {})


def passes_needed(state, kind: str, runner, probe, calls: int, cfg) -> int:
    """Passes over `calls` items that take at least cfg.min_seconds (split among the parts), judged in the row's first
    part of this kind from one warm call on `probe` and kept for its other parts."""
    if kind not in state.passes:
        state.passes[kind] = passes_for(runner, probe, calls, cfg)
    return state.passes[kind]


def passes_for(runner, probe, calls: int, cfg) -> int:
    """Passes over `calls` items that take at least cfg.min_seconds / cfg.parts, from one warm call on `probe`."""
    runner(probe)
    start = time.perf_counter()
    runner(probe)
    per_pass = (time.perf_counter() - start) * calls
    return int(min(cfg.max_passes, max(1, np.ceil(cfg.min_seconds / cfg.parts / per_pass))))


def cpu_or_skip(bench_cfg, reason: str | None = None) -> None:
    """A CPU-only measurement: skipped when the bench leaves the CPU out, or for `reason` (what the machine lacks)."""
    if "cpu" not in bench_cfg.devices:
        pytest.skip(f"cpu not among {flag('devices')}")
    if reason:
        pytest.skip(reason)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1e3
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 95, 99)} | {
        "mean_ms": float(values.mean())}


def row_fields(row, loaded) -> RowFields:
    described = loaded.engine.describe()
    return RowFields(row.id, row.model, row.backend, row.device, row.precision, loaded.params, described["size_mb"],
                     described["file"], described.get("int8_variant"))


def measure_peak(benchmark, bench_cfg, stick) -> None:
    """One yardstick: the rate one engine reaches on a large matrix product in one precision, with the bench's
    thread count (the fastest call, as timeit would take)."""
    cpu_or_skip(bench_cfg, unavailable(stick))
    threads = cpu_count()
    benchmark.pedantic(prepare(stick, threads), rounds=5, warmup_rounds=1)
    peak = Peak.of(stick, threads, min(benchmark.stats.stats.data))
    benchmark.extra_info.update(PeakFigure(peak, theoretical_peak(this_cpu(), threads)).info())


@pytest.mark.parametrize("stick", BENCH_STICKS, ids=lambda s: f"peak-{s.id}")
def test_cpu_peak(benchmark, bench_cfg, stick):
    """The yardsticks before the rows. The summary's yardstick for the models' GFLOP/s is the best of them per
    precision (bench/yardstick.py), over this measurement and test_cpu_peak_again's."""
    measure_peak(benchmark, bench_cfg, stick)


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
    benchmark.extra_info.update(TokenizeFigure(tokenizer_model, batch_size, len(chunks),
                                               float(np.median(seconds) * 1e3), len(texts) / float(np.sum(seconds)))
                                .info())


@pytest.fixture
def floor(backend, bench_cfg, run, workload, tmp_path_factory):
    """The engine's floor graph (bench/floor.py) opened with the rows' settings, and the latency texts' batches for
    it; a skip where the bench leaves the CPU out or the engine is not installed."""
    from transformers import AutoTokenizer

    from engines import engine

    cpu_or_skip(bench_cfg, engine(backend).unavailable("cpu", "fp32"))
    model = bench_cfg.models[-1]
    singles = floor_batches(workload.single_texts(model, AutoTokenizer.from_pretrained(run.model_dir(model))))
    return open_floor(backend, tmp_path_factory.mktemp("floor")).run, singles


def measure_floor(benchmark, backend, floor, bench_cfg) -> None:
    """The engine's per-call floor at batch 1: the latency texts' batches through a graph that does next to no
    arithmetic. Its p50 is over every call, repeated to min_seconds / parts."""
    runner, singles = floor
    passes = passes_for(runner, singles[len(singles) // 2], len(singles), bench_cfg)
    benchmark.pedantic(runner, setup=feeder(singles * passes, bench_cfg.latency_warmup),
                       rounds=len(singles) * passes, warmup_rounds=min(bench_cfg.latency_warmup, len(singles)))
    benchmark.extra_info.update(FloorFigure(backend, len(singles) * passes,
                                            float(np.median(benchmark.stats.stats.data) * 1e3)).info())


@pytest.mark.parametrize("backend", BACKENDS)
def test_floor(benchmark, backend, floor, bench_cfg):
    """The floors before the rows."""
    measure_floor(benchmark, backend, floor, bench_cfg)


def test_latency(benchmark, part, row, state, workload, bench_cfg, settler):
    """Batch 1 over real test texts: each part times all of them (once, or in passes until min_seconds / parts),
    every call's time kept, until two parts' medians agree (bench/workload.py, RowState.latency_settled). The
    summary's p50 is the lowest of the parts' medians, as timeit keeps its best round: on a busy machine a slow
    spell only ever slows a part; p90 to p99 are over every call of every part."""
    if state.latency_settled(bench_cfg.latency_agreement):
        pytest.skip(f"latency settled: {len(state.latency_medians)} parts' medians agree within "
                    f"{bench_cfg.latency_agreement:.0%}")
    loaded = state.loaded
    singles = workload.single_texts(row.model, loaded.tokenizer)
    state.warm("single", singles)
    settler.before(state)
    passes = passes_needed(state, "latency", loaded.engine.run, singles[len(singles) // 2], len(singles),
                           bench_cfg)
    benchmark.pedantic(loaded.engine.run, setup=feeder(singles * passes, bench_cfg.latency_warmup),
                       rounds=len(singles) * passes, warmup_rounds=min(bench_cfg.latency_warmup, len(singles)))
    state.latency_medians.append(float(np.median(benchmark.stats.stats.data)))
    _, real = token_counts(singles)
    benchmark.extra_info.update(LatencyFigure(
        row_fields(row, loaded), part, bench_cfg.parts, len(singles), passes, real / len(singles),
        flops_of(loaded.config, singles) / len(singles), **percentiles_ms(benchmark.stats.stats.data)).info())


def test_throughput(benchmark, part, row, state, workload, bench_cfg, settler):
    """Batches of 32 with dynamic padding: this part's share of the batches over the (--bench-samples) test split,
    timed a whole pass at a time. Its time is the fastest pass (one pass unless shorter than min_seconds / parts)
    in the engine's fastest bulk mode (OpenVINO: one request at a time, or an asynchronous queue; both are timed in
    the first part, the faster alone in the others); its predictions give a confusion matrix. The
    summary adds the parts up: samples/s, accuracy and macro-F1 over the whole split."""
    loaded = state.loaded
    batches = workload.throughput_batches(row.model, loaded.tokenizer, bench_cfg)[part::bench_cfg.parts]
    if not batches:
        pytest.skip(f"part {part + 1} of {bench_cfg.parts}: no batch left for it (fewer batches than parts)")
    padded_batches = [b for _, b in batches]
    engine = loaded.engine
    settler.before(state)
    passes = passes_needed(state, "throughput", engine.run, padded_batches[len(batches) // 2], len(batches),
                           bench_cfg)
    warmup = padded_batches[:bench_cfg.throughput_warmup]
    modes = state.modes
    mode_seconds, last = {}, {}
    for mode in modes[1:]:  # the other modes, timed by hand; the first is pytest-benchmark's row
        state.ready(mode, padded_batches, warmup)
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            last[mode] = engine.run_many(padded_batches, mode)
            times.append(time.perf_counter() - start)
        mode_seconds[mode] = min(times)
    first = modes[0]
    state.ready(first, padded_batches, warmup)
    benchmark.pedantic(lambda: last.update({first: engine.run_many(padded_batches, first)}), rounds=passes)
    mode_seconds[first] = min(benchmark.stats.stats.data)  # timeit's rule: interference only ever slows a pass
    mode = min(mode_seconds, key=mode_seconds.get)
    if part == 0:
        state.keep_fastest_mode(mode_seconds)
    rows = np.concatenate([r for r, _ in batches])
    logits = np.concatenate(last[mode])  # the mode's last pass
    assert np.isfinite(logits).all(), f"{row.id}: non-finite logits"
    matrix = confusion(logits.argmax(-1), workload.labels[rows], len(workload.label_names))
    padded, real = token_counts(padded_batches)
    benchmark.extra_info.update(ThroughputFigure(
        row_fields(row, loaded), part, bench_cfg.parts, bench_cfg.batch_size, bench_cfg.order, len(rows),
        len(batches), passes, mode_seconds[mode], mode, mode_seconds, float(np.median(benchmark.stats.stats.data)),
        matrix.tolist(), padded, real, float(flops_of(loaded.config, padded_batches))).info())


def test_int8_variants(benchmark, int8_model, run, workload, bench_cfg):
    """Every ONNX Runtime int8 variant the export kept for the model, side by side on this CPU with the rows'
    session settings: the latency texts one at a time, and VARIANT_BATCHES of the bench's batches of 32 spread over
    its lengths, the variants interleaved, best of several rounds (export/int8_host.measure). It shows how far the
    variant the engine picked for this CPU (on synthetic inputs, when the model was first loaded here) is from the
    fastest one on the bench's own texts."""
    from bench.backends import Row, load, missing, weights_file
    from engines import engine
    from engines.int8_host import measure, variants

    row = Row(int8_model, "onnxruntime", "cpu", "int8")
    cpu_or_skip(bench_cfg, missing(row, run))
    files = variants(weights_file(run, row))
    if len(files) < 2:
        pytest.skip(f"{int8_model}: the export kept one int8 variant")
    loaded = load(row, run)  # as the row loads it: the variant picked for this CPU
    ort = engine("onnxruntime")
    runners = {name: ort.open(path, "cpu", "int8", **ort.bench_options).run for name, path in files.items()}
    batches = [b for _, b in workload.throughput_batches(int8_model, loaded.tokenizer, bench_cfg)]
    spread = batches[::max(1, len(batches) // VARIANT_BATCHES)]
    singles = workload.single_texts(int8_model, loaded.tokenizer)
    seconds = {}
    benchmark.pedantic(lambda: seconds.update(measure(runners, {"b1": singles, "b32": spread})), rounds=1)
    benchmark.extra_info.update(Int8VariantsFigure(int8_model, loaded.engine.describe().get("int8_variant"),
                                                   len(singles), len(spread), seconds).info())


@pytest.mark.parametrize("stick", BENCH_STICKS, ids=lambda s: f"peak-{s.id}-again")
def test_cpu_peak_again(benchmark, bench_cfg, stick):
    """The yardsticks again, after every row (pytest runs a module's tests in file order): a slow spell of a few
    seconds once put every call of the first measurement below a student's own rate, and a yardstick measured
    low gives no fraction at all. It measures on its own, so it also runs alone."""
    measure_peak(benchmark, bench_cfg, stick)


@pytest.mark.parametrize("backend", BACKENDS)
def test_floor_again(benchmark, backend, floor, bench_cfg):
    """The floors again, after every row: the summary keeps each engine's lower one (a slow spell only slows)."""
    measure_floor(benchmark, backend, floor, bench_cfg)
