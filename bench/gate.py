"""`kd bench-check` and `kd bench-baseline`: the regression gate of a bench run against a committed baseline.

Gated: accuracy and macro-F1 of every row (absolute drop in points) and every within-run speed ratio (relative
drop). Absolute times depend on the machine, so they are shown, not gated."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from bench.summary import LATENCY, SUMMARY_FORMAT, Ratio, read_ratios
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
    # preset) are shown, not gated: such a call is mostly per-call overhead, which swings between sessions by more
    # than the gate allows (docs/bench.md). The cpu preset's rows stay gated, and so does a row that becomes slow.
    latency_floor_ms: float = 2.5


@dataclass(frozen=True)
class Check:
    """One gated quantity of bench-check. kind: "accuracy" (a row's accuracy or macro-F1, in %), "ratio" (a
    within-run speed ratio, ×; `now` None when this bench lacks it) or "missing" (a baseline row this bench did not
    measure; `change` says why). `floor` is the lowest value that passes (None: nothing passes but being there)."""

    kind: Literal["accuracy", "ratio", "missing"]
    what: str  # as the table and the failures name it, e.g. "<row>: macro-F1 (%)", "<ratio name> (×)"
    base: float
    now: float | None
    change: str  # "+0.10 pt", "-3%", or why a row is missing
    limit: str  # the limit as shown: "-1 pt", "-25%", "present", or why the ratio is not gated
    floor: float | None
    ok: bool
    gated: bool = True
    row: str | None = None  # accuracy and missing: the row
    ratio: Ratio | None = None  # ratio: the baseline's ratio

    @property
    def failed(self) -> bool:
        return self.gated and not self.ok

    def line(self) -> str:
        """The check's row of the printed table."""
        now = "missing" if self.now is None else f"{self.now:.4g}"
        verdict = (" ok |" if self.ok else " **FAIL** |") if self.gated else " |"
        return f"| {self.what} | {self.base:.4g} | {now} | {self.change} | {self.limit} |{verdict}"

    def message(self) -> str:
        """A failure as the gate reports it."""
        state = (f"missing now ({self.change})" if self.now is None
                 else f"{self.now:.4g} now ({self.change}, limit {self.limit})")
        return f"{self.what}: {self.base:.4g} in the baseline, {state}"


def read_summary(run_dir: Path) -> dict:
    path = RunFolder(Path(run_dir)).bench_summary
    if not path.is_file():
        raise KdError(f"{path}: missing; run `make bench` (RUN={run_dir}) first")
    try:
        summary = json.loads(path.read_text())
        found = summary.get("format")
        if found != SUMMARY_FORMAT:
            raise ValueError(f"format {found}, this kd-bench reads format {SUMMARY_FORMAT}")
        read_ratios(summary["ratios"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise KdError(f"{path}: not a bench summary this kd-bench reads ({exc}); run `make bench` (RUN={run_dir}) "
                      "again") from None
    return summary


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

    by_key = [ratios_by_key(s) for s in summaries]
    return {
        "preset": first.get("preset"), "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bench_runs": len(summaries), "settings": settings(first), "machine": first.get("machine"),
        "versions": first.get("versions"),
        "rows": {r: {"accuracy": lowest(r, "accuracy"), "f1_macro": lowest(r, "f1_macro"),
                     "samples_per_s": median(r, "samples_per_s"), "p50_ms": median(r, "p50_ms")} for r in row_ids},
        "ratios": [replace(r, value=min(ratios[r.key].value for ratios in by_key)).to_json()
                   for r in read_ratios(first["ratios"]) if all(r.key in ratios for ratios in by_key)],
    }


def rows_by_id(summary: dict) -> dict[str, dict]:
    return {r["row"]: r for r in summary["rows"]}


def ratios_by_key(summary: dict) -> dict[tuple[str, str, str], Ratio]:
    return {r.key: r for r in read_ratios(summary["ratios"])}


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


def compare(summary: dict, baseline: dict, gate: GateConfig) -> list[Check]:
    """Every gated quantity with its baseline, value now and limit (the summary's and the baseline's ratios as
    read_ratios reads them)."""
    checks = []
    now_rows = rows_by_id(summary)
    for row_id, base in baseline["rows"].items():
        now = now_rows.get(row_id)
        if now is None:
            checks.append(Check("missing", f"{row_id}: accuracy", base=100 * base["accuracy"], now=None,
                                change=summary.get("skipped", {}).get(row_id, "not measured"), limit="present",
                                floor=None, ok=False, row=row_id))
            continue
        for key, label in (("accuracy", "accuracy"), ("f1_macro", "macro-F1")):
            drop = 100 * (base[key] - now[key])
            checks.append(Check("accuracy", f"{row_id}: {label} (%)", base=100 * base[key], now=100 * now[key],
                                change=f"{-drop:+.2f} pt", limit=f"-{gate.max_accuracy_drop_pt:g} pt",
                                floor=100 * base[key] - gate.max_accuracy_drop_pt,
                                ok=drop <= gate.max_accuracy_drop_pt + 1e-9, row=row_id))
    now_ratios = ratios_by_key(summary)
    for base in read_ratios(baseline["ratios"]):
        now = now_ratios[base.key].value if base.key in now_ratios else None
        change = "–" if now is None else f"{now / base.value - 1:+.0%}"
        if now is not None and under_latency_floor(base, now_rows, baseline["rows"], gate.latency_floor_ms):
            checks.append(Check("ratio", f"{base.name} (×)", base=base.value, now=now, change=change,
                                limit=f"not gated: both rows under {gate.latency_floor_ms:g} ms", floor=None,
                                ok=True, gated=False, ratio=base))
            continue
        floor = base.value * (1 - gate.max_ratio_drop)
        checks.append(Check("ratio", f"{base.name} (×)", base=base.value, now=now, change=change,
                            limit=f"-{gate.max_ratio_drop:.0%}", floor=floor,
                            ok=now is not None and now >= floor - 1e-12, ratio=base))
    return checks


def table(checks: list[Check]) -> list[str]:
    return ["| what | baseline | now | change | limit | |", "|---|---|---|---|---|---|", *(c.line() for c in checks)]


def failures_of(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.failed]


def under_latency_floor(ratio: Ratio, now_rows: dict, base_rows: dict, floor_ms: float) -> bool:
    """True for a batch-1 latency ratio whose two rows are both faster than floor_ms, now and in the baseline."""
    if ratio.what != LATENCY:
        return False
    times = [rows.get(r, {}).get("p50_ms") for r in (ratio.fast, ratio.slow) for rows in (now_rows, base_rows)]
    return all(t is not None and t < floor_ms for t in times)


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


def speed_only(failures: list[Check]) -> bool:
    """True when every failure is a speed ratio: those are what noise can cause; accuracy and missing rows are
    deterministic and would only fail again."""
    return bool(failures) and all(f.kind == "ratio" for f in failures)


def best_ratios(summaries: list[dict]) -> dict:
    """The last summary with each speed ratio at the best value any of the bench runs measured: a ratio then
    fails only when it failed every time, as a real regression does."""
    by_key = [ratios_by_key(s) for s in summaries]
    return {**summaries[-1], "ratios": [
        replace(r, value=max(ratios[r.key].value for ratios in by_key if r.key in ratios)).to_json()
        for r in read_ratios(summaries[-1]["ratios"])]}


def bench_again(run_dir: Path, summary: dict) -> dict:
    """The same bench as the summary's (its settings), run again on the run folder; returns the new summary."""
    from bench.config import BenchConfig
    from bench.run import bench_summary

    cfg = BenchConfig.from_dict(summary["config"])
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
        baseline["rows"], read_ratios(baseline["ratios"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KdError(f"{path}: not a bench baseline ({exc}); record one with `make bench-baseline`") from None
    ours = settings(summary)
    differ = [k for k in COMPARABLE if base_settings.get(k) != ours.get(k)]
    if differ:
        raise KdError(f"{path}: recorded with {', '.join(f'{k}={base_settings.get(k)}' for k in differ)}, this "
                      f"bench used {', '.join(f'{k}={ours.get(k)}' for k in differ)}; bench with the same settings "
                      "or record a new baseline")
    gate = gate_for(baseline, path, overrides)
    summaries = [summary]
    checks = compare(summary, baseline, gate)
    while speed_only(failures_of(checks)) and len(summaries) <= confirm:
        failures = failures_of(checks)
        print(f"kd: bench-check: {len(failures)} speed ratio(s) below the limit "
              f"({'; '.join(f.ratio.name for f in failures)}); benching again to "
              f"confirm ({len(summaries)} of {confirm})", flush=True)
        summaries.append(rebench(run_dir, summary))
        checks = compare(best_ratios(summaries), baseline, gate)
    failures = failures_of(checks)
    same_machine = baseline.get("machine", {}).get("cpu") == summary.get("machine", {}).get("cpu")
    print(f"kd: bench-check of {run_dir} against {path} (recorded {baseline.get('recorded')}; limits: accuracy "
          f"-{gate.max_accuracy_drop_pt:g} pt, ratios -{gate.max_ratio_drop:.0%})"
          + (f"; speed ratios: the best of {len(summaries)} bench runs" if len(summaries) > 1 else "") + "\n")
    print("\n".join(table(checks)))
    print(f"\nAbsolute figures ({'same CPU model as the baseline' if same_machine else 'another machine'}; "
          "not gated):")
    print("\n".join(absolute_changes(summaries[-1], baseline)))
    if failures:
        print(f"\nkd: bench-check FAILED: {len(failures)} regression(s):")
        print("\n".join(f"- {f.message()}" for f in failures))
        return 1
    print(f"\nkd: bench-check passed ({sum(c.gated and c.ok for c in checks)} checks)")
    return 0
