"""Two processes run the same experiment as one: the smoke preset under `--nproc 2` against one process, stage by
stage on the same inputs."""

import json

import numpy as np
import pytest
from conftest import kd

pytestmark = pytest.mark.slow

STAGES = ("teacher", "baseline", "distilled")
# Each stage trained for an epoch, with one process and with two: two processes on the one CPU a test worker has
# take several times as long as one, and what DDP could break (the batches, the steps, the loss's scale, the
# order of the teacher's logits gathered from both) shows in the first epoch.
FIRST_EPOCH = ("--set", "teacher.train.epochs=1", "--set", "student.train.epochs=1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{processes: run folder}: `kd train-all --preset smoke`, an epoch per stage, with one process and with two."""
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for nproc in (1, 2):
        out[nproc] = root / f"nproc{nproc}"
        proc = kd("train-all", "--preset", "smoke", *FIRST_EPOCH, "--run-dir", out[nproc], "--nproc", nproc)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (out[nproc] / "train-all.log").write_text(proc.stdout + proc.stderr)
    return out


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
def test_two_processes_train_the_same_experiment(runs, stage):
    """The distilled students learn from their own run's teacher, so they also carry the teachers' difference."""
    one, two = trained(runs[1], stage), trained(runs[2], stage)
    assert one["batch"] == {"world_size": 1, "global_batch": 32, "per_process_batch": 32, "global_eval_batch": 128}
    assert two["batch"] == {"world_size": 2, "global_batch": 32, "per_process_batch": 16, "global_eval_batch": 128}
    assert two["steps"] == one["steps"], "the same global batches give the same optimizer steps"
    # not doubled by the Trainer's sum-over-tokens scaling: a fresh 4-class head starts near ln 4 = 1.386
    assert two["first_loss"] == pytest.approx(one["first_loss"], rel=0.02)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=0.10)
    assert abs(two["accuracy"] - one["accuracy"]) <= 0.03


def test_two_processes_record_their_batches_and_write_once(runs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engines.inference import logits_over
    from engines.sessions.pytorch import PyTorchEngine
    from kd.runfolder import RunFolder

    run = runs[2]
    log = (run / "train-all.log").read_text()
    assert log.count("distilled: test accuracy") == 1, "only the main process reports and writes"
    assert log.count("teacher: logits for 2000 rows") == 1
    assert "global batch 32 = 2 x 16" in log
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"]["processes"] == 2
    for role in ("teacher", "student"):
        assert manifest["batches"][role] == {"world_size": 2, "global_batch": 32, "per_process_batch": 16,
                                             "global_eval_batch": 128}
    results = json.loads((run / "results.json").read_text())
    assert [results["models"][m]["batch"]["per_process_batch"] for m in STAGES] == [16, 16, 16]
    assert "distilled 32 = 2 x 16" in (run / "results.md").read_text()
    # the two processes' shares of the teacher's logits come back in row order: the same teacher's logits over
    # the students' rows in one process here (fp32, sums in another order); a shuffled order would be far off
    (ddp,) = (run / "cache/teacher_logits").glob("*/logits.npy")
    texts, _, max_length = RunFolder(run).split(None, "train")
    teacher = run / "models/teacher"
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    single = logits_over(PyTorchEngine(model).run, AutoTokenizer.from_pretrained(teacher), texts, max_length, 128)
    np.testing.assert_allclose(np.load(ddp), single, atol=1e-4)
