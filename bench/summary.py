"""From pytest-benchmark's JSON to the bench summary: one row per model x backend x device x precision with its
accuracy, size, latency and throughput; the speed-ups and the within-run ratios the regression gate uses;
the achieved GFLOP/s of the fastest fp32 student path against this CPU's fp32 rate."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bench.backends import COMBOS, Row

ROW_FIELDS = ("row", "model", "backend", "device", "precision", "params", "size_mb")
THROUGHPUT, LATENCY = "throughput", "b1 p50 latency"


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
        raise ValueError("its ratios are not a list of {fast, slow, what, value}: written by an older kd-bench")
    return [Ratio.from_json(r) for r in stored]


def build_summary(bench_json: dict) -> dict:
    meta = bench_json.get("kd_bench", {})
    parts: dict[str, dict[str, list[dict]]] = {}
    tokenize: dict[str, dict] = {}
    peak = None
    for b in bench_json["benchmarks"]:
        info = b["extra_info"]
        kind = info.get("kind")
        if kind in ("latency", "throughput"):
            parts.setdefault(info["row"], {"latency": [], "throughput": []})[kind].append(b)
        elif kind == "tokenize":
            tokenize.setdefault(info["model"], {})[f"b{info['batch_size']}_ms"] = info["ms_per_call"]
        elif kind == "peak":
            peak = {"gflops_per_s": info["gflops_per_s"], "matrix": info["matrix"], "threads": info["threads"]}
    rows = {row_id: merge_parts(p) for row_id, p in parts.items()}
    ordered = sorted(rows.values(), key=row_order)
    for row in ordered:
        row["tokenize_b1_ms"] = tokenize.get(row["model"], {}).get("b1_ms")
        ref = rows.get(Row(*(row[k] for k in ("model", "backend", "device", "precision"))).reference.id)
        row["vs_teacher"] = ref["row"] if ref else None
        row["throughput_speedup"] = ratio(row.get("samples_per_s"), ref and ref.get("samples_per_s"))
        row["latency_speedup"] = ratio(ref and ref.get("p50_ms"), row.get("p50_ms"))
    skipped = {}
    for s in meta.get("skipped", []):
        match = re.search(r"\[(.+?)(-\d+of\d+)?\]", s["test"])
        if match and match.group(1) not in rows:
            skipped[match.group(1)] = s["reason"]
    return {
        "preset": meta.get("preset"), "config": meta.get("config", {}), "machine": meta.get("machine", {}),
        "versions": meta.get("versions", {}), "datetime": bench_json.get("datetime"),
        "rows": ordered, "skipped": skipped, "tokenize": tokenize, "cpu_fp32_peak": peak,
        "ratios": [r.to_json() for r in within_run_ratios(rows)], "compute": compute_efficiency(ordered, peak),
    }


def merge_parts(parts: dict[str, list[dict]]) -> dict:
    """One row from its parts: latency percentiles over every call of every part; samples/s, accuracy, macro-F1
    and GFLOP/s over the whole split (the parts' best-pass times, predictions and FLOPs added up)."""
    from kd.metrics import confusion_scores  # sklearn: imported by a new summary, not by bench-check's reading

    first = (parts["latency"] or parts["throughput"])[0]["extra_info"]
    row = {k: first[k] for k in ROW_FIELDS}
    if parts["latency"]:
        calls = np.concatenate([b["stats"]["data"] for b in parts["latency"]]) * 1e3
        row.update({f"p{q}_ms": float(np.percentile(calls, q)) for q in (50, 90, 95, 99)},
                   mean_ms=float(calls.mean()), latency_calls=int(calls.size))
    if parts["throughput"]:
        infos = [b["extra_info"] for b in parts["throughput"]]
        seconds = sum(i["seconds"] for i in infos)
        confusion = np.sum([i["confusion_matrix"] for i in infos], axis=0)
        row.update(samples=sum(i["samples"] for i in infos), seconds=seconds,
                   padded_tokens=sum(i["padded_tokens"] for i in infos),
                   real_tokens=sum(i["real_tokens"] for i in infos),
                   gflops_per_s=sum(i["flop"] for i in infos) / seconds / 1e9, **confusion_scores(confusion))
        row["samples_per_s"] = row["samples"] / seconds
    return row


def row_order(row: dict) -> tuple:
    combo = (row["backend"], row["device"], row["precision"])
    models = ("teacher", "baseline", "distilled")
    return (COMBOS.index(combo) if combo in COMBOS else len(COMBOS),
            models.index(row["model"]) if row["model"] in models else len(models))


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def within_run_ratios(rows: dict[str, dict]) -> list[Ratio]:
    """Speed ratios measured inside this run: students and exports vs the teacher in PyTorch fp32; int8 vs fp32
    ONNX; ONNX Runtime vs PyTorch."""
    pairs = []
    for row in rows.values():
        r = Row(row["model"], row["backend"], row["device"], row["precision"])
        if r != r.reference:
            pairs.append((r.id, r.reference.id))
        if r.backend == "onnxruntime" and r.precision == "int8":
            pairs.append((r.id, Row(r.model, "onnxruntime", r.device, "fp32").id))
        if r.backend == "onnxruntime" and r.precision == "fp32" and r.model != "teacher":
            pairs.append((r.id, Row(r.model, "pytorch", r.device, "fp32").id))
    out = []
    for fast, slow in pairs:
        if fast in rows and slow in rows:
            a, b = rows[fast], rows[slow]
            if a.get("samples_per_s") and b.get("samples_per_s"):
                out.append(Ratio(fast, slow, THROUGHPUT, a["samples_per_s"] / b["samples_per_s"]))
            if a.get("p50_ms") and b.get("p50_ms"):
                out.append(Ratio(fast, slow, LATENCY, b["p50_ms"] / a["p50_ms"]))
    return out


def compute_efficiency(rows: list[dict], peak: dict | None) -> dict | None:
    """GFLOP/s of the fastest fp32 student path on the CPU, and its share of the CPU's measured fp32 rate."""
    candidates = [r for r in rows if r["device"] == "cpu" and r["precision"] == "fp32" and r["model"] != "teacher"
                  and r.get("gflops_per_s")]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: r["samples_per_s"])
    out = {"row": best["row"], "gflops_per_s": best["gflops_per_s"],
           "useful_token_share": best["real_tokens"] / best["padded_tokens"]}
    if peak:
        out.update(peak_gflops_per_s=peak["gflops_per_s"], fraction_of_peak=best["gflops_per_s"] / peak["gflops_per_s"])
    return out


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
        f"latency over {cfg.get('latency_texts')} single texts. {machine.get('cpu')}, "
        f"{machine.get('cpus_usable')} usable CPUs (torch threads {machine.get('threads', {}).get('torch')}, "
        f"ONNX Runtime intra-op threads {machine.get('threads', {}).get('onnxruntime_intra_op')})"
        + (f", {machine['accelerator']}" if machine.get("accelerator") else "") + ".", "",
        "| model | backend | device | precision | accuracy | macro-F1 | params | MB | b1 p50 ms | b1 p99 ms | "
        "b32 samples/s | speed-up b32 | speed-up b1 | tokenize b1 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {fmt(r.get('accuracy'), '.2%')} | "
            f"{fmt(r.get('f1_macro'), '.4f')} | {r['params'] / 1e6:.1f}M | {r['size_mb']:.1f} | "
            f"{fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p99_ms'), '.2f')} | {fmt(r.get('samples_per_s'), '.0f')} | "
            f"{fmt(r.get('throughput_speedup'), '.2f', '×')} | {fmt(r.get('latency_speedup'), '.2f', '×')} | "
            f"{fmt(r.get('tokenize_b1_ms'), '.2f')} |")
    lines += ["", "Speed-ups are against the teacher in PyTorch fp32 on the same device, in this run. "
              "Tokenization is not in the model timings; add it for end-to-end latency."]
    compute = summary.get("compute")
    if compute:
        text = (f"Fastest fp32 student path: {compute['row']} at {compute['gflops_per_s']:.0f} GFLOP/s "
                f"(FLOPs counted from the model shape and the padded batches; "
                f"{compute['useful_token_share']:.0%} of the tokens are real, the rest padding)")
        if compute.get("peak_gflops_per_s"):
            text += (f" = {compute['fraction_of_peak']:.0%} of this CPU's fp32 rate on a "
                     f"{summary['cpu_fp32_peak']['matrix']}² matrix product "
                     f"({compute['peak_gflops_per_s']:.0f} GFLOP/s)")
        lines += ["", text + "."]
    if summary["skipped"]:
        lines += ["", "Skipped on this machine:"]
        reasons: dict[str, list[str]] = {}
        for row, reason in summary["skipped"].items():
            reasons.setdefault(reason, []).append(row)
        lines += [f"- {', '.join(rows)}: {reason}" for reason, rows in reasons.items()]
    return "\n".join(lines) + "\n"
