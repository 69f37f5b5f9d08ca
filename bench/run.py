"""`kd bench`: run the pytest-benchmark suite on a run folder, then write runs/<name>/bench/{pytest-benchmark.json,
summary.json, summary.md, pareto.png} and print the summary table."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from bench.config import BenchConfig, SuitePlugin
from bench.records import BenchSummary
from bench.workload import Workload
from kd.atomic import write_bytes, write_text
from kd.errors import KdError
from kd.runfolder import RunFolder

SUITE = Path(__file__).resolve().parent


def pytest_args(json_path: Path) -> list[str]:
    """How pytest runs the suite; what it measures comes with the BenchConfig (SuitePlugin), not from here."""
    # no cache (the image's /app is read-only to its user); no warning that pytest cannot rewrite anyio
    # (kd imported it before pytest started: a fact of in-process runs, not a problem)
    return [str(SUITE), "-q", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning",
            f"--benchmark-json={json_path}", "--benchmark-disable-gc", "--benchmark-sort=fullname",
            "--benchmark-columns=min,median,max,rounds"]


@contextmanager
def own_session():
    """The suite as a pytest session of its own, even when kd runs inside a pytest-xdist worker (a test suite's,
    ours included): pytest-benchmark disables every benchmark when it sees $PYTEST_XDIST_WORKER."""
    worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
    try:
        yield
    finally:
        if worker is not None:
            os.environ["PYTEST_XDIST_WORKER"] = worker


def check_run(cfg: BenchConfig) -> tuple[RunFolder, Workload]:
    """The run folder and the bench's workload, with a clear error before pytest starts for a folder without
    models, data that is not the run's own, or more --bench-samples than test rows."""
    cfg.check()
    run = RunFolder(Path(cfg.run_dir))
    run.trained_models()
    return run, Workload.load(cfg)


def bench(cfg: BenchConfig) -> int:
    import pytest

    from bench.plot import pareto_png
    from bench.render import render
    from bench.summary import build_summary

    run, workload = check_run(cfg)
    out = run.bench_dir
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".pytest-benchmark.json.partial"
    partial.unlink(missing_ok=True)
    with own_session():
        code = int(pytest.main(pytest_args(partial), plugins=[SuitePlugin(cfg, workload)]))
    if not partial.is_file():
        raise KdError(f"bench on {run.root}: the suite measured nothing (pytest exit code {code})")
    raw = partial.read_bytes()
    write_bytes(out / "pytest-benchmark.json", raw)  # only a finished suite replaces the last one (fsynced)
    partial.unlink()
    summary = build_summary(json.loads(raw))
    summary.write(out / "summary.json")
    md = render(summary)
    write_text(out / "summary.md", md)
    write_bytes(out / "pareto.png", pareto_png(summary))
    print("\n" + md + f"\nkd: bench results in {out}/ (summary.md, summary.json, pareto.png, pytest-benchmark.json)")
    if code:
        print(f"kd: some bench tests failed (pytest exit code {code}); the summary holds the rows that ran")
    return code


def bench_summary(cfg: BenchConfig, failed: str) -> BenchSummary:
    """bench(cfg) for a caller that needs every row (a baseline, a confirmation): the new summary, or a clear
    error (`failed` says what is not done) when any bench test failed."""
    code = bench(cfg)
    if code:
        raise KdError(f"bench on {cfg.run_dir}: some bench tests failed (pytest exit code {code}); {failed}")
    return BenchSummary.read(RunFolder(Path(cfg.run_dir)).bench_summary)
