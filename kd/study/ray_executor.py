"""The study's cells as Ray tasks (`kd study NAME --executor ray [--address ADDR]`).

Each unfinished cell is one task running kd.study.cell.run_cell, asking for one GPU where the cluster has GPUs
and for the study's `cpus` (default 1) CPUs. A cell that takes another cell's teacher gets that cell's task as an
argument, so Ray starts it only once that cell (and its teacher) has finished. A worker that dies mid-cell has
its task retried by Ray (MAX_RETRIES), and the retry resumes the cell from its last checkpoint like any stopped
run.

What the nodes share: the study folder, on a filesystem every node mounts at the same path (the cells read their
donors' teachers and write their run folders there; the driver checks each node sees it before any cell starts),
and the data (a folder at the same path, or a hub id with a reachable hub or a shared HF_HOME). The driver's
KD_*, HF_* and TOKENIZERS_PARALLELISM settings go to every task. Each task returns its cell's record, from which
the driver writes study.json after every cell."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from kd.errors import KdError
from kd.study.cell import CellJob, run_cell

MAX_RETRIES = 3  # tries after a worker or node dies mid-cell; an error raised by the cell itself is not retried
INSTALL = "pip install -r requirements-ray.txt (or: make setup RAY=1; the CUDA image has it)"
SHARED_ENV = ("KD_", "HF_", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_")


def import_ray():
    try:
        import ray
    except ImportError:
        raise KdError(f"--executor ray: Ray is not installed here: {INSTALL}") from None
    return ray


def check_address(address: str) -> None:
    """A head that does not answer stops here in seconds; ray.init would retry for a minute."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise KdError(f"--address {address}: expected HOST:PORT of a Ray head (ray start --head prints it), "
                      "'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise KdError(f"--address {address}: no Ray head answers there ({exc.strerror or exc}); start one (ray start "
                      "--head), or leave --address out to start Ray on this machine") from None


def connect(address: str | None) -> None:
    ray = import_ray()
    if address:
        check_address(address)
    env = {k: v for k, v in os.environ.items() if k.startswith(SHARED_ENV)}
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise KdError(f"--address {address}: {str(exc).strip().splitlines()[0]}") from None


def check_shared(root: Path) -> None:
    """Every alive node reads a file written here into the study folder, or the study stops with one line."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".probe-{uuid.uuid4().hex}"
    probe.write_text(probe.name)

    @ray.remote(num_cpus=0, max_retries=0)
    def sees(path: str, token: str) -> tuple[bool, str]:
        p = Path(path)
        return p.is_file() and p.read_text() == token, socket.gethostname()

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        answers = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                           .remote(str(probe), probe.name) for n in nodes])
    finally:
        probe.unlink()
    for node, (ok, host) in zip(nodes, answers):
        if not ok:
            raise KdError(f"ray: node {host} ({node.get('NodeManagerAddress')}) cannot read the study folder {root}: "
                          "every node must mount it at the same path (a shared filesystem)")


def cell_task(job: CellJob, after: object = None) -> dict:
    """Ray's unit of work; `after` is the donor cell's task, which Ray finishes before starting this one."""
    return run_cell(job)


def run(jobs: list[CellJob], root: Path, write_record: Callable[[], object]) -> int:
    """The jobs as Ray tasks; returns how many cells ran. study.json is rewritten as each task returns."""
    ray = import_ray()
    check_shared(root.resolve())
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(cell_task)
    refs, names = {}, {}
    for job in jobs:
        if job.finished:
            run_cell(job)  # rewrites its record only
            continue
        ref = task.options(name=f"study_cell:{job.cell.name}", num_cpus=job.threads or 1, num_gpus=gpus,
                           max_retries=MAX_RETRIES, retry_exceptions=False).remote(job, refs.get(job.donor))
        refs[job.cell.name], names[ref] = ref, job.cell.name
    print(f"kd: ray: {len(refs)} cells as tasks on {len(ray.nodes())} node(s), "
          f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {gpus} GPU per cell", flush=True)
    write_record()
    pending = list(refs.values())
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, KdError):
                    raise KdError(f"cell {names[done[0]]}: {cause}") from None
                raise
            write_record()
    finally:
        for ref in pending:
            ray.cancel(ref)
        ray.shutdown()
    return len(refs)
