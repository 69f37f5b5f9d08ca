"""Interrupted runs resume, finished files are whole, the same seed gives the same run, caches are bound."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import ENV, REPO, kd

from kd.atomic import atomic_dir, write_json
from kd.resume import complete_checkpoints, resume_point, start_afresh

TIMINGS = ("train_seconds",)  # wall-clock: the one thing two runs may not share


def comparable(results: dict) -> dict:
    """results.json without wall-clock timings."""
    out = json.loads(json.dumps(results))
    for row in out["models"].values():
        for key in TIMINGS:
            row.pop(key)
    return out


def same_run(a, b) -> None:
    """Two run folders hold the same results, the same test logits and the very same weights, bit for bit."""
    assert comparable(json.loads((a / "results.json").read_text())) == \
        comparable(json.loads((b / "results.json").read_text()))
    for name in ("teacher", "baseline", "distilled"):
        assert (a / f"models/{name}/test_logits.npy").read_bytes() == \
            (b / f"models/{name}/test_logits.npy").read_bytes(), name
        assert json.loads((a / f"models/{name}/metrics.json").read_text())["weights_sha256"] == \
            json.loads((b / f"models/{name}/metrics.json").read_text())["weights_sha256"], name


@pytest.fixture(scope="module")
def killed_and_resumed(smoke_run, tmp_path_factory):
    """`make train-all PRESET=smoke` on a copy of the session's smoke run without its distilled student and report,
    killed with SIGKILL once the distilled stage has written its first checkpoint (mid-epoch), then the same
    command again. (That separate processes train the same bits from scratch, the study shows: its cells run in
    Ray workers and shards equal the sequential ones.)"""
    run = tmp_path_factory.mktemp("killed") / "smoke"
    shutil.copytree(smoke_run, run)
    for made in ("models/distilled", "results.json", "results.md"):
        (shutil.rmtree if (run / made).is_dir() else os.remove)(run / made)
    first = subprocess.Popen(["make", "train-all", "PRESET=smoke", f"RUN={run}"], cwd=REPO, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not complete_checkpoints(run / "work" / "distilled"):
        assert first.poll() is None, "train-all ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # make, kd and all: nothing gets to clean up
    first.wait()
    killed_state = {p.name for p in (run / "work" / "distilled").iterdir()}
    assert not (run / "models" / "distilled").exists() and not (run / "results.json").exists()
    again = subprocess.run(["make", "train-all", "PRESET=smoke", f"RUN={run}"], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    return run, again.stdout, killed_state


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_resumes_and_matches_an_uninterrupted_run(killed_and_resumed, smoke_run):
    run, out, killed_state = killed_and_resumed
    checkpoint = min(name for name in killed_state if name.startswith("checkpoint-"))
    assert "teacher: already done with this config, skipped" in out
    assert "baseline: already done with this config, skipped" in out
    assert "teacher: logits reused" in out
    assert f"distilled: resuming from {checkpoint}" in out
    metrics = json.loads((run / "models/distilled/metrics.json").read_text())
    assert metrics["resumed_from"] == checkpoint
    same_run(run, smoke_run)
    assert not (run / "work" / "distilled").exists()


def fake_checkpoint(work, step, files=("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                       "trainer_state.json")):
    folder = work / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_text("{}" if f.endswith(".json") else "x")
    return folder


def test_resume_takes_the_last_whole_checkpoint_of_the_same_stage_key(tmp_path):
    work = tmp_path / "work" / "distilled"
    assert resume_point(work, "k1") == (None, "no checkpoints")
    start_afresh(work, "k1")
    fake_checkpoint(work, 10)
    fake_checkpoint(work, 20)
    fake_checkpoint(work, 30, files=("model.safetensors", "optimizer.pt"))  # killed while saving
    (fake_checkpoint(work, 40) / "trainer_state.json").write_text('{"global_st')  # cut inside the state file
    assert resume_point(work, "k1") == (work / "checkpoint-20", "resuming from checkpoint-20")
    checkpoint, why = resume_point(work, "k2")  # another config or other data: never resumed
    assert checkpoint is None and "another config or data" in why
    start_afresh(work, "k2")
    assert sorted(p.name for p in work.iterdir()) == ["stage_key"]


def test_atomic_writes_leave_the_old_file_or_folder_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json(target, {"v": 1})

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_json(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    folder = tmp_path / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(folder) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (folder / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "results.json"], "no scratch left behind"


def test_no_module_writes_a_file_in_place():
    """Every file a stage leaves goes through kd.atomic (write aside, fsync, rename) or into an atomic_dir
    scratch folder; a direct write of a final file would be a half-file after a kill."""
    direct = ("write_text(", "write_bytes(", ".savefig(", "np.save(", "json.dump(", "torch.save(", "open(")
    # scripts/optimum_check.py runs in optimum's own environment, where kd (and kd.atomic) cannot be imported;
    # it has its own write-aside-then-rename helper
    allowed = {"kd/atomic.py", "scripts/optimum_check.py"}
    offenders = []
    for path in sorted(REPO.glob("*/*.py")):
        rel = str(path.relative_to(REPO))
        if rel.startswith(("tests/", ".venv/")) or rel in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            calls = [c for c in direct if c in code and f"def {c}" not in code]
            if any(c in ("write_text(", "write_bytes(") for c in calls) and "kd.atomic" not in code \
                    and not code.lstrip().startswith(("write_text(", "write_bytes(")):
                offenders.append(f"{rel}:{number}: {line.strip()}")
            elif any(c in (".savefig(", "np.save(", "json.dump(", "torch.save(") for c in calls) \
                    and "buf" not in code:
                offenders.append(f"{rel}:{number}: {line.strip()}")
            elif "open(" in calls and any(m in code for m in ('"w', "'w", '"a', "'a")):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def in_process(run):
    """The run of the smoke preset on a run folder, in this process (its messages go to stdout)."""
    from kd.config import load_config
    from kd.run import RunContext

    return RunContext(load_config("smoke"), run)


def teacher_logits(run):
    from kd.run.teachers import teacher_logits

    return teacher_logits(in_process(run))


def test_wrong_shape_foreign_or_stale_teacher_logits_are_recomputed_never_used(smoke_copy, capsys):
    (cached,) = (smoke_copy / "cache/teacher_logits").glob("*/logits.npy")
    good = np.load(cached)
    np.save(cached, np.zeros((3, 4), dtype=np.float32))  # damaged: the wrong shape
    logits, _ = teacher_logits(smoke_copy)
    assert "not used: its files changed after it was written" in capsys.readouterr().out
    assert np.array_equal(logits, good) and np.array_equal(np.load(cached), good)
    # foreign: right name, right shape, other numbers (another teacher's logits copied over)
    np.save(cached, np.random.default_rng(0).normal(size=good.shape).astype(np.float32))
    logits, _ = teacher_logits(smoke_copy)
    out = capsys.readouterr().out
    assert "not used: its files changed after it was written; computing it again" in out
    assert f"teacher: logits for {len(good)} rows" in out
    assert np.array_equal(logits, good) and np.array_equal(np.load(cached), good)
    # stale: its record says it was made from another teacher
    record = cached.parent / "kd_cache.json"
    meta = json.loads(record.read_text())
    meta["made_from"]["teacher_weights"] = "0" * 64
    record.write_text(json.dumps(meta))
    logits, _ = teacher_logits(smoke_copy)
    assert "not used: it was made from other inputs (teacher_weights)" in capsys.readouterr().out
    assert np.array_equal(logits, good)
    logits, note = teacher_logits(smoke_copy)  # and the rewritten entry is used again
    assert note == "reused" and np.array_equal(logits, good)


@pytest.mark.slow
def test_a_killed_stage_of_another_config_restarts_and_planted_logits_are_not_learned_from(smoke_copy, smoke_run):
    """One distill run, two plants: checkpoints a killed run with another config left behind (discarded, training
    starts afresh), and foreign teacher logits (recomputed); the student then equals the session's bit for bit."""
    work = smoke_copy / "work" / "distilled"
    shutil.rmtree(smoke_copy / "models" / "distilled")
    start_afresh(work, "0123456789abcdef")  # as a killed run with another config would have left it
    fake_checkpoint(work, 31)
    (cached,) = (smoke_copy / "cache/teacher_logits").glob("*/logits.npy")
    good = np.load(cached)
    np.save(cached, np.random.default_rng(0).normal(size=good.shape).astype(np.float32))
    proc = kd("distill", "--preset", "smoke", "--run-dir", smoke_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "distilled: training from the start (the checkpoints there were made with another config" in proc.stdout
    assert "not used: its files changed after it was written; computing it again" in proc.stdout
    assert (smoke_copy / "models/distilled/test_logits.npy").read_bytes() == \
        (smoke_run / "models/distilled/test_logits.npy").read_bytes()


def cache_notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("kd: tokenized cache")]


def test_foreign_or_damaged_tokenized_caches_are_rebuilt(smoke_copy, capsys):
    splits = ("student_train", "validation", "test")  # what a student trains and is scored on

    def tokenized() -> dict[str, list]:
        ctx = in_process(smoke_copy)
        _, tokenizer = ctx.new_student()
        return {split: list(ctx.tokenized(split, tokenizer)["input_ids"]) for split in splits}

    original = tokenized()  # the run's own caches, read
    assert not cache_notes(capsys.readouterr().out)
    caches = sorted((smoke_copy / "cache/tokenized").iterdir())
    contents = [c.with_name(c.name + ".moved") for c in caches]
    for cache, moved in zip(caches, contents):
        cache.rename(moved)
    for cache, moved in zip(caches, contents[1:] + contents[:1]):  # each key now holds another key's entry
        moved.rename(cache)
    assert tokenized() == original
    notes = cache_notes(capsys.readouterr().out)
    assert len(notes) == len(splits) and all("not used: it was made from other inputs" in n for n in notes), notes
    for cache in caches:
        arrow = next(cache.glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[:-64])  # damaged after it was written
    assert tokenized() == original
    notes = cache_notes(capsys.readouterr().out)
    assert len(notes) == len(splits) and all("not used: its files changed after it was written" in n
                                              for n in notes), notes


@pytest.mark.slow
def test_no_pool_label_reaches_any_model_under_a_label_budget(tmp_path):
    """data.labelled_rows=200 of the smoke students' 2,000 rows: the pool's labels shuffled and shifted give the
    very same teacher, baseline and distilled weights, and the same ensemble of two teachers and its student (the
    positive control, a changed labelled row, is in test_losses.py). One epoch per model: what is checked is that
    no pool label reaches a gradient. The ensemble's soft targets are its members' mean probability."""
    from scipy.special import softmax

    from kd.config import load_config
    from kd.methods import load_method
    from kd.run import RunContext, train_all
    from kd.run.teachers import teacher_logits

    cfg = load_config("smoke", ["data.labelled_rows=200", "teacher.train.epochs=1", "student.train.epochs=1"])
    recipe = tmp_path / "ensemble-2.yaml"
    recipe.write_text((REPO / "kd/methods/ensemble-kd.yaml").read_text().replace("members: 5", "members: 2"))
    methods = [load_method("baseline"), load_method("kd"), load_method(str(recipe))]
    models = ("teacher", "teacher-member2", "teacher-ensemble", "baseline", "distilled", "ensemble-2")
    weights = []
    for run, hide in ((tmp_path / "plain", False), (tmp_path / "hidden", True)):
        ctx = RunContext(cfg, run, methods)
        labelled = ctx.budget.labelled_rows  # chosen from the real labels, then kept
        assert len(labelled) == 200
        if hide:
            ds = ctx.student_train
            labels = np.asarray(ds["label"])
            pool = np.setdiff1d(np.arange(len(ds)), labelled)
            labels[pool] = (np.random.default_rng(0).permutation(labels[pool]) + 1) % 4
            assert (labels != np.asarray(ds["label"])).sum() > 1000
            ctx.__dict__["student_train"] = ds.remove_columns("label").add_column(
                "label", labels.tolist()).cast_column("label", ds.features["label"])
        train_all(ctx)
        weights.append({m: json.loads((run / f"models/{m}/metrics.json").read_text())["weights_sha256"]
                        for m in models})
        pooled, _ = teacher_logits(ctx, "teacher-ensemble")
        members = [teacher_logits(ctx, m)[0] for m in ("teacher", "teacher-member2")]
        np.testing.assert_allclose(softmax(pooled.astype(np.float64), -1),
                                   np.mean([softmax(z.astype(np.float64), -1) for z in members], 0), atol=1e-6)
    assert weights[0] == weights[1] and weights[0]["teacher"] != weights[0]["teacher-member2"]


def test_the_length_grouped_order_depends_on_the_seed_and_the_epoch_only():
    """The order a stage trains in, drawn as an epoch starts: a run resumed in a later epoch draws the same one
    as the run it continues, whatever the global RNG holds after the reload (it had drawn another before)."""
    import torch

    from kd.trainer import EpochSeededLengthGroupedSampler

    lengths = [(7 * i) % 23 + 1 for i in range(40)]
    sampler = EpochSeededLengthGroupedSampler(4, lengths=lengths, seed=3)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)
    assert list(sampler) == first and sorted(first) == list(range(40))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(40))
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(EpochSeededLengthGroupedSampler(4, lengths=lengths, seed=4)) != first
