"""A run of many methods: one student per recipe beside the shared teacher, the self-trained and calibrated teachers'
procedures, Holm-corrected tests against the baseline, pool labels never read, and an online stage killed with
SIGKILL that resumes to the very same weights."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ENV, REPO, once
from scipy.stats import binomtest

from kd.resume import complete_checkpoints

METHODS = ["baseline", "kd", "pseudo-label", "self-train-kd", "kd-calibrated", "kd-hidden", "kd-attention"]
BUDGET = 200
# study-smoke's rows (1,000 students' rows beside 400 validation rows): every recipe's student trains on them
ARGS = ("--preset", "smoke", "--set", f"data.labelled_rows={BUDGET}", "--set", "data.train_rows=1400")


KD = [sys.executable, "-m", "cli"]  # the kd command of this interpreter, as conftest.kd starts it


def train_all(run, methods, *extra):
    return ["train-all", *ARGS, "--run-dir", str(run), "--set", f"methods=[{','.join(methods)}]", *extra]


@pytest.fixture(scope="session")
def methods_run(shared):
    """The smoke preset with a label budget and every recipe, once for the session."""
    def make(run):
        proc = subprocess.run(KD + train_all(run, METHODS), cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run / "train-all.log").write_text(proc.stdout + proc.stderr)

    return once(shared, "methods", make)


@pytest.mark.slow
def test_a_run_trains_one_student_per_method_and_tests_each_against_the_baseline_holm_corrected(methods_run):
    from statsmodels.stats.multitest import multipletests

    manifest = json.loads((methods_run / "manifest.json").read_text())
    students = ["baseline", "distilled", "pseudo-label", "self-train-kd", "kd-calibrated", "kd-hidden", "kd-attention"]
    assert manifest["models"] == ["teacher", "teacher-self-train", *students]
    results = json.loads((methods_run / "results.json").read_text())
    assert list(results["models"]) == manifest["models"]
    tests = results["methods"]
    assert list(tests) == students[1:]
    labels = np.load(methods_run / "test_labels.npy")
    base = np.load(methods_run / "models/baseline/test_logits.npy").argmax(-1) == labels
    raw = []
    for name in tests:
        right = np.load(methods_run / f"models/{name}/test_logits.npy").argmax(-1) == labels
        only_base, only_it = int(np.sum(base & ~right)), int(np.sum(~base & right))
        assert (tests[name]["mcnemar"]["only_a_right"], tests[name]["mcnemar"]["only_b_right"]) == (only_base, only_it)
        assert tests[name]["gain_pt"] == pytest.approx(100 * (right.mean() - base.mean()))
        # no row where exactly one is right (the same predictions): nothing to test, p = 1
        raw.append(binomtest(min(only_base, only_it), only_base + only_it, 0.5).pvalue if only_base + only_it else 1.0)
    holm = multipletests(raw, method="holm")[1]
    assert [t["p_holm"] for t in tests.values()] == pytest.approx(list(holm))
    assert all(t["p_holm"] >= t["mcnemar"]["p_value"] for t in tests.values())
    assert all(t["significant_at_0.05"] == (t["p_holm"] < 0.05) for t in tests.values())
    text = (methods_run / "results.md").read_text()
    assert "## Each method against the baseline on these test rows (6 compared; McNemar p Holm-adjusted; " \
           "one training run each)" in text
    for name in students:
        metrics = json.loads((methods_run / f"models/{name}/metrics.json").read_text())
        assert metrics["method"] == ("kd" if name == "distilled" else name)
        assert (methods_run / f"models/{name}/model.safetensors").is_file()
        assert not any("kd_terms" in key for key in _weight_names(methods_run / f"models/{name}"))


def _weight_names(folder):
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return list(f.keys())


@pytest.mark.slow
def test_the_teacher_procedures_read_only_the_budgets_labels_and_share_the_teacher(methods_run):
    log = (methods_run / "train-all.log").read_text()
    # one fine-tuned teacher and one pass of its logits serve kd, pseudo-label, kd-calibrated, kd-hidden, kd-attention
    assert log.count("teacher: training from the start") == 1
    assert log.count("teacher: logits for") == 1 and log.count("teacher-self-train: logits for") == 1
    st = json.loads((methods_run / "models/teacher-self-train/metrics.json").read_text())
    pseudo = json.loads((methods_run / "models/pseudo-label/metrics.json").read_text())
    students = json.loads((methods_run / "manifest.json").read_text())["data"]["rows"]["student_train"]
    # per_class 500 of each predicted class, from the pool only: both take the same rows of the same teacher
    assert 0 < st["pseudo_labelled_rows"] == pseudo["pseudo_labelled_rows"] <= students - BUDGET
    assert f"{st['pseudo_labelled_rows']} pool rows with the teacher's labels beside {BUDGET} labelled ones" in log
    cal = json.loads((methods_run / "models/kd-calibrated/metrics.json").read_text())["calibration"]
    assert cal["rows"] == BUDGET and cal["folds"] == 2 and cal["nll_after"] <= cal["nll_before"]
    assert "teacher-fold1: training from the start" in log and "teacher-fold2: training from the start" in log
    cached = list((methods_run / "cache/calibration").glob("*/calibration.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["temperature"] == cal["temperature"]
    record = json.loads((cached[0].parent / "kd_cache.json").read_text())  # its record, bound to the teacher
    assert record["made_from"]["weights"] == json.loads(
        (methods_run / "models/teacher/metrics.json").read_text())["weights_sha256"]
    times = json.loads((methods_run / "models/self-train-kd/metrics.json").read_text())
    assert times["teacher"] == "teacher-self-train" and times["procedure_seconds"] == st["train_seconds"]


def test_pseudo_labels_are_the_same_whatever_the_pool_rows_labels_say():
    """The pool's labels are withheld: scrambling them changes no pseudo-labelled row and no label of one."""
    from datasets import Dataset

    from kd.methods import load_method
    from kd.run.rows import LabelBudget

    rng = np.random.default_rng(0)
    rows, labelled = 60, np.array([3, 10, 20, 41])
    ds = Dataset.from_dict({"input_ids": [[101, i, 102] for i in range(rows)], "label": rng.integers(0, 4, rows)})
    scrambled_labels = np.asarray(ds["label"]).copy()
    pool = np.setdiff1d(np.arange(rows), labelled)
    scrambled_labels[pool] = rng.permutation(scrambled_labels[pool]) + 0
    scrambled_labels[pool[:5]] = (scrambled_labels[pool[:5]] + 1) % 4
    scrambled = ds.remove_columns("label").add_column("label", scrambled_labels.tolist())
    logits = rng.normal(size=(rows, 4)).astype(np.float32)
    method = load_method("pseudo-label")
    made = []
    for data in (ds, scrambled):
        budget = LabelBudget(rows, labelled)
        train, chosen = budget.labelled_and_pseudo_labelled(data.select(labelled), data, logits, method.per_class,
                                                             method.min_confidence)
        made.append((train["input_ids"], train["label"], chosen.tolist()))
    assert made[0] == made[1]
    ids, labels, chosen = made[0]
    assert not set(chosen) & set(labelled.tolist()) and len(chosen) == len(pool)  # per_class 500: all of a small pool
    assert labels[len(labelled):] == logits[chosen].argmax(-1).tolist()  # the teacher's labels, not the data's
    assert labels[:len(labelled)] == np.asarray(ds["label"])[labelled].tolist()


@pytest.mark.slow
def test_an_online_stage_killed_mid_training_resumes_to_the_same_weights(methods_run, tmp_path):
    """kd-hidden (the teacher online, a trained projection on the student) killed with SIGKILL once it has written a
    checkpoint; the rerun resumes there and ends with the weights of the uninterrupted run, bit for bit."""
    run = tmp_path / "killed"
    cmd = KD + train_all(run, ["kd-hidden"])
    first = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 600
    while not complete_checkpoints(run / "work" / "kd-hidden"):
        assert first.poll() is None, "train-all ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    checkpoint = min(p.name for p in (run / "work" / "kd-hidden").iterdir() if p.name.startswith("checkpoint-"))
    assert not (run / "models" / "kd-hidden").exists()
    again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"kd-hidden: resuming from {checkpoint}" in again.stdout
    resumed, whole = (json.loads((r / "models/kd-hidden/metrics.json").read_text()) for r in (run, methods_run))
    assert resumed["resumed_from"] == checkpoint
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert (run / "models/kd-hidden/test_logits.npy").read_bytes() == \
        (methods_run / "models/kd-hidden/test_logits.npy").read_bytes()


@pytest.mark.parametrize("methods,message", [
    (["baseline", "nope"], "method 'nope' not found"),
    (["kd", "kd"], "two of them train the model 'distilled'"),
    ([], "methods=[]: expected at least one method"),
])
def test_a_bad_method_list_stops_before_anything_is_written(kd_here, tmp_path, methods, message):
    run = tmp_path / "run"
    proc = kd_here(*train_all(run, methods))
    assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1]
    assert not run.exists()


def test_a_recipe_whose_teacher_no_procedure_makes_stops_before_anything_is_written(kd_here, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("teacher: self-trained\nterms:\n  - {term: kl}\n")  # the procedure is self-train
    run = tmp_path / "run"
    proc = kd_here(*train_all(run, ["baseline", str(recipe)]))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "method mine: teacher=self-trained: no teacher procedure makes 'teacher-self-trained' (expected one of "
        "none, finetune, file, ensemble, self-train, self-train-ensemble)")
    assert not run.exists()
    recipe.write_text("teacher: Self Train\nterms:\n  - {term: kl}\n")
    proc = kd_here(*train_all(run, ["baseline", str(recipe)]))
    assert proc.returncode == 2 and "teacher='Self Train': expected none, finetune or a teacher procedure's name" \
        in proc.stderr and not run.exists()


def test_recipes_name_their_teacher_and_model():
    from kd.methods import load_method

    st = load_method("self-train-kd")
    assert (st.teacher, st.teacher_model, st.rounds, st.model_name) == ("self-train", "teacher-self-train", 1,
                                                                         "self-train-kd")
    assert load_method("kd").model_name == "distilled" and load_method("pseudo-label").teacher_model == "teacher"
