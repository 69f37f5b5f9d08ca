"""summary.md: the bench summary (bench/records.py's BenchSummary) as a table and the sentences that say what its
numbers hold for."""

from __future__ import annotations

from bench.config import BenchConfig
from bench.records import BenchSummary, SummaryRow, VariantsSide
from bench.summary import fastest
from bench.yardstick import summary_sentences


def fastest_lines(rows: list[SummaryRow], batch_size: int) -> list[str]:
    """Which backend serves each workload fastest, for each model; the accuracy it keeps."""
    lines = []
    for model in dict.fromkeys(r.model for r in rows):
        b1, b32 = fastest(rows, "p50_ms", False, model), fastest(rows, "samples_per_s", True, model)
        if b1 is None and b32 is None:
            continue
        parts = []
        if b1:
            parts.append(f"batch 1: {b1.backend} {b1.precision} ({b1.p50_ms:.2f} ms p50"
                         + (f", {b1.accuracy:.2%} accuracy)" if b1.accuracy is not None else ")"))
        if b32:
            parts.append(f"batch {batch_size}: {b32.backend} {b32.precision} "
                         f"({b32.samples_per_s:.0f} samples/s, {b32.accuracy:.2%} accuracy)")
        lines.append(f"- {model}: " + "; ".join(parts))
    return lines


def fastest_teachers(rows: list[SummaryRow]) -> str:
    """Which teacher rows the "fastest" speed-ups are against, per device."""
    seen = {}
    for r in rows:
        if r.vs_fastest_b32 or r.vs_fastest_b1:
            seen[r.device] = f"{r.device}: b32 {r.vs_fastest_b32 or '–'}, b1 {r.vs_fastest_b1 or '–'}"
    return "; ".join(seen.values()) or "none measured"


def floor_lines(rows: list[SummaryRow]) -> list[str]:
    """Each CPU row's b1 p50 beside its engine's per-call floor and its arithmetic at the yardstick's rate."""
    measured = [r for r in rows if r.p50_ms and r.floor_ms is not None]
    if not measured:
        return []
    lines = ["", "Batch 1 against its floor: each engine's per-call floor (a graph with the same inputs and next to no "
             "arithmetic, bench/floor.py) and the row's arithmetic per call at the best matrix-product rate of its "
             "precision measured in this bench:", "",
             "| row | b1 p50 ms | engine floor ms | arithmetic ms | p50 / (floor + arithmetic) |",
             "|---|---|---|---|---|"]
    for r in measured:
        bound = r.floor_ms + (r.arithmetic_ms or 0)
        lines.append(f"| {r.row} | {r.p50_ms:.3f} | {r.floor_ms:.3f} | {fmt(r.arithmetic_ms, '.3f')} | "
                     f"{r.p50_ms / bound:.1f}× |")
    return lines


def variant_lines(variants: dict[str, VariantsSide]) -> list[str]:
    """The int8 variants side by side (test_int8_variants), the one the engine picked marked."""
    if not variants:
        return []
    some = next(iter(variants.values()))
    lines = ["", f"ONNX Runtime int8 variants side by side on this CPU (the {some.b1_texts} latency texts at "
             f"batch 1, {some.b32_batches} batches of 32 spread over the split, interleaved, best of several "
             "rounds); \"picked\": the engine's choice for this CPU, and how many times the fastest variant's time "
             "it took:", "",
             "| model | variant | b1 ms/call | b32 ms/batch | picked |", "|---|---|---|---|---|"]
    for model, v in variants.items():
        behind = v.chosen_vs_fastest
        for name, s in v.seconds.items():
            mark = (f"yes: {behind['b1']:.2f}× b1, {behind['b32']:.2f}× b32" if name == v.chosen and behind
                    else "")
            lines.append(f"| {model} | {name} | {s['b1'] * 1e3:.3f} | {s['b32'] * 1e3:.1f} | {mark} |")
    return lines


def settings_sentence(rows: list[SummaryRow]) -> str:
    """The settings the numbers hold for: each engine as a user would deploy it, the rows taking turns by part."""
    text = ("Each row ran as deployed, with the cores to itself during its part: ONNX Runtime's threads spinning "
            "between calls (its default), OpenVINO with the LATENCY hint at batch 1")
    async_rows = [r for r in rows if r.bulk_mode == "async"]
    sync_rows = [r for r in rows if r.backend == "openvino" and r.bulk_mode == "sync"]
    if async_rows or sync_rows:
        text += ("; at batch 32 OpenVINO used whichever was faster in the row's first part of the LATENCY hint (one "
                 "request at a time) and the THROUGHPUT hint (an asynchronous queue): THROUGHPUT for "
                 + (", ".join(f"{r.model} {r.precision}" for r in async_rows) or "none")
                 + ", LATENCY for " + (", ".join(f"{r.model} {r.precision}" for r in sync_rows) or "none"))
    return text + (". OpenVINO, which builds its kernels per input shape, ran each shape once before it was timed, "
                   "as a deployed model has seen it. The rows took turns part by part, and the cores were left to "
                   "settle between parts, so that a slow spell of the machine hits every row alike.")


def fmt(value, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def render(summary: BenchSummary) -> str:
    cfg, machine = BenchConfig.from_dict(summary.config), summary.machine
    rows = summary.rows
    samples = summary.settings.samples or cfg.samples
    lines = [
        f"Bench of {cfg.run_dir} (preset {summary.preset}): accuracy and throughput over "
        f"{samples} test rows in batches of {cfg.batch_size} "
        f"({'sorted by length' if cfg.order == 'length' else 'in file order'}, each padded to its longest), "
        f"latency over {cfg.latency_texts} single texts, all of them timed in each part until two parts' "
        f"medians agreed within {cfg.latency_agreement:.0%} (at most {cfg.parts} parts; b1 p50: the "
        "fastest part's median; p99: over every call). "
        f"{machine.cpu.describe()}, "
        f"{machine.cpus_usable} usable CPUs (torch threads {machine.threads.get('torch')}, "
        f"ONNX Runtime intra-op threads {machine.threads.get('onnxruntime_intra_op')})"
        + (f", {machine.accelerator}" if machine.accelerator else "") + ".", "",
        "| model | backend | device | precision | accuracy | macro-F1 | params | MB | b1 p50 ms | b1 p99 ms | "
        "b32 samples/s | speed-up b32 | speed-up b1 | speed-up b32, fastest | speed-up b1, fastest | tokenize b1 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.backend} | {r.device} | {r.precision} | {fmt(r.accuracy, '.2%')} | "
            f"{fmt(r.f1_macro, '.4f')} | {fmt(r.params and r.params / 1e6, '.1f', 'M')} | {fmt(r.size_mb, '.1f')} | "
            f"{fmt(r.p50_ms, '.2f')} | {fmt(r.p99_ms, '.2f')} | {fmt(r.samples_per_s, '.0f')} | "
            f"{fmt(r.throughput_speedup, '.2f', '×')} | {fmt(r.latency_speedup, '.2f', '×')} | "
            f"{fmt(r.throughput_speedup_vs_fastest, '.2f', '×')} | "
            f"{fmt(r.latency_speedup_vs_fastest, '.2f', '×')} | {fmt(r.tokenize_b1_ms, '.2f')} |")
    lines += ["", "Speed-ups: against the teacher in PyTorch fp32 on the same device, in this run; \"fastest\": "
              "against the teacher's fastest PyTorch row on the device for that workload ("
              + fastest_teachers(rows) + "). Tokenization is not in the model timings; add it for end-to-end "
              "latency."]
    variants = [f"{r.model} {r.int8_variant}" for r in rows if r.int8_variant]
    if variants:
        lines += ["", "ONNX Runtime int8 ran the export's variant fastest on this CPU (engines/int8_host.py): "
                  + ", ".join(variants) + "."]
    lines += variant_lines(summary.int8_variants)
    lines += floor_lines(rows)
    best = fastest_lines(rows, summary.settings.batch_size)
    if best:
        lines += ["", "Fastest backend per workload:", *best]
    lines += ["", settings_sentence(rows)]
    for text in summary_sentences(summary.efficiency):  # achieved GFLOP/s against the yardsticks (bench/yardstick.py)
        lines += ["", text]
    if summary.skipped:
        lines += ["", "Skipped on this machine:"]
        reasons: dict[str, list[str]] = {}
        for row, reason in summary.skipped.items():
            reasons.setdefault(reason, []).append(row)
        lines += [f"- {', '.join(rows)}: {reason}" for reason, rows in reasons.items()]
    return "\n".join(lines) + "\n"
