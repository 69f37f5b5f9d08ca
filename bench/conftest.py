"""Options, fixtures and reporting of the bench suite (`kd bench` / `make bench` run it; plain
`pytest bench --run-dir runs/cpu` works too)."""

from __future__ import annotations

import os
import platform
import time

import pytest

from bench.backends import Row, load, missing, rows_for
from bench.config import BenchConfig, SuitePlugin, add_arguments
from bench.figures import Skip, SuiteMeta
from bench.records import Machine
from bench.workload import RowState, Workload
from engines.cpu import this_cpu_identity
from kd.device import cpu_count
from kd.manifest import installed_versions
from kd.runfolder import RunFolder
from kd.typed import to_data

SKIPPED: list[Skip] = []
CONFIG = pytest.StashKey[BenchConfig]()


def pytest_addoption(parser):
    add_arguments(parser.getgroup("kd-bench", "kd-bench: what to measure (bench/config.py)").addoption)


def bench_config(config) -> BenchConfig:
    """The settings `kd bench` handed over (SuitePlugin), else those of this pytest command line."""
    if CONFIG not in config.stash:
        handed = [p.cfg for p in config.pluginmanager.get_plugins() if isinstance(p, SuitePlugin)]
        config.stash[CONFIG] = handed[0] if handed else BenchConfig.from_args(config.option)
        config.stash[CONFIG].check()
    return config.stash[CONFIG]


def pytest_configure(config):
    import torch

    torch.set_num_threads(cpu_count())  # the CPUs this process may use, not the host's count


def pytest_generate_tests(metafunc):
    cfg = bench_config(metafunc.config)
    if "row" in metafunc.fixturenames:
        # part-major order: part 1 of every row, then part 2 of every row, ...
        cases = [(part, row) for part in range(cfg.parts) for row in rows_for(cfg.models, cfg.devices)]
        metafunc.parametrize("part,row", cases, ids=[f"{row.id}-{part + 1}of{cfg.parts}" for part, row in cases])
    for per_model in ("tokenizer_model", "int8_model"):
        if per_model in metafunc.fixturenames:
            metafunc.parametrize(per_model, cfg.models)


@pytest.fixture(scope="session")
def bench_cfg(request) -> BenchConfig:
    return bench_config(request.config)


@pytest.fixture(scope="session")
def run(bench_cfg) -> RunFolder:
    return RunFolder(bench_cfg.run_dir)


@pytest.fixture(scope="session")
def workload(bench_cfg, request) -> Workload:
    handed = [p.workload for p in request.config.pluginmanager.get_plugins()
              if isinstance(p, SuitePlugin) and p.workload is not None]
    return handed[0] if handed else Workload.load(bench_cfg)


@pytest.fixture(scope="session")
def _loaded_rows() -> dict:
    return {}


@pytest.fixture
def state(row: Row, run: RunFolder, _loaded_rows: dict, bench_cfg: BenchConfig) -> RowState:
    """The row's model, loaded once for all its latency and throughput parts, and what they have run on it; a skip
    when the machine or the run lacks it."""
    reason = missing(row, run)
    if reason:
        pytest.skip(reason)
    if row not in _loaded_rows:
        loaded = load(row, run)
        _loaded_rows[row] = RowState(loaded, loaded.engine.bulk_modes)
    return _loaded_rows[row]


class Settler:
    """Lets the cores settle before a measurement when the one before ran an engine whose threads spin."""

    def __init__(self, seconds: float):
        self.seconds, self.spinning = seconds, False

    def before(self, state: RowState) -> None:
        if self.spinning:
            time.sleep(self.seconds)
        self.spinning = bool(state.loaded.engine.bench_options.get("spinning"))


@pytest.fixture(scope="session")
def settler(bench_cfg: BenchConfig) -> Settler:
    return Settler(bench_cfg.settle_seconds)


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2].removeprefix("Skipped: ")
        SKIPPED.append(Skip(report.nodeid.split("::")[-1], reason))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """What the summary needs beyond the timings: the settings, the skips and their reasons, the machine."""
    import torch

    cfg = bench_config(config)
    run = RunFolder(cfg.run_dir)
    manifest = run.read_manifest()
    accelerator = torch.cuda.get_device_name() if torch.cuda.is_available() else (
        "Apple MPS" if torch.backends.mps.is_available() else None)
    machine = Machine(this_cpu_identity(), cpu_count(), os.cpu_count(),
                      {"torch": torch.get_num_threads(), "onnxruntime_intra_op": cpu_count(), "openvino": cpu_count()},
                      accelerator, platform.platform())
    output_json["kd_bench"] = to_data(SuiteMeta(
        config=cfg.to_dict(), preset=manifest.get("config", {}).get("preset"), skipped=SKIPPED, machine=machine,
        # from the installed distributions, so that an engine left uninstalled is simply absent
        versions=installed_versions(("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "transformers"))))
