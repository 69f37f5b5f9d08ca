"""End to end on the smoke preset (through make and the kd command): the run folder, the saved models, stage
reuse, the full preset's code path, fp32 test logits. (Bad input: test_bad_input.py's catalogue.)"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import REPO, kd
from transformers import AutoModelForSequenceClassification, pipeline


def test_make_train_all_smoke_writes_the_run_folder(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["preset"] == "smoke"
    assert set(results["models"]) == {"teacher", "baseline", "distilled"}
    for name, row in results["models"].items():
        for field in ("accuracy", "f1_macro", "f1_weighted"):
            assert 0.0 <= row[field] <= 1.0, (name, field)
        assert row["params"] > 100_000 and row["test_rows"] == 1000
        assert row["nll"] > 0 and 0 <= row["ece"] <= 1 and 0 <= row["brier"] <= 2, name
        assert row["train_seconds"] > 0
    # the teacher learned something real from 2,000 rows of AG News: far above chance (25 %)
    assert results["models"]["teacher"]["accuracy"] > 0.6
    d = results["distillation"]
    assert 0 <= d["mcnemar_baseline_vs_distilled"]["p_value"] <= 1
    assert d["gain_pt"] == pytest.approx(
        100 * (results["models"]["distilled"]["accuracy"] - results["models"]["baseline"]["accuracy"]))
    text = (smoke_run / "results.md").read_text()
    assert "| model | NLL | ECE | Brier |" in text
    # one training run: the report says what its McNemar test covers, and how to ask about training randomness
    assert "not training randomness" in text and "`make train-all SEEDS=3`" in text and "on these test rows" in text
    for f in ("results.md", "confusion_matrices.png", "loss_curves.png", "manifest.json", "test_labels.npy"):
        assert (smoke_run / f).stat().st_size > 0, f
    assert (smoke_run / "confusion_matrices.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["config"]["preset"] == "smoke" and manifest["versions"]["torch"].startswith("2.13.0")
    assert set(manifest["data"]["fingerprints"]) >= {"train", "validation", "test", "student_train"}
    assert {"teacher", "baseline", "distilled", "teacher_logits"} <= set(manifest["stages"])
    assert not (smoke_run / "work" / "teacher").exists(), "checkpoints of finished stages are removed"


def test_saved_models_load_with_plain_transformers(smoke_run):
    labels = np.load(smoke_run / "test_labels.npy")
    for name in ("teacher", "baseline", "distilled"):
        folder = smoke_run / "models" / name
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        assert model.config.id2label[3] == "Sci/Tech"
        clf = pipeline("text-classification", model=str(folder), device="cpu")
        out = clf(["Stocks fell sharply on Wall Street as oil prices rose.", "The team won the final."])
        assert {o["label"] for o in out} <= {"World", "Sports", "Business", "Sci/Tech"}
        logits = np.load(folder / "test_logits.npy")
        assert logits.shape == (len(labels), 4)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).mean()))
    student_tok = json.loads((smoke_run / "models/distilled/tokenizer_config.json").read_text())
    assert "token_type_ids" not in student_tok.get("model_input_names", ["token_type_ids"])


@pytest.mark.slow
def test_rerun_skips_done_stages_and_reuses_caches(smoke_copy, kd_here):
    proc = kd_here("train-all", "--preset", "smoke", "--run-dir", smoke_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("teacher", "baseline", "distilled"):
        assert f"{name}: already done with this config, skipped" in proc.stdout
    before = (smoke_copy / "models/baseline/model.safetensors").stat().st_mtime_ns
    proc = kd("distill", "--preset", "smoke", "--run-dir", smoke_copy, "--set", "distill.temperature=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher: logits reused" in proc.stdout
    assert "tokenize" not in proc.stderr, "tokenized splits come from the cache"
    assert (smoke_copy / "models/baseline/model.safetensors").stat().st_mtime_ns == before
    assert json.loads((smoke_copy / "models/distilled/metrics.json").read_text())["temperature"] == 4


@pytest.mark.slow
def test_train_all_over_two_seeds_pairs_the_students_and_shares_the_teacher(smoke_copy, kd_here):
    """--seeds 2: the run as it was, its students again at the next seed in seeds/, the teacher hard-linked (not
    trained again), and the report's interval over seeds from the two runs' own scores."""
    from kd.seeds import paired_difference, sign_flip_p

    proc = kd_here("train-all", "--preset", "smoke", "--run-dir", smoke_copy, "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    seed = json.loads((smoke_copy / "manifest.json").read_text())["config"]["student"]["train"]["seed"]
    other = smoke_copy / "seeds" / f"seed{seed + 1}"
    assert "baseline: already done with this config, skipped" in proc.stdout  # the run's own students kept
    assert (other / "models/teacher/model.safetensors").stat().st_ino == \
        (smoke_copy / "models/teacher/model.safetensors").stat().st_ino
    assert json.loads((other / "manifest.json").read_text())["config"]["student"]["train"]["seed"] == seed + 1

    def acc(run, m):
        return json.loads((run / "models" / m / "metrics.json").read_text())["accuracy"]

    def sha(run, m):
        return json.loads((run / "models" / m / "metrics.json").read_text())["weights_sha256"]

    assert sha(other, "distilled") != sha(smoke_copy, "distilled")  # another seed, other weights
    o = json.loads((smoke_copy / "results.json").read_text())["over_seeds"]
    assert o["seeds"] == [seed, seed + 1]
    for m in ("baseline", "distilled"):
        assert o["accuracy"][m] == pytest.approx([acc(smoke_copy, m), acc(other, m)])
    base, dist = o["accuracy"]["baseline"], o["accuracy"]["distilled"]
    vs = o["versus_baseline"]["distilled"]
    assert vs["difference"]["mean"] == pytest.approx(paired_difference(base, dist).difference.mean)
    assert vs["p_permutation"] == pytest.approx(sign_flip_p(np.subtract(dist, base)))
    assert f"## Over training seeds (2: {seed}, {seed + 1})" in (smoke_copy / "results.md").read_text()
    assert kd_here("train-all", "--preset", "smoke", "--run-dir", smoke_copy, "--seeds", "0").returncode == 2

    # a seed run made before a key-neutral field existed (no reinit_layers) still counts; one of other settings not
    manifest = other / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["config"]["student"]["train"]["reinit_layers"], m["config"]["teacher"]["train"]["reinit_layers"]
    manifest.write_text(json.dumps(m))
    assert kd_here("report", "--run-dir", smoke_copy).returncode == 0
    assert json.loads((smoke_copy / "results.json").read_text())["over_seeds"]["seeds"] == [seed, seed + 1]
    m["config"]["distill"]["temperature"] += 1
    manifest.write_text(json.dumps(m))
    assert kd_here("report", "--run-dir", smoke_copy).returncode == 0
    o = json.loads((smoke_copy / "results.json").read_text())["over_seeds"]
    assert (o["seeds"], o["other_settings"]) == ([seed], [f"seeds/seed{seed + 1}"])


def test_bench_train_times_cached_and_online_distillation_on_the_same_rows(smoke_copy, kd_here):
    """bench-train's four epochs, the last with the teacher run online by the same DistillationTrainer that the
    methods whose terms need hidden states or attention train with."""
    proc = kd_here("bench-train", "--preset", "smoke", "--run-dir", smoke_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((smoke_copy / "bench" / "train_speed.json").read_text())
    assert set(result["timings"]) == {"baseline_dynamic", "distilled_dynamic", "baseline_padded", "distilled_padded"}
    assert all(t["seconds"] > 0 for t in result["timings"].values())
    assert result["online_distill_over_distill"] == pytest.approx(
        result["timings"]["distilled_padded"]["seconds"] / result["timings"]["distilled_dynamic"]["seconds"])


def test_kd_help_lists_every_verb(kd_here):
    proc = kd_here("--help")
    for verb in ("train-all", "eval-teacher", "train-teacher", "train-baseline", "distill", "report"):
        assert verb in proc.stdout
    sub = kd_here("distill", "--help")
    assert "--set KEY=VALUE" in sub.stdout and "--run-dir" in sub.stdout and sub.returncode == 0


def test_default_preset_follows_the_machine(tmp_path):
    """Also the bad-input contract through a real process (the catalogue runs kd in-process): exit 2, one error
    line, no traceback."""
    proc = kd("report", "--run-dir", tmp_path)  # report on an empty folder: fails, after choosing the preset
    assert "using 'cpu' because no CUDA or MPS device was found" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kd: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "no trained models" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_full_preset_code_path_on_local_stand_ins(small_data, tmp_path):
    """The full preset's settings and stages, pointed at tiny local models of the same architectures."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    from kd.models import resolve_source

    vocab = resolve_source("bundled:all-MiniLM-L6-v2", "tok")
    tok = AutoTokenizer.from_pretrained(vocab)
    # a "trained" BERT teacher whose label order differs from the data's: it must be matched by name
    names = ["Sports", "World", "Sci/Tech", "Business"]
    teacher = tmp_path / "bert-base-uncased-ag_news"
    BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, num_labels=4, id2label=dict(enumerate(names)),
                                             label2id={n: i for i, n in enumerate(names)})).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    student = tmp_path / "distilbert-base-uncased"
    DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)
                                        ).save_pretrained(student)
    tok.save_pretrained(student)
    run = tmp_path / "run"
    proc = kd("train-all", "--preset", "full", "--data", small_data, "--run-dir", run,
              "--set", f"teacher.model={teacher}", "--set", f"student.model={student}",
              "--set", "data.validation_rows=80", "--set", "student.train.epochs=1",
              "--set", "student.train.warmup=5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["preset"] == "full"
    assert results["models"]["teacher"]["train_seconds"] is None, "the full teacher is used as trained"
    assert "reordered" in results["teacher_label_match"] and "Sports 0->1" in results["teacher_label_match"]
    d = results["distillation"]
    assert (d["temperature"], d["alpha"]) == (5.0, 0.5)
    saved = AutoModelForSequenceClassification.from_pretrained(run / "models/teacher")
    assert saved.config.id2label[0] == "World"


def test_make_train_all_nproc_2_passes_the_process_count(tmp_path):
    proc = subprocess.run(["make", "-n", "train-all", "NPROC=2", "PRESET=smoke", f"RUN={tmp_path}"], cwd=REPO,
                          env={**os.environ}, capture_output=True, text=True)
    assert f"kd train-all --preset smoke --run-dir {tmp_path} --nproc 2" in " ".join(proc.stdout.split())


@pytest.mark.slow
def test_saved_test_logits_are_fp32_even_after_bf16_training(smoke_copy):
    """Test numbers are computed in fp32: the saved logits equal a fresh fp32 pass (bf16 would be ~1e-2 off).
    The smoke preset trains in fp32, so the baseline is trained again here in bf16 (a tenth of an epoch, its final
    weights: the test pass after bf16 training is what is checked, not the training)."""
    from transformers import AutoTokenizer

    from engines.inference import logits_over
    from engines.sessions.pytorch import PyTorchEngine
    from kd.runfolder import RunFolder

    shutil.rmtree(smoke_copy / "models/baseline")
    proc = kd("train-baseline", "--preset", "smoke", "--run-dir", smoke_copy, "--set", "student.train.precision=bf16",
              "--set", "student.train.epochs=0.1", "--set", "student.train.select=last",
              "--set", "student.train.evals_per_epoch=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts, _, max_length = RunFolder(smoke_copy).split(None, "test")
    for name in ("teacher", "baseline"):
        folder = smoke_copy / "models" / name
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        fresh = logits_over(PyTorchEngine(model).run, AutoTokenizer.from_pretrained(folder), texts, max_length, 64)
        np.testing.assert_allclose(np.load(folder / "test_logits.npy"), fresh, atol=1e-4)
