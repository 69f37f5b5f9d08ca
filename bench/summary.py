"""From pytest-benchmark's JSON to the bench summary (bench/records.py's BenchSummary): one row per model x backend
x device x precision with its accuracy, size, latency and throughput; the speed-ups and the within-run ratios the
regression gate uses; the achieved GFLOP/s of the fastest fp32 student path against this CPU's fp32 rate."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from bench.backends import COMBOS, Row
from bench.figures import (
    FloorFigure,
    Int8VariantsFigure,
    LatencyFigure,
    PeakFigure,
    SuiteMeta,
    ThroughputFigure,
    TokenizeFigure,
    read_figure,
)
from bench.records import LATENCY, THROUGHPUT, BenchSummary, Ratio, Settings, SummaryRow, VariantsSide
from bench.yardstick import best, compute_efficiency
from kd.runfolder import TEACHER
from kd.typed import read

Parts = dict[str, list]  # "latency" / "throughput" -> [(per-call seconds, figure)] of one row


def build_summary(bench_json: dict) -> BenchSummary:
    where, fix = "pytest-benchmark.json:", "written by another version of the bench suite: run the bench again"
    meta = read(SuiteMeta, bench_json.get("kd_bench"), where, ("kd_bench",), fix)
    # a test that failed after its timing and before its figure left none: the summary holds what was measured
    figures = [(b["stats"]["data"], read_figure(b["extra_info"], where, ("benchmarks", i, "extra_info"), fix))
               for i, b in enumerate(bench_json["benchmarks"]) if b["extra_info"]]
    parts: dict[str, Parts] = {}
    for data, figure in figures:
        if isinstance(figure, (LatencyFigure, ThroughputFigure)):
            parts.setdefault(figure.of.row, {"latency": [], "throughput": []})[figure.kind].append((data, figure))
    rows = {row_id: merge_parts(p) for row_id, p in parts.items()}
    ordered = sorted(rows.values(), key=row_order)
    only = [f for _, f in figures]
    tokenize: dict[str, dict[str, float]] = {}
    for f in only:
        if isinstance(f, TokenizeFigure):
            tokenize.setdefault(f.model, {})[f"b{f.batch_size}_ms"] = f.ms_per_call
    peaks = [f for f in only if isinstance(f, PeakFigure)]
    floors: dict[str, float] = {}
    for f in only:  # the lower of before and after the rows: a slow spell only slows
        if isinstance(f, FloorFigure):
            floors[f.backend] = min(floors.get(f.backend, f.p50_ms), f.p50_ms)
    add_comparisons(ordered, rows, tokenize, floors, [p.peak for p in peaks])
    theoretical = next((p.theoretical for p in peaks if p.theoretical), None)
    skipped = {}
    for s in meta.skipped:
        match = re.search(r"\[(.+?)(-\d+of\d+)?\]", s.test)
        if match and match.group(1) not in rows:
            skipped[match.group(1)] = s.reason
    samples = ordered[0].samples if ordered else None
    return BenchSummary(
        preset=meta.preset, config=meta.config,
        settings=Settings(samples, meta.config.get("batch_size"), meta.config.get("order")),
        machine=meta.machine, versions=meta.versions, datetime=bench_json.get("datetime"), rows=ordered,
        skipped=skipped, tokenize=tokenize, floors_ms=floors,
        int8_variants={f.model: side_by_side(f) for f in only if isinstance(f, Int8VariantsFigure)},
        ratios=within_run_ratios(rows), cpu_peaks=[p.peak for p in peaks], cpu_theoretical_peak=theoretical,
        efficiency=compute_efficiency(ordered, [p.peak for p in peaks], theoretical))


def add_comparisons(ordered: list[SummaryRow], rows: dict[str, SummaryRow], tokenize: dict, floors: dict,
                    peaks: list) -> None:
    """Each row beside the others: its speed-ups against the teacher's PyTorch rows, its engine's floor and its
    arithmetic at the best matrix-product rate of its precision."""
    fastest_teacher = {}  # per device, the teacher's fastest PyTorch row per workload (bf16 where the CPU has it)
    for device in {r.device for r in ordered}:
        teachers = [r for r in ordered if r.model == TEACHER and r.backend == "pytorch" and r.device == device]
        fastest_teacher[device] = fastest(teachers, "samples_per_s", True), fastest(teachers, "p50_ms", False)
    for row in ordered:
        row.tokenize_b1_ms = tokenize.get(row.model, {}).get("b1_ms")
        ref = rows.get(Row(row.model, row.backend, row.device, row.precision).reference.id)
        row.vs_teacher = ref and ref.row
        row.throughput_speedup = ratio(row.samples_per_s, ref and ref.samples_per_s)
        row.latency_speedup = ratio(ref and ref.p50_ms, row.p50_ms)
        b32, b1 = fastest_teacher[row.device]
        row.vs_fastest_b32, row.vs_fastest_b1 = b32 and b32.row, b1 and b1.row
        row.throughput_speedup_vs_fastest = ratio(row.samples_per_s, b32 and b32.samples_per_s)
        row.latency_speedup_vs_fastest = ratio(b1 and b1.p50_ms, row.p50_ms)
        if row.device == "cpu":
            row.floor_ms = floors.get(row.backend)
            stick = best(peaks, row.precision)
            row.arithmetic_ms = (row.flop_per_call / stick.gflops_per_s / 1e6
                                 if stick and row.flop_per_call else None)


def side_by_side(f: Int8VariantsFigure) -> VariantsSide:
    """How many times slower than the fastest variant the one the engine picked for this CPU ran, per workload."""
    behind = ({shape: f.seconds[f.chosen][shape] / min(s[shape] for s in f.seconds.values())
               for shape in f.seconds[f.chosen]} if f.chosen in f.seconds else {})
    return VariantsSide(f.chosen, f.seconds, behind, f.b1_texts, f.b32_batches)


def merge_parts(parts: Parts) -> SummaryRow:
    """One row from its parts. Latency: each part timed every latency text; p50 is the lowest part's median (a
    slow spell of the machine only ever slows a part), p90 to p99 and the mean are over every call of every part.
    Samples/s, accuracy, macro-F1 and GFLOP/s are over the whole split (the parts' best-pass times, predictions
    and FLOPs added up)."""
    from kd.metrics import confusion_scores  # sklearn: imported by a new summary, not by bench-check's reading

    of = (parts["latency"] or parts["throughput"])[0][1].of
    row = SummaryRow(of.row, of.model, of.backend, of.device, of.precision, of.params, of.size_mb, of.int8_variant)
    if parts["latency"]:
        per_part = [np.asarray(data) * 1e3 for data, _ in parts["latency"]]
        calls = np.concatenate(per_part)
        part_p50 = [float(np.median(c)) for c in per_part]
        p90, p95, p99 = (float(np.percentile(calls, q)) for q in (90, 95, 99))
        row = replace(row, p50_ms=min(part_p50), p90_ms=p90, p95_ms=p95, p99_ms=p99, p50_parts_ms=part_p50,
                      p50_all_calls_ms=float(np.median(calls)), mean_ms=float(calls.mean()),
                      latency_calls=int(calls.size), flop_per_call=parts["latency"][0][1].flop_per_call)
    if parts["throughput"]:
        figures: list[ThroughputFigure] = [f for _, f in parts["throughput"]]
        seconds = sum(f.seconds for f in figures)
        scores = confusion_scores(np.sum([f.confusion_matrix for f in figures], axis=0))
        samples = sum(f.samples for f in figures)
        row = replace(row, samples=samples, seconds=seconds, padded_tokens=sum(f.padded_tokens for f in figures),
                      real_tokens=sum(f.real_tokens for f in figures),
                      gflops_per_s=sum(f.flop for f in figures) / seconds / 1e9, accuracy=scores["accuracy"],
                      f1_macro=scores["f1_macro"], samples_per_s=samples / seconds,
                      bulk_mode=figures[0].bulk_mode)  # the first part's fastest, which the other parts ran alone
    return row


def row_order(row: SummaryRow) -> tuple:
    combo = (row.backend, row.device, row.precision)
    models = ("teacher", "baseline", "distilled")
    return (COMBOS.index(combo) if combo in COMBOS else len(COMBOS),
            models.index(row.model) if row.model in models else len(models))


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def within_run_ratios(rows: dict[str, SummaryRow]) -> list[Ratio]:
    """Speed ratios measured inside this run: students and exports vs the teacher in PyTorch fp32; an export's
    int8 (and bf16) vs its fp32; each export's fp32 vs PyTorch; OpenVINO's int8 vs ONNX Runtime's."""
    pairs = []
    for row in rows.values():
        r = Row(row.model, row.backend, row.device, row.precision)
        if r != r.reference:
            pairs.append((r.id, r.reference.id))
        if r.backend != "pytorch" and r.precision != "fp32":
            pairs.append((r.id, Row(r.model, r.backend, r.device, "fp32").id))
        if r.backend != "pytorch" and r.precision == "fp32" and r.model != "teacher":
            pairs.append((r.id, Row(r.model, "pytorch", r.device, "fp32").id))
        if r.backend == "openvino" and r.precision == "int8":
            pairs.append((r.id, Row(r.model, "onnxruntime", r.device, "int8").id))
    out = []
    for fast, slow in pairs:
        if fast in rows and slow in rows:
            a, b = rows[fast], rows[slow]
            if a.samples_per_s and b.samples_per_s:
                out.append(Ratio(fast, slow, THROUGHPUT, a.samples_per_s / b.samples_per_s))
            if a.p50_ms and b.p50_ms:
                out.append(Ratio(fast, slow, LATENCY, b.p50_ms / a.p50_ms))
    return out


def fastest(rows: list[SummaryRow], key: str, higher: bool, model: str | None = None) -> SummaryRow | None:
    """The row that does best on `key` (of `model`'s rows, if given)."""
    found = [r for r in rows if getattr(r, key) and (model is None or r.model == model)]
    if not found:
        return None
    return max(found, key=lambda r: getattr(r, key) if higher else -getattr(r, key))
