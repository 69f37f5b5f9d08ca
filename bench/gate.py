"""`kd bench-check`: the regression gate of a bench run against a committed baseline (bench/baseline.py finds it).

Gated: accuracy and macro-F1 of every row (absolute drop in points) and, against a baseline of the same CPU, every
within-run speed ratio (relative drop). Absolute times depend on the machine, so they are shown, not gated; so are
the speed ratios of another CPU's baseline, which depend on its instruction set."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from bench.baseline import Found, baseline_file, find_baseline, ratios_by_key, rows_by_id
from bench.records import LATENCY, Baseline, BaselineRow, BenchSummary, GateConfig, Ratio, SummaryRow
from kd.errors import KdError
from kd.runfolder import RunFolder


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


def read_summary(run_dir: Path) -> BenchSummary:
    path = RunFolder(Path(run_dir)).bench_summary
    if not path.is_file():
        raise KdError(f"{path}: missing; run `make bench` (RUN={run_dir}) first")
    return BenchSummary.read(path)


def compare(summary: BenchSummary, baseline: Baseline, gate: GateConfig, speed: bool = True) -> list[Check]:
    """Every gated quantity with its baseline, value now and limit. `speed` False (another CPU's baseline): the
    speed ratios are shown, not gated."""
    checks = []
    now_rows = rows_by_id(summary)
    for row_id, base in baseline.rows.items():
        now = now_rows.get(row_id)
        if now is None or now.accuracy is None:
            # another CPU may lack what a row needs (bf16 on a CPU without it): skipped with its reason, it is not
            # gated; on the baseline's own CPU a row that went missing is a regression
            skipped = row_id in summary.skipped and not speed
            checks.append(Check("missing", f"{row_id}: accuracy", base=100 * base.accuracy, now=None,
                                change=summary.skipped.get(row_id, "not measured"),
                                limit="not gated: skipped on this CPU" if skipped else "present",
                                floor=None, ok=skipped, gated=not skipped, row=row_id))
            continue
        for key, label in (("accuracy", "accuracy"), ("f1_macro", "macro-F1")):
            was, is_ = getattr(base, key), getattr(now, key)
            drop = 100 * (was - is_)
            checks.append(Check("accuracy", f"{row_id}: {label} (%)", base=100 * was, now=100 * is_,
                                change=f"{-drop:+.2f} pt", limit=f"-{gate.max_accuracy_drop_pt:g} pt",
                                floor=100 * was - gate.max_accuracy_drop_pt,
                                ok=drop <= gate.max_accuracy_drop_pt + 1e-9, row=row_id))
    now_ratios = ratios_by_key(summary)
    for base in baseline.ratios:
        now = now_ratios[base.key].value if base.key in now_ratios else None
        change = "–" if now is None else f"{now / base.value - 1:+.0%}"
        shown = None if speed else "not gated: another CPU's baseline"
        if shown is None and now is not None and under_latency_floor(base, now_rows, baseline.rows,
                                                                     gate.latency_floor_ms):
            shown = f"not gated: both rows under {gate.latency_floor_ms:g} ms"
        if shown:
            checks.append(Check("ratio", f"{base.name} (×)", base=base.value, now=now, change=change, limit=shown,
                                floor=None, ok=True, gated=False, ratio=base))
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


def under_latency_floor(ratio: Ratio, now_rows: dict[str, SummaryRow], base_rows: dict[str, BaselineRow],
                        floor_ms: float) -> bool:
    """True for a batch-1 latency ratio whose two rows are both faster than floor_ms, now and in the baseline."""
    if ratio.what != LATENCY:
        return False
    times = [getattr(rows.get(r), "p50_ms", None) for r in (ratio.fast, ratio.slow) for rows in (now_rows, base_rows)]
    return all(t is not None and t < floor_ms for t in times)


def absolute_changes(summary: BenchSummary, baseline: Baseline) -> list[str]:
    """Machine-dependent figures, for reading only."""
    lines = []
    now_rows = rows_by_id(summary)
    for row_id, base in baseline.rows.items():
        now = now_rows.get(row_id)
        if now and base.samples_per_s and now.samples_per_s and base.p50_ms and now.p50_ms:
            lines.append(f"- {row_id}: {base.samples_per_s:.0f} → {now.samples_per_s:.0f} samples/s, "
                         f"b1 p50 {base.p50_ms:.2f} → {now.p50_ms:.2f} ms")
    return lines


def speed_only(failures: list[Check]) -> bool:
    """True when every failure is a speed ratio: those are what noise can cause; accuracy and missing rows are
    deterministic and would only fail again."""
    return bool(failures) and all(f.kind == "ratio" for f in failures)


def best_ratios(summaries: list[BenchSummary]) -> BenchSummary:
    """The last summary with each speed ratio at the best value any of the bench runs measured: a ratio then
    fails only when it failed every time, as a real regression does."""
    by_key = [ratios_by_key(s) for s in summaries]
    return replace(summaries[-1], ratios=[
        replace(r, value=max(ratios[r.key].value for ratios in by_key if r.key in ratios))
        for r in summaries[-1].ratios])


def bench_again(run_dir: Path, summary: BenchSummary) -> BenchSummary:
    """The same bench as the summary's (its settings), run again on the run folder; returns the new summary."""
    from bench.config import BenchConfig
    from bench.run import bench_summary

    cfg = BenchConfig.from_dict(summary.config)
    cfg.run_dir = Path(run_dir)
    return bench_summary(cfg, "the speed regression is not confirmed either way")


def gate_for(baseline: Baseline, overrides: dict | None = None) -> GateConfig:
    """The limits: GateConfig's defaults, then the baseline's own (a preset whose ratios swing more between
    sessions says so next to its numbers), then the command line's (None: not given)."""
    known = {f.name for f in fields(GateConfig)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise KdError(f"{unknown[0]} is not a gate limit (known: {', '.join(sorted(known))})")
    return replace(baseline.gate or GateConfig(), **given)


def other_cpu_line(found: Found, summary: BenchSummary) -> str:
    """One line: whose baseline this is, that only accuracy is gated, and how to record this CPU's."""
    return (f"kd: bench-check: {found.path} is the baseline of {found.baseline.machine.cpu.describe()}; this bench "
            f"ran on {summary.machine.cpu.describe()}, so only accuracy and macro-F1 are gated (speed ratios depend "
            f"on the CPU); record this CPU's baseline with `make bench-baseline PRESET={summary.preset}` "
            f"(it writes {baseline_file(summary)})")


def check(run_dir: Path, baseline_path: Path | None = None, overrides: dict | None = None, confirm: int = 0,
          rebench=bench_again) -> int:
    """The gate; speed ratios that fail are benched again up to `confirm` times (see best_ratios)."""
    summary = read_summary(run_dir)
    found = find_baseline(summary, baseline_path)
    path, baseline = found.path, found.baseline
    if baseline.settings != summary.settings:
        differ = [f.name for f in fields(baseline.settings)
                  if getattr(baseline.settings, f.name) != getattr(summary.settings, f.name)]
        raise KdError(f"{path}: recorded with {', '.join(f'{k}={getattr(baseline.settings, k)}' for k in differ)}, "
                      f"this bench used {', '.join(f'{k}={getattr(summary.settings, k)}' for k in differ)}; bench "
                      "with the same settings or record a new baseline")
    gate = gate_for(baseline, overrides)
    if not found.same_cpu:  # said first: nothing is benched again for ratios that are not gated
        print(other_cpu_line(found, summary), flush=True)
    summaries = [summary]
    checks = compare(summary, baseline, gate, found.same_cpu)
    while speed_only(failures_of(checks)) and len(summaries) <= confirm:
        failures = failures_of(checks)
        print(f"kd: bench-check: {len(failures)} speed ratio(s) below the limit "
              f"({'; '.join(f.ratio.name for f in failures)}); benching again to "
              f"confirm ({len(summaries)} of {confirm})", flush=True)
        summaries.append(rebench(run_dir, summary))
        checks = compare(best_ratios(summaries), baseline, gate)
    failures = failures_of(checks)
    print(f"kd: bench-check of {run_dir} against {path} (recorded {baseline.recorded}; limits: accuracy "
          f"-{gate.max_accuracy_drop_pt:g} pt, "
          + (f"ratios -{gate.max_ratio_drop:.0%})" if found.same_cpu else "ratios not gated: another CPU)")
          + (f"; speed ratios: the best of {len(summaries)} bench runs" if len(summaries) > 1 else "") + "\n")
    print("\n".join(table(checks)))
    print(f"\nAbsolute figures ({'same CPU as the baseline' if found.same_cpu else 'another CPU'}; not gated):")
    print("\n".join(absolute_changes(summaries[-1], baseline)))
    if failures:
        print(f"\nkd: bench-check FAILED: {len(failures)} regression(s):")
        print("\n".join(f"- {f.message()}" for f in failures))
        return 1
    print(f"\nkd: bench-check passed ({sum(c.gated and c.ok for c in checks)} checks"
          + ("" if found.same_cpu else ", accuracy only: another CPU's baseline") + ")")
    return 0
