"""`kd bench-check` and `kd bench-baseline`: the regression gate of a bench run against a committed baseline.

Gated: accuracy and macro-F1 of every row (absolute drop in points) and every within-run speed ratio (relative
drop). Absolute times depend on the machine, so they are shown, not gated."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from kd.errors import KdError
from kd.runfolder import RunFolder, write_json

BASELINES = Path(__file__).resolve().parent / "baselines"
# what must match for two bench runs to be comparable at all
COMPARABLE = ("samples", "batch_size", "order")


@dataclass
class GateConfig:
    max_accuracy_drop_pt: float = 1.0  # accuracy and macro-F1, in points
    max_ratio_drop: float = 0.25  # a within-run speed ratio may fall this share below the baseline's
    # Batch-1 latency ratios between two rows that both answer in under this many ms (every row of the smoke
    # preset: 0.2-2.3 ms) are shown, not gated: such a call is mostly per-call overhead, which swings between
    # sessions (the smoke teacher's PyTorch b1 p50: 1.34, 1.82 and 2.26 ms in three of them, its ONNX Runtime
    # ratio by 25-35 %). The cpu preset's rows (2.1-14 ms) stay gated, and so does a row that becomes slow.
    latency_floor_ms: float = 2.5


def read_summary(run_dir: Path) -> dict:
    path = RunFolder(Path(run_dir)).bench_summary
    if not path.is_file():
        raise KdError(f"{path}: missing; run `make bench` (RUN={run_dir}) first")
    return json.loads(path.read_text())


def default_baseline(summary: dict) -> Path:
    device = "cuda" if any(r["device"] == "cuda" for r in summary["rows"]) else (
        "mps" if any(r["device"] == "mps" for r in summary["rows"]) else "cpu")
    return BASELINES / f"{summary.get('preset')}-{device}.json"


def settings(summary: dict) -> dict:
    rows = summary["rows"]
    samples = rows[0].get("samples") if rows else None
    return {"samples": samples, "batch_size": summary["config"].get("batch_size"),
            "order": summary["config"].get("order")}


def baseline_of(summaries: list[dict]) -> dict:
    """A baseline from one or more bench runs of the same run folder: per row the lowest accuracy and F1 and per
    ratio the lowest value seen, so the gate's tolerance is counted from the worst ordinary run, not a lucky one;
    absolute figures (informative only) are medians."""
    first = summaries[0]
    row_ids = [r["row"] for r in first["rows"] if all(r["row"] in rows_by_id(s) for s in summaries)]

    def lowest(row_id: str, key: str) -> float:
        return min(rows_by_id(s)[row_id][key] for s in summaries)

    def median(row_id: str, key: str) -> float:
        return float(statistics.median(rows_by_id(s)[row_id][key] for s in summaries))

    return {
        "preset": first.get("preset"), "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bench_runs": len(summaries), "settings": settings(first), "machine": first.get("machine"),
        "versions": first.get("versions"),
        "rows": {r: {"accuracy": lowest(r, "accuracy"), "f1_macro": lowest(r, "f1_macro"),
                     "samples_per_s": median(r, "samples_per_s"), "p50_ms": median(r, "p50_ms")} for r in row_ids},
        "ratios": {name: min(s["ratios"][name] for s in summaries) for name in first["ratios"]
                   if all(name in s["ratios"] for s in summaries)},
    }


def rows_by_id(summary: dict) -> dict[str, dict]:
    return {r["row"]: r for r in summary["rows"]}


def record_baseline(summaries: list[dict], path: Path | None = None) -> Path:
    path = Path(path) if path else default_baseline(summaries[0])
    baseline = baseline_of(summaries)
    if path.is_file():  # a re-recorded baseline keeps the limits chosen for it
        try:
            gate = json.loads(path.read_text()).get("gate")
        except ValueError:
            gate = None
        if gate:
            baseline["gate"] = gate
    write_json(path, baseline)
    print(f"kd: baseline written to {path} ({len(baseline['rows'])} rows, {len(baseline['ratios'])} ratios, "
          f"lowest of {len(summaries)} bench run(s))")
    return path


def compare(summary: dict, baseline: dict, gate: GateConfig) -> tuple[list[str], list[str]]:
    """(table lines, failures): every gated quantity with its baseline, value now and limit."""
    lines = ["| what | baseline | now | change | limit | |", "|---|---|---|---|---|---|"]
    failures = []
    now_rows = rows_by_id(summary)

    def add(what: str, base: float, now: float | None, change: str, limit: str, ok: bool) -> None:
        lines.append(f"| {what} | {base:.4g} | {'missing' if now is None else f'{now:.4g}'} | {change} | {limit} | "
                     f"{'ok' if ok else '**FAIL**'} |")
        if not ok:
            state = f"missing now ({change})" if now is None else f"{now:.4g} now ({change}, limit {limit})"
            failures.append(f"{what}: {base:.4g} in the baseline, {state}")

    for row_id, base in baseline["rows"].items():
        now = now_rows.get(row_id)
        if now is None:
            reason = summary.get("skipped", {}).get(row_id, "not measured")
            add(f"{row_id}: accuracy", 100 * base["accuracy"], None, reason, "present", False)
            continue
        for key, label in (("accuracy", "accuracy"), ("f1_macro", "macro-F1")):
            drop = 100 * (base[key] - now[key])
            add(f"{row_id}: {label} (%)", 100 * base[key], 100 * now[key], f"{-drop:+.2f} pt",
                f"-{gate.max_accuracy_drop_pt:g} pt", drop <= gate.max_accuracy_drop_pt + 1e-9)
    for name, base in baseline["ratios"].items():
        now = summary["ratios"].get(name)
        change = "–" if now is None else f"{now / base - 1:+.0%}"
        if now is not None and under_latency_floor(name, now_rows, baseline["rows"], gate.latency_floor_ms):
            lines.append(f"| {name} (×) | {base:.4g} | {now:.4g} | {change} | not gated: both rows under "
                         f"{gate.latency_floor_ms:g} ms | |")
            continue
        add(f"{name} (×)", base, now, change, f"-{gate.max_ratio_drop:.0%}",
            now is not None and now >= base * (1 - gate.max_ratio_drop) - 1e-12)
    return lines, failures


def under_latency_floor(ratio: str, now_rows: dict, base_rows: dict, floor_ms: float) -> bool:
    """True for a batch-1 latency ratio whose two rows are both faster than floor_ms, now and in the baseline."""
    if "b1 p50 latency" not in ratio:
        return False
    pair = ratio.split(":")[0].split(" vs ")
    times = [rows.get(r, {}).get("p50_ms") for r in pair for rows in (now_rows, base_rows)]
    return len(pair) == 2 and all(t is not None and t < floor_ms for t in times)


def absolute_changes(summary: dict, baseline: dict) -> list[str]:
    """Machine-dependent figures, for reading only."""
    lines = []
    now_rows = rows_by_id(summary)
    for row_id, base in baseline["rows"].items():
        now = now_rows.get(row_id)
        if now and base.get("samples_per_s") and now.get("samples_per_s"):
            lines.append(f"- {row_id}: {base['samples_per_s']:.0f} → {now['samples_per_s']:.0f} samples/s, "
                         f"b1 p50 {base['p50_ms']:.2f} → {now['p50_ms']:.2f} ms")
    return lines


def speed_only(failures: list[str]) -> bool:
    """True when every failure is a speed ratio (named "... (×)"): those are what noise can cause; accuracy
    and missing rows are deterministic and would only fail again."""
    return bool(failures) and all(" (×): " in f for f in failures)


def best_ratios(summaries: list[dict]) -> dict:
    """The last summary with each speed ratio at the best value any of the bench runs measured: a ratio then
    fails only when it failed every time, as a real regression does."""
    last = summaries[-1]
    return {**last, "ratios": {name: max(s["ratios"][name] for s in summaries if name in s["ratios"])
                               for name in last["ratios"]}}


def bench_again(run_dir: Path, summary: dict) -> dict:
    """The same bench as the summary's (its settings), run again on the run folder; returns the new summary."""
    from bench.config import BenchConfig
    from bench.run import bench_summary

    known = {f.name for f in fields(BenchConfig)}
    cfg = BenchConfig(**{k: v for k, v in summary["config"].items() if k in known})
    cfg.run_dir = Path(run_dir)
    return bench_summary(cfg, "the speed regression is not confirmed either way")


def gate_for(baseline: dict, path: Path, overrides: dict | None = None) -> GateConfig:
    """The limits: GateConfig's defaults, then the baseline's own "gate" section (a preset whose ratios swing
    more between sessions says so next to its numbers), then the command line's (None: not given)."""
    limits = {**(baseline.get("gate") or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    limits.pop("why", None)  # the reason for the baseline's limits, for its readers
    known = {f.name for f in fields(GateConfig)}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise KdError(f"{path}: gate.{unknown[0]} is not a gate limit (known: {', '.join(sorted(known))})")
    return GateConfig(**limits)


def check(run_dir: Path, baseline_path: Path | None = None, overrides: dict | None = None, confirm: int = 0,
          rebench=bench_again) -> int:
    """The gate; speed ratios that fail are benched again up to `confirm` times (see best_ratios)."""
    summary = read_summary(run_dir)
    path = Path(baseline_path) if baseline_path else default_baseline(summary)
    if not path.is_file():
        raise KdError(f"{path}: no such baseline; record one with `make bench-baseline` (RUN={run_dir})")
    try:
        baseline = json.loads(path.read_text())
        base_settings = baseline["settings"]
        baseline["rows"], baseline["ratios"]
    except (ValueError, KeyError) as exc:
        raise KdError(f"{path}: not a bench baseline ({exc}); record one with `make bench-baseline`") from None
    ours = settings(summary)
    differ = [k for k in COMPARABLE if base_settings.get(k) != ours.get(k)]
    if differ:
        raise KdError(f"{path}: recorded with {', '.join(f'{k}={base_settings.get(k)}' for k in differ)}, this "
                      f"bench used {', '.join(f'{k}={ours.get(k)}' for k in differ)}; bench with the same settings "
                      "or record a new baseline")
    gate = gate_for(baseline, path, overrides)
    summaries = [summary]
    lines, failures = compare(summary, baseline, gate)
    while speed_only(failures) and len(summaries) <= confirm:
        print(f"kd: bench-check: {len(failures)} speed ratio(s) below the limit "
              f"({'; '.join(f.split(' (×)')[0] for f in failures)}); benching again to "
              f"confirm ({len(summaries)} of {confirm})", flush=True)
        summaries.append(rebench(run_dir, summary))
        lines, failures = compare(best_ratios(summaries), baseline, gate)
    same_machine = baseline.get("machine", {}).get("cpu") == summary.get("machine", {}).get("cpu")
    print(f"kd: bench-check of {run_dir} against {path} (recorded {baseline.get('recorded')}; limits: accuracy "
          f"-{gate.max_accuracy_drop_pt:g} pt, ratios -{gate.max_ratio_drop:.0%})"
          + (f"; speed ratios: the best of {len(summaries)} bench runs" if len(summaries) > 1 else "") + "\n")
    print("\n".join(lines))
    print(f"\nAbsolute figures ({'same CPU model as the baseline' if same_machine else 'another machine'}; "
          "not gated):")
    print("\n".join(absolute_changes(summaries[-1], baseline)))
    if failures:
        print(f"\nkd: bench-check FAILED: {len(failures)} regression(s):")
        print("\n".join(f"- {f}" for f in failures))
        return 1
    print(f"\nkd: bench-check passed ({sum(line.endswith('| ok |') for line in lines)} checks)")
    return 0
