import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The team's copy of AG News (the product itself knows no such folder): the tests point $KD_DATA at it, for the kd
# commands they start and for those they run in this process, unless the caller already points it elsewhere.
AG_NEWS = Path(os.environ.setdefault("KD_DATA", str(REPO.parent / "shared" / "data" / "ag_news")))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def kd(*args, cwd=REPO, timeout=600):
    """Run the kd command as a user would; returns the completed process (stdout+stderr captured)."""
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


# The files that take longest, first: the workers take files in this order, so that none ends with a long file
# started late while the other has nothing left (xdist's own order is by test count, not by time).
LONGEST_FIRST = ("test_study.py", "test_interruptions.py", "test_bench_suite.py", "test_export.py", "test_ddp.py",
                 "test_methods.py", "test_pipeline.py", "test_optimum.py")


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: the order of what runs
def pytest_collection_modifyitems(items):
    """Longest files first, except that one worker makes the session's smoke run (in the first file that needs it)
    while the other works through the files that need none; the files that would wait for it come after those."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    waits = [item.path.name for item in items if "smoke_run" in item.fixturenames]
    later = set(waits[1:]) - set(waits[:1])
    items.sort(key=lambda item: item.path.name in later)


def pytest_configure(config):
    """Each xdist worker, and every process it starts, runs on its own share of the CPUs. Unpinned, two workers'
    training runs each start a thread per CPU (torch, ONNX Runtime, OpenVINO read the CPUs they may use), and the
    oversubscribed threads spin against each other: a test took three times as long as alone."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= count:
            os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count])


@pytest.fixture
def kd_here(capsys):
    """The kd command run in this process, where a separate process is not what a test is about: the same
    entry point and exit code, without starting Python and importing torch again (seconds per call). Returns
    what kd() returns."""
    from cli.main import main

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def write_csv(path: Path, rows, header=("label", "text")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def sample_rows(split: str, per_label: int):
    """The first `per_label` rows of each label from the real AG News files."""
    taken, counts = [], {}
    with open(AG_NEWS / f"{split}.csv") as fh:
        for row in csv.DictReader(fh):
            if counts.get(row["label"], 0) < per_label:
                counts[row["label"]] = counts.get(row["label"], 0) + 1
                taken.append((row["label"], row["text"]))
    return taken


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small real AG News folder: 150 train and 50 test rows per label."""
    folder = tmp_path_factory.mktemp("data") / "ag_small"
    write_csv(folder / "train.csv", sample_rows("train", 150))
    write_csv(folder / "test.csv", sample_rows("test", 50))
    return folder


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id) -> Path:
    """A folder every pytest-xdist worker of this session sees (the session's own temporary folder otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def once(shared: Path, name: str, make) -> Path:
    """shared/<name>, made by `make(folder)` the first time any worker of the session asks for it; the other
    workers wait for it (pytest-xdist runs session fixtures once per worker). A failed make leaves no marker:
    whoever asks next tries again and fails the same way."""
    from filelock import FileLock

    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


def make_smoke_run(run: Path) -> None:
    proc = subprocess.run(["make", "train-all", "PRESET=smoke", f"RUN={run}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run / "train-all.log").write_text(proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def smoke_run(shared) -> Path:
    """`make train-all PRESET=smoke` once for the session; tests copy it before changing it."""
    return once(shared, "smoke", make_smoke_run)


# a bench quick enough for tests: a share of the test split, few latency texts, short measurements in 3 parts
QUICK_BENCH = ("--bench-samples", "256", "--latency-texts", "32", "--min-seconds", "0.2", "--parts", "3")


@pytest.fixture(scope="session")
def smoke_export(smoke_run, shared) -> Path:
    """The smoke run exported once (`kd export`) for the session; read it, or copy it before changing it."""
    def make(run: Path) -> None:
        shutil.copytree(smoke_run, run)
        proc = kd("export", "--run-dir", run)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        (run / "export.log").write_text(proc.stdout + proc.stderr)

    return once(shared, "exported", make)


@pytest.fixture(scope="session")
def smoke_bench(smoke_export, shared) -> Path:
    """That export benched once (quick settings), in the same folder: the bench writes only bench/."""
    def make(marker: Path) -> None:
        proc = kd("bench", "--run-dir", smoke_export, *QUICK_BENCH)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        marker.mkdir()

    once(shared, "benched", make)
    return smoke_export


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    dst = tmp_path / "smoke"
    shutil.copytree(smoke_run, dst)
    return dst


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file: equal before and after means nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def add_slow_branch(path, n=512):
    """Make an ONNX graph do two extra n³ matrix products per row of the batch (same logits): a slower model on
    purpose, at batch 1 and at batch 32 alike. A cost per call would be spread over a batch of 32 and shrink the
    batch-32 slowdown to what a busy machine's noise can hide: the teacher in PyTorch, every ratio's reference,
    once ran 5x slower in the one bench than in the other beside a second test worker."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    g = model.graph
    producer = next(node for node in g.node if "logits" in node.output)
    producer.output[list(producer.output).index("logits")] = "logits_before_slow_branch"
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "slow_w")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "slow_zero")
    axis1 = numpy_helper.from_array(np.array([1], np.int64), "slow_axis1")
    axis2 = numpy_helper.from_array(np.array([2], np.int64), "slow_axis2")
    g.initializer.extend([w, zero, axis1, axis2])
    g.node.extend([
        # a zero per row that depends on the input, so that nothing can be folded ahead of time
        helper.make_node("Cast", ["input_ids"], ["slow_ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["slow_ids", "slow_axis1"], ["slow_sum"], keepdims=1),  # (batch, 1)
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_row"]),
        helper.make_node("Unsqueeze", ["slow_row", "slow_axis2"], ["slow_scale"]),  # (batch, 1, 1)
        helper.make_node("Add", ["slow_w", "slow_scale"], ["slow_a"]),  # (batch, n, n)
        helper.make_node("MatMul", ["slow_a", "slow_w"], ["slow_b"]),
        helper.make_node("MatMul", ["slow_b", "slow_w"], ["slow_c"]),
        helper.make_node("ReduceSum", ["slow_c"], ["slow_total"], keepdims=0),
        helper.make_node("Mul", ["slow_total", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", ["logits_before_slow_branch", "slow_nothing"], ["logits"]),
    ])
    onnx.save(model, path)
