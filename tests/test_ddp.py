"""Two processes run the same experiment as one: the smoke preset under `--nproc 2` against the session's
one-process smoke run, stage by stage on the same inputs."""

import json
import shutil

import numpy as np
import pytest
from conftest import kd

pytestmark = pytest.mark.slow

STAGES = ("teacher", "baseline", "distilled")


# The teacher's stage compared over its first epoch (of the preset's 5), with one process and with two: two
# processes on the one CPU a test worker has take several times as long as one, and what DDP could break (the
# batches, the steps, the loss's scale) shows in the first epoch.
TEACHER_EPOCH = ("--set", "teacher.train.epochs=1")


@pytest.fixture(scope="module")
def two_process(smoke_run, tmp_path_factory):
    """{stage: (one-process run folder, two-process run folder)}. The teachers are trained afresh for an epoch; the
    students train in a copy of the one-process smoke run, so that the distilled one learns from the same teacher as
    there (its logits over the students' rows are computed again, the two processes sharing the rows)."""
    root = tmp_path_factory.mktemp("ddp")
    teachers = []
    for nproc in (1, 2):
        teachers.append(root / f"teacher-{nproc}")
        proc = kd("train-teacher", "--preset", "smoke", *TEACHER_EPOCH, "--run-dir", teachers[-1], "--nproc", nproc)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    students = root / "students"
    shutil.copytree(smoke_run, students)
    for done in ("models/baseline", "models/distilled", "cache/teacher_logits"):
        shutil.rmtree(students / done)
    proc = kd("train-all", "--preset", "smoke", "--run-dir", students, "--nproc", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (students / "train-all.log").write_text(proc.stdout + proc.stderr)
    return {"teacher": tuple(teachers), "baseline": (smoke_run, students), "distilled": (smoke_run, students)}


def trained(run, stage) -> dict:
    """What the comparison looks at: optimizer steps, first logged training loss, last eval_loss, test accuracy."""
    folder = run / "models" / stage
    history = json.loads((folder / "log_history.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"steps": max(h["step"] for h in history),
            "first_loss": next(h["loss"] for h in history if "loss" in h),
            "eval_loss": [h["eval_loss"] for h in history if "eval_loss" in h][-1],
            "accuracy": metrics["accuracy"], "batch": metrics["batch"]}


@pytest.mark.parametrize("stage", STAGES)
def test_two_processes_train_the_same_experiment(two_process, stage):
    one, two = (trained(run, stage) for run in two_process[stage])
    assert one["batch"] == {"world_size": 1, "global_batch": 32, "per_process_batch": 32, "global_eval_batch": 128}
    assert two["batch"] == {"world_size": 2, "global_batch": 32, "per_process_batch": 16, "global_eval_batch": 128}
    assert two["steps"] == one["steps"], "the same global batches give the same optimizer steps"
    # not doubled by the Trainer's sum-over-tokens scaling: a fresh 4-class head starts near ln 4 = 1.386
    assert two["first_loss"] == pytest.approx(one["first_loss"], rel=0.02)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=0.10)
    assert abs(two["accuracy"] - one["accuracy"]) <= 0.03


def test_two_processes_record_their_batches_and_write_once(smoke_run, two_process):
    run = two_process["distilled"][1]
    log = (run / "train-all.log").read_text()
    assert log.count("distilled: test accuracy") == 1, "only the main process reports and writes"
    assert log.count("teacher: logits for 2000 rows") == 1
    assert "global batch 32 = 2 x 16" in log
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"]["processes"] == 2
    assert manifest["batches"]["student"] == {"world_size": 2, "global_batch": 32, "per_process_batch": 16,
                                              "global_eval_batch": 128}
    results = json.loads((run / "results.json").read_text())
    assert results["models"]["distilled"]["batch"]["per_process_batch"] == 16
    assert results["models"]["teacher"]["batch"]["per_process_batch"] == 32, "the teacher came from one process"
    assert "distilled 32 = 2 x 16" in (run / "results.md").read_text()
    # the two processes' shares of the teacher's logits come back in row order: the one-process logits (fp32,
    # sums in another order); a shuffled order would be far off
    (ddp,) = (run / "cache/teacher_logits").glob("*/logits.npy")
    (single,) = (smoke_run / "cache/teacher_logits").glob("*/logits.npy")
    np.testing.assert_allclose(np.load(ddp), np.load(single), atol=1e-4)
