"""From pytest-benchmark's JSON to the bench summary: one row per model x backend x device x precision with its
accuracy, size, latency and throughput; the speed-ups and the within-run ratios the regression gate uses;
the achieved GFLOP/s of the fastest fp32 student path against this CPU's fp32 rate."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bench.backends import COMBOS, Row
from bench.yardstick import Peak, best, summary_fields, summary_sentences

ROW_FIELDS = ("row", "model", "backend", "device", "precision", "params", "size_mb")
THROUGHPUT, LATENCY = "throughput", "b1 p50 latency"
# Bumped when a summary's keys change: bench-check reads only summaries of this format and asks for a new bench
# otherwise, so no reader keeps code for older ones.
SUMMARY_FORMAT = 2


@dataclass(frozen=True)
class Ratio:
    """A speed ratio measured inside one bench run (machine speed cancels out): how many times faster the `fast`
    row is than the `slow` one (row ids), in batch-32 throughput or in batch-1 p50 latency."""

    fast: str
    slow: str
    what: Literal["throughput", "b1 p50 latency"]
    value: float

    def __post_init__(self):
        if self.what not in (THROUGHPUT, LATENCY):
            raise ValueError(f"ratio {self.what!r}: expected {THROUGHPUT!r} or {LATENCY!r}")

    @property
    def key(self) -> tuple[str, str, str]:
        """What is compared, without the value: the same key in two runs is the same ratio."""
        return self.fast, self.slow, self.what

    @property
    def name(self) -> str:
        """As tables and messages show it."""
        return f"{self.fast} vs {self.slow}: {self.what}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Ratio:
        return cls(data["fast"], data["slow"], data["what"], float(data["value"]))


def read_ratios(stored: list) -> list[Ratio]:
    """The ratios of a summary or a baseline (a list of Ratio.to_json objects)."""
    if not isinstance(stored, list):
        raise ValueError("its ratios are not a list of {fast, slow, what, value}")
    return [Ratio.from_json(r) for r in stored]


def build_summary(bench_json: dict) -> dict:
    meta = bench_json.get("kd_bench", {})
    parts: dict[str, dict[str, list[dict]]] = {}
    tokenize: dict[str, dict] = {}
    peaks: list[dict] = []
    floors: dict[str, list[float]] = {}
    int8_variants: dict[str, dict] = {}
    for b in bench_json["benchmarks"]:
        info = b["extra_info"]
        kind = info.get("kind")
        if kind in ("latency", "throughput"):
            parts.setdefault(info["row"], {"latency": [], "throughput": []})[kind].append(b)
        elif kind == "tokenize":
            tokenize.setdefault(info["model"], {})[f"b{info['batch_size']}_ms"] = info["ms_per_call"]
        elif kind == "peak":
            peaks.append(info)
        elif kind == "floor":
            floors.setdefault(info["backend"], []).append(info["p50_ms"])
        elif kind == "int8_variants":
            int8_variants[info["model"]] = side_by_side(info)
    rows = {row_id: merge_parts(p) for row_id, p in parts.items()}
    ordered = sorted(rows.values(), key=row_order)
    yardsticks = [Peak.from_json(p) for p in peaks]
    floor_ms = {backend: min(values) for backend, values in floors.items()}  # the lower of before and after the rows
    # per device, the teacher's fastest PyTorch row per workload (bf16 where the CPU has it)
    fastest_teacher = {}
    for device in {r["device"] for r in ordered}:
        teachers = [r for r in ordered
                    if r["model"] == "teacher" and r["backend"] == "pytorch" and r["device"] == device]
        fastest_teacher[device] = fastest(teachers, "samples_per_s", True), fastest(teachers, "p50_ms", False)
    for row in ordered:
        row["tokenize_b1_ms"] = tokenize.get(row["model"], {}).get("b1_ms")
        ref = rows.get(Row(*(row[k] for k in ("model", "backend", "device", "precision"))).reference.id)
        row["vs_teacher"] = ref["row"] if ref else None
        row["throughput_speedup"] = ratio(row.get("samples_per_s"), ref and ref.get("samples_per_s"))
        row["latency_speedup"] = ratio(ref and ref.get("p50_ms"), row.get("p50_ms"))
        b32, b1 = fastest_teacher[row["device"]]
        row["vs_fastest_pytorch_teacher"] = {"b32": b32 and b32["row"], "b1": b1 and b1["row"]}
        row["throughput_speedup_vs_fastest"] = ratio(row.get("samples_per_s"), b32 and b32["samples_per_s"])
        row["latency_speedup_vs_fastest"] = ratio(b1 and b1["p50_ms"], row.get("p50_ms"))
        if row["device"] == "cpu":
            row["floor_ms"] = floor_ms.get(row["backend"])
            stick = best(yardsticks, row["precision"])
            row["arithmetic_ms"] = (row["flop_per_call"] / stick.gflops_per_s / 1e6
                                    if stick and row.get("flop_per_call") else None)
    skipped = {}
    for s in meta.get("skipped", []):
        match = re.search(r"\[(.+?)(-\d+of\d+)?\]", s["test"])
        if match and match.group(1) not in rows:
            skipped[match.group(1)] = s["reason"]
    return {
        "format": SUMMARY_FORMAT, "preset": meta.get("preset"), "config": meta.get("config", {}),
        "machine": meta.get("machine", {}), "versions": meta.get("versions", {}),
        "datetime": bench_json.get("datetime"), "rows": ordered, "skipped": skipped, "tokenize": tokenize,
        "floors_ms": floor_ms, "int8_variants": int8_variants,
        "ratios": [r.to_json() for r in within_run_ratios(rows)], **summary_fields(ordered, peaks),
    }


def side_by_side(info: dict) -> dict:
    """test_int8_variants' record: each variant's seconds per call, and how many times slower than the fastest
    variant the one the engine picked for this CPU ran, per workload."""
    seconds, chosen = info["seconds"], info["chosen"]
    behind = {shape: seconds[chosen][shape] / min(s[shape] for s in seconds.values())
              for shape in seconds[chosen]} if chosen in seconds else {}
    return {"chosen": chosen, "seconds": seconds, "chosen_vs_fastest": behind, "b1_texts": info["b1_texts"],
            "b32_batches": info["b32_batches"]}


def merge_parts(parts: dict[str, list[dict]]) -> dict:
    """One row from its parts. Latency: each part timed every latency text; p50 is the lowest part's median (a
    slow spell of the machine only ever slows a part), p90 to p99 and the mean are over every call of every part.
    Samples/s, accuracy, macro-F1 and GFLOP/s are over the whole split (the parts' best-pass times, predictions
    and FLOPs added up)."""
    from kd.metrics import confusion_scores  # sklearn: imported by a new summary, not by bench-check's reading

    first = (parts["latency"] or parts["throughput"])[0]["extra_info"]
    row = {k: first[k] for k in ROW_FIELDS} | {"int8_variant": first.get("int8_variant")}
    if parts["latency"]:
        per_part = [np.asarray(b["stats"]["data"]) * 1e3 for b in parts["latency"]]
        calls = np.concatenate(per_part)
        part_p50 = [float(np.median(c)) for c in per_part]
        row.update({f"p{q}_ms": float(np.percentile(calls, q)) for q in (90, 95, 99)},
                   p50_ms=min(part_p50), p50_parts_ms=part_p50, p50_all_calls_ms=float(np.median(calls)),
                   mean_ms=float(calls.mean()), latency_calls=int(calls.size),
                   flop_per_call=parts["latency"][0]["extra_info"].get("flop_per_call"))
    if parts["throughput"]:
        infos = [b["extra_info"] for b in parts["throughput"]]
        seconds = sum(i["seconds"] for i in infos)
        confusion = np.sum([i["confusion_matrix"] for i in infos], axis=0)
        row.update(samples=sum(i["samples"] for i in infos), seconds=seconds,
                   padded_tokens=sum(i["padded_tokens"] for i in infos),
                   real_tokens=sum(i["real_tokens"] for i in infos),
                   gflops_per_s=sum(i["flop"] for i in infos) / seconds / 1e9, **confusion_scores(confusion))
        row["samples_per_s"] = row["samples"] / seconds
        row["bulk_mode"] = infos[0]["bulk_mode"]  # the first part's fastest, which the other parts ran alone
    return row


def row_order(row: dict) -> tuple:
    combo = (row["backend"], row["device"], row["precision"])
    models = ("teacher", "baseline", "distilled")
    return (COMBOS.index(combo) if combo in COMBOS else len(COMBOS),
            models.index(row["model"]) if row["model"] in models else len(models))


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def within_run_ratios(rows: dict[str, dict]) -> list[Ratio]:
    """Speed ratios measured inside this run: students and exports vs the teacher in PyTorch fp32; an export's
    int8 (and bf16) vs its fp32; each export's fp32 vs PyTorch; OpenVINO's int8 vs ONNX Runtime's."""
    pairs = []
    for row in rows.values():
        r = Row(row["model"], row["backend"], row["device"], row["precision"])
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
            if a.get("samples_per_s") and b.get("samples_per_s"):
                out.append(Ratio(fast, slow, THROUGHPUT, a["samples_per_s"] / b["samples_per_s"]))
            if a.get("p50_ms") and b.get("p50_ms"):
                out.append(Ratio(fast, slow, LATENCY, b["p50_ms"] / a["p50_ms"]))
    return out


def fastest(rows: list[dict], key: str, higher: bool, model: str | None = None) -> dict | None:
    """The row that does best on `key` (of `model`'s rows, if given)."""
    found = [r for r in rows if r.get(key) and (model is None or r["model"] == model)]
    if not found:
        return None
    return max(found, key=lambda r: r[key] if higher else -r[key])


def fastest_lines(rows: list[dict]) -> list[str]:
    """Which backend serves each workload fastest, for each model; the accuracy it keeps."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        b1, b32 = fastest(rows, "p50_ms", False, model), fastest(rows, "samples_per_s", True, model)
        if b1 is None and b32 is None:
            continue
        parts = []
        if b1:
            parts.append(f"batch 1: {b1['backend']} {b1['precision']} ({b1['p50_ms']:.2f} ms p50"
                         + (f", {b1['accuracy']:.2%} accuracy)" if b1.get("accuracy") is not None else ")"))
        if b32:
            parts.append(f"batch {b32.get('batch_size', 32)}: {b32['backend']} {b32['precision']} "
                         f"({b32['samples_per_s']:.0f} samples/s, {b32['accuracy']:.2%} accuracy)")
        lines.append(f"- {model}: " + "; ".join(parts))
    return lines


def fastest_teachers(rows: list[dict]) -> str:
    """Which teacher rows the "fastest" speed-ups are against, per device."""
    seen = {}
    for r in rows:
        ref = r.get("vs_fastest_pytorch_teacher") or {}
        if ref.get("b32") or ref.get("b1"):
            seen[r["device"]] = f"{r['device']}: b32 {ref.get('b32') or '–'}, b1 {ref.get('b1') or '–'}"
    return "; ".join(seen.values()) or "none measured"


def floor_lines(rows: list[dict]) -> list[str]:
    """Each CPU row's b1 p50 beside its engine's per-call floor and its arithmetic at the yardstick's rate."""
    measured = [r for r in rows if r.get("p50_ms") and r.get("floor_ms") is not None]
    if not measured:
        return []
    lines = ["", "Batch 1 against its floor: each engine's per-call floor (a graph with the same inputs and next to no "
             "arithmetic, bench/floor.py) and the row's arithmetic per call at the best matrix-product rate of its "
             "precision measured in this bench:", "",
             "| row | b1 p50 ms | engine floor ms | arithmetic ms | p50 / (floor + arithmetic) |",
             "|---|---|---|---|---|"]
    for r in measured:
        bound = r["floor_ms"] + (r.get("arithmetic_ms") or 0)
        lines.append(f"| {r['row']} | {r['p50_ms']:.3f} | {r['floor_ms']:.3f} | {fmt(r.get('arithmetic_ms'), '.3f')} | "
                     f"{r['p50_ms'] / bound:.1f}× |")
    return lines


def variant_lines(variants: dict[str, dict]) -> list[str]:
    """The int8 variants side by side (test_int8_variants), the one the engine picked marked."""
    if not variants:
        return []
    some = next(iter(variants.values()))
    lines = ["", f"ONNX Runtime int8 variants side by side on this CPU (the {some['b1_texts']} latency texts at "
             f"batch 1, {some['b32_batches']} batches of 32 spread over the split, interleaved, best of several "
             "rounds); \"picked\": the engine's choice for this CPU, and how many times the fastest variant's time "
             "it took:", "",
             "| model | variant | b1 ms/call | b32 ms/batch | picked |", "|---|---|---|---|---|"]
    for model, v in variants.items():
        behind = v["chosen_vs_fastest"]
        for name, s in v["seconds"].items():
            mark = (f"yes: {behind['b1']:.2f}× b1, {behind['b32']:.2f}× b32" if name == v["chosen"] and behind
                    else "")
            lines.append(f"| {model} | {name} | {s['b1'] * 1e3:.3f} | {s['b32'] * 1e3:.1f} | {mark} |")
    return lines


def settings_sentence(rows: list[dict]) -> str:
    """The settings the numbers hold for: each engine as a user would deploy it, the rows taking turns by part."""
    text = ("Each row ran as deployed, with the cores to itself during its part: ONNX Runtime's threads spinning "
            "between calls (its default), OpenVINO with the LATENCY hint at batch 1")
    async_rows = [r for r in rows if r.get("bulk_mode") == "async"]
    sync_rows = [r for r in rows if r["backend"] == "openvino" and r.get("bulk_mode") == "sync"]
    if async_rows or sync_rows:
        text += ("; at batch 32 OpenVINO used whichever was faster in the row's first part of the LATENCY hint (one "
                 "request at a time) and the THROUGHPUT hint (an asynchronous queue): THROUGHPUT for "
                 + (", ".join(f"{r['model']} {r['precision']}" for r in async_rows) or "none")
                 + ", LATENCY for " + (", ".join(f"{r['model']} {r['precision']}" for r in sync_rows) or "none"))
    return text + (". OpenVINO, which builds its kernels per input shape, ran each shape once before it was timed, "
                   "as a deployed model has seen it. The rows took turns part by part, and the cores were left to "
                   "settle between parts, so that a slow spell of the machine hits every row alike.")


def fmt(value, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def render(summary: dict) -> str:
    cfg, machine = summary["config"], summary["machine"]
    rows = summary["rows"]
    samples = rows[0]["samples"] if rows and "samples" in rows[0] else cfg.get("samples")
    lines = [
        f"Bench of {cfg.get('run_dir')} (preset {summary.get('preset')}): accuracy and throughput over "
        f"{samples} test rows in batches of {cfg.get('batch_size')} "
        f"({'sorted by length' if cfg.get('order') == 'length' else 'in file order'}, each padded to its longest), "
        f"latency over {cfg.get('latency_texts')} single texts, all of them timed in each part until two parts' "
        f"medians agreed within {cfg.get('latency_agreement', 0):.0%} (at most {cfg.get('parts')} parts; b1 p50: the "
        "fastest part's median; p99: over every call). "
        f"{machine.get('cpu')}, "
        f"{machine.get('cpus_usable')} usable CPUs (torch threads {machine.get('threads', {}).get('torch')}, "
        f"ONNX Runtime intra-op threads {machine.get('threads', {}).get('onnxruntime_intra_op')})"
        + (f", {machine['accelerator']}" if machine.get("accelerator") else "") + ".", "",
        "| model | backend | device | precision | accuracy | macro-F1 | params | MB | b1 p50 ms | b1 p99 ms | "
        "b32 samples/s | speed-up b32 | speed-up b1 | speed-up b32, fastest | speed-up b1, fastest | tokenize b1 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {fmt(r.get('accuracy'), '.2%')} | "
            f"{fmt(r.get('f1_macro'), '.4f')} | {r['params'] / 1e6:.1f}M | {r['size_mb']:.1f} | "
            f"{fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p99_ms'), '.2f')} | {fmt(r.get('samples_per_s'), '.0f')} | "
            f"{fmt(r.get('throughput_speedup'), '.2f', '×')} | {fmt(r.get('latency_speedup'), '.2f', '×')} | "
            f"{fmt(r.get('throughput_speedup_vs_fastest'), '.2f', '×')} | "
            f"{fmt(r.get('latency_speedup_vs_fastest'), '.2f', '×')} | {fmt(r.get('tokenize_b1_ms'), '.2f')} |")
    lines += ["", "Speed-ups: against the teacher in PyTorch fp32 on the same device, in this run; \"fastest\": "
              "against the teacher's fastest PyTorch row on the device for that workload ("
              + fastest_teachers(rows) + "). Tokenization is not in the model timings; add it for end-to-end "
              "latency."]
    variants = [f"{r['model']} {r['int8_variant']}" for r in rows if r.get("int8_variant")]
    if variants:
        lines += ["", "ONNX Runtime int8 ran the export's variant fastest on this CPU (engines/int8_host.py): "
                  + ", ".join(variants) + "."]
    lines += variant_lines(summary.get("int8_variants") or {})
    lines += floor_lines(rows)
    best = fastest_lines(rows)
    if best:
        lines += ["", "Fastest backend per workload:", *best]
    lines += ["", settings_sentence(rows)]
    for text in summary_sentences(summary):  # achieved GFLOP/s against the yardsticks (bench/yardstick.py)
        lines += ["", text]
    if summary["skipped"]:
        lines += ["", "Skipped on this machine:"]
        reasons: dict[str, list[str]] = {}
        for row, reason in summary["skipped"].items():
            reasons.setdefault(reason, []).append(row)
        lines += [f"- {', '.join(rows)}: {reason}" for reason, rows in reasons.items()]
    return "\n".join(lines) + "\n"
