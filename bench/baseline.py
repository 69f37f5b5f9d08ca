"""`kd bench-baseline`, and which baseline `kd bench-check` holds a bench against.

A baseline holds for one preset, device and CPU: its speed ratios depend on the instruction set (VNNI, AMX, ...),
so it records the CPU identity it was measured on (engines/cpu.py, the identity the int8 choice uses) and its file
is named after it: bench/baselines/<preset>-<device>-<cpu slug>.json. Baselines of several CPUs sit side by side;
the gate takes this CPU's, else another's for accuracy only (bench/gate.py)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from bench.records import Baseline, BaselineRow, BenchSummary, Ratio, SummaryRow
from kd.errors import KdError

BASELINES = Path(__file__).resolve().parent / "baselines"


def baseline_file(summary: BenchSummary, folder: Path = BASELINES) -> Path:
    """Where the baseline of this summary's preset, device and CPU is (or is to be) kept."""
    return folder / f"{summary.preset}-{summary.device}-{summary.machine.cpu.slug}.json"


@dataclass(frozen=True)
class Found:
    """The baseline a bench is held against; `same_cpu` False: another CPU's, whose speed ratios do not hold."""

    path: Path
    baseline: Baseline
    same_cpu: bool


def find_baseline(summary: BenchSummary, path: Path | None = None, folder: Path = BASELINES) -> Found:
    """`path` when given; else this CPU's baseline of the summary's preset and device; else another CPU's (the
    first by name). A KdError naming the command that records one when there is none."""
    own = baseline_file(summary, folder)
    record = f"record one with `make bench-baseline PRESET={summary.preset}` (it writes {own})"
    if path is None:
        others = sorted(folder.glob(f"{summary.preset}-{summary.device}-*.json"))
        path = own if own.is_file() else next(iter(others), None)
        if path is None:
            raise KdError(f"{folder}: no {summary.preset}-{summary.device} baseline of any CPU; {record}")
    path = Path(path)
    if not path.is_file():
        raise KdError(f"{path}: no such baseline; {record}")
    baseline = Baseline.read(path)
    return Found(path, baseline, baseline.machine.cpu.same_cpu(summary.machine.cpu))


def rows_by_id(summary: BenchSummary) -> dict[str, SummaryRow]:
    return {r.row: r for r in summary.rows}


def ratios_by_key(summary: BenchSummary) -> dict[tuple[str, str, str], Ratio]:
    return {r.key: r for r in summary.ratios}


def baseline_of(summaries: list[BenchSummary]) -> Baseline:
    """A baseline from one or more bench runs of the same run folder: per row the lowest accuracy and F1 and per
    ratio the lowest value seen, so the gate's tolerance is counted from the worst ordinary run, not a lucky one;
    absolute figures (informative only) are medians."""
    first = summaries[0]
    by_id = [rows_by_id(s) for s in summaries]
    row_ids = [r.row for r in first.rows if r.accuracy is not None and all(r.row in rows for rows in by_id)]

    def median(row_id: str, key: str) -> float | None:
        values = [getattr(rows[row_id], key) for rows in by_id]
        return None if None in values else float(statistics.median(values))

    by_key = [ratios_by_key(s) for s in summaries]
    return Baseline(
        preset=first.preset, recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        bench_runs=len(summaries), settings=first.settings, machine=first.machine, versions=first.versions,
        rows={r: BaselineRow(min(rows[r].accuracy for rows in by_id), min(rows[r].f1_macro for rows in by_id),
                             median(r, "samples_per_s"), median(r, "p50_ms")) for r in row_ids},
        ratios=[replace(r, value=min(ratios[r.key].value for ratios in by_key))
                for r in first.ratios if all(r.key in ratios for ratios in by_key)])


def record_baseline(summaries: list[BenchSummary], path: Path | None = None) -> Path:
    path = Path(path) if path else baseline_file(summaries[0])
    baseline = baseline_of(summaries)
    if path.is_file():  # a re-recorded baseline keeps the limits chosen for it
        try:
            baseline.gate = Baseline.read(path).gate
        except KdError:
            pass  # an older or broken file: replaced whole
    baseline.write(path)
    print(f"kd: baseline written to {path} ({len(baseline.rows)} rows, {len(baseline.ratios)} ratios, "
          f"lowest of {len(summaries)} bench run(s), CPU {baseline.machine.cpu.describe()})")
    return path
