"""Teachers beyond the run's one: an ensemble's pooling, soft labels from a file (every format round-trips bit for bit;
every bad file is one error naming the file, row and column; a run from `kd teacher-logits`' file trains the very
student the teacher taught), and a student whose vocabulary is not the teacher's, trained from its cached logits."""

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, kd, sample_rows
from scipy.special import softmax

from kd.errors import KdError
from kd.procedures import pool_probabilities
from kd.teacherfile import read_teacher_file, write_teacher_file

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def test_an_ensembles_soft_targets_are_the_mean_of_its_members_probabilities():
    rng = np.random.default_rng(0)
    members = [rng.normal(scale=s, size=(50, 4)).astype(np.float32) for s in (1.0, 3.0, 10.0)]
    pooled = pool_probabilities(members)
    assert pooled.dtype == np.float32 and pooled.shape == (50, 4)
    mean = np.mean([softmax(z.astype(np.float64), axis=-1) for z in members], axis=0)
    np.testing.assert_allclose(softmax(pooled.astype(np.float64), axis=-1), mean, rtol=1e-5, atol=1e-7)
    # one member pools to its own distribution, and the pooling ignores each member's logit offset
    np.testing.assert_allclose(softmax(pool_probabilities(members[:1]), -1), softmax(members[0], -1), atol=1e-6)
    np.testing.assert_allclose(pool_probabilities([members[0] + 7, members[1]]), pool_probabilities(members[:2]),
                               atol=1e-5)


def _texts():
    # real texts, with the commas, quotes and line breaks a csv must carry
    return [t for _, t in sample_rows("train", 30)] + ['a "quoted", comma\nand a line break']


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_teacher_file_round_trips_bit_for_bit_in_every_format(tmp_path, suffix):
    texts = _texts()
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(len(texts), 4)) * np.array([1, 1e-9, 1e7, 3])).astype(np.float32)
    path = tmp_path / f"t{suffix}"
    assert write_teacher_file(path, texts + texts[:2], np.concatenate([logits, logits[:2]]), LABELS) == len(texts)
    back = read_teacher_file(path, texts[::-1], LABELS)  # any order of rows: matched by their text
    assert back.dtype == np.float32 and np.array_equal(back, logits[::-1])


def _csv(path, header, rows):
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_probabilities_read_as_logits_whose_softmax_they_are(tmp_path):
    texts = _texts()[:3]
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.2500004]])
    path = _csv(tmp_path / "p.csv", ["text", *(f"prob:{n}" for n in LABELS)],
                [[t, *(repr(float(x)) for x in p)] for t, p in zip(texts, probs)])
    logits = read_teacher_file(path, texts, LABELS)
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(softmax(logits.astype(np.float64), -1), probs / probs.sum(1, keepdims=True),
                               atol=1e-6)


# each bad file: (what is wrong, how the file is written from good rows, what the one error line says)
def _bad(tmp_path, case):
    texts = _texts()[:4]
    header = ["text", *(f"logit:{n}" for n in LABELS)]
    rows = [[t, 0.5, -1.0, 2.0, 0.0] for t in texts]
    if case == "missing row":
        rows = rows[:-1]
    elif case == "duplicate key":
        rows = rows + [rows[1]]
    elif case == "wrong class count":
        header, rows = header[:-1], [r[:-1] for r in rows]
    elif case == "probabilities off":
        header = ["text", *(f"prob:{n}" for n in LABELS)]
        rows = [[t, 0.5, 0.3, 0.1, 0.05] for t in texts]
    elif case == "nan":
        rows[2][3] = "nan"
    elif case == "infinite":
        rows[1][1] = "inf"
    elif case == "label order":
        header = ["text", "logit:Sports", "logit:World", "logit:Business", "logit:Sci/Tech"]
    elif case == "no key":
        header = ["body", *header[1:]]
    return _csv(tmp_path / "bad.csv", header, rows), texts


BAD_FILES = {
    "missing row": "no row for the students' train row 4",
    "duplicate key": "rows 2 and 5 have the same text",
    "wrong class count": "3 logit columns (World, Sports, Business), expected 4: one per class",
    "probabilities off": "row 1: the prob columns sum to 0.95, expected 1 (within 0.001)",
    "nan": "row 3, column logit:Business: 'nan'; expected a finite number",
    "infinite": "row 2, column logit:World: 'inf'; expected a finite number",
    "label order": "the logit columns name the classes in the order Sports, World, Business, Sci/Tech, but the "
                   "data's order is World, Sports, Business, Sci/Tech",
    "no key": "no key column 'text' (columns: body, logit:World",
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_teacher_file_is_one_error_naming_the_file_row_and_column(tmp_path, case):
    path, texts = _bad(tmp_path, case)
    with pytest.raises(KdError) as err:
        read_teacher_file(path, texts, LABELS)
    assert str(err.value).startswith(f"{path}: ") and BAD_FILES[case] in str(err.value), str(err.value)


@pytest.mark.slow
def test_kd_teacher_logits_then_a_file_taught_run_gives_the_teachers_student_bit_for_bit(smoke_run, tmp_path):
    """The smoke run's teacher written by `kd teacher-logits`, then a run whose kd student learns from that file
    alone (teacher: file; no teacher trained): its weights are the smoke run's distilled student's, bit for bit."""
    out = tmp_path / "teacher.parquet"
    wrote = kd("teacher-logits", "--preset", "smoke", "--run-dir", smoke_run, "--out", out)
    assert wrote.returncode == 0, wrote.stderr[-2000:]
    run = tmp_path / "from-file"
    made = kd("train-all", "--preset", "smoke", "--run-dir", run, "--teacher-logits", out,
              "--set", "methods=[file-kd]")
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    assert json.loads((run / "manifest.json").read_text())["models"] == ["file-kd"]  # no teacher of its own
    mine, theirs = (json.loads((r / "models" / m / "metrics.json").read_text())
                    for r, m in ((run, "file-kd"), (smoke_run, "distilled")))
    assert mine["teacher"] == "teacher-file" and mine["weights_sha256"] == theirs["weights_sha256"]


@pytest.mark.slow
def test_a_student_of_another_vocabulary_learns_from_the_teachers_cached_logits(smoke_run, tmp_path, kd_here,
                                                                               monkeypatch):
    """A WordPiece vocabulary trained on the train split (tokenizers) for a student built from scratch: it trains from
    the smoke teacher's cached logits (the teacher read its own tokens), and its kd loss on a batch is the hand
    computation's; a term on hidden states, which runs the teacher on the student's tokens, stops with both named."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

    from kd.config import load_config
    from kd.run import RunContext
    from kd.run.teachers import teacher_logits
    from kd.trainer import TEACHER_LOGITS, DistillationTrainer

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    cfg = load_config("smoke")
    texts = RunContext(cfg, run).splits.train["text"][:]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer, wordpiece.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=3000, special_tokens=special))
    from tokenizers.processors import TemplateProcessing

    wordpiece.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(tmp_path / "tok")
    settings = ["--set", f"student.tokenizer={tmp_path / 'tok'}", "--set", "student.train.epochs=1"]
    hidden = kd_here("train-all", "--preset", "smoke", "--run-dir", run, "--set", "methods=[kd-hidden]", *settings)
    assert hidden.returncode == 2 and "method kd-hidden: its terms run the teacher on the student's tokens, but the " \
        f"student's tokenizer ({tmp_path / 'tok'}) is not the teacher's (" in hidden.stderr
    made = kd("train-all", "--preset", "smoke", "--run-dir", run, "--set", "methods=[kd]", *settings)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    assert "teacher: already done with this config" in made.stdout and "teacher: logits reused" in made.stdout

    cfg = load_config("smoke", ["methods=[kd]", f"student.tokenizer={tmp_path / 'tok'}", "student.train.epochs=1"])
    ctx = RunContext(cfg, run)
    student = AutoModelForSequenceClassification.from_pretrained(run / "models/distilled", use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(run / "models/distilled")
    teacher_vocab = len(AutoTokenizer.from_pretrained(run / "models/teacher"))
    assert student.config.vocab_size == len(tokenizer) == 3000 != teacher_vocab
    logits, note = teacher_logits(ctx, "teacher")
    assert note == "reused" and logits.shape == (len(ctx.student_train), 4)
    rows = ctx.tokenized("student_train", tokenizer).select(range(8))
    rows = rows.add_column(TEACHER_LOGITS, logits[:8].tolist())
    trainer = DistillationTrainer(model=student, method="kd", temperature=2.0, alpha=0.5, train_dataset=rows,
                                  processing_class=tokenizer, args=_args(tmp_path))
    batch = trainer.data_collator([{k: rows[i][k] for k in ("input_ids", "attention_mask", "label", TEACHER_LOGITS)}
                                   for i in range(8)])
    student.train()  # (the smoke preset's students have no dropout: the same forward twice)
    loss = trainer.compute_loss(student, dict(batch)).item()
    with torch.no_grad():
        z = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double().numpy()
    t, labels, soft = 2.0, batch["labels"].numpy(), logits[:8].astype(np.float64)
    log_s = z / t - np.log(np.exp(z / t).sum(-1, keepdims=True))
    p_t = softmax(soft / t, axis=-1)
    kl = t * t * (p_t * (np.log(p_t) - log_s)).sum(-1).mean()
    ce = -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(8), labels].mean()
    assert loss == pytest.approx(0.5 * ce + 0.5 * kl, rel=1e-5)

    # an ensemble of teachers of two vocabularies: the smoke teacher and a classifier of the WordPiece vocabulary
    # (trained for these labels already, so used as it is), each tokenizing the rows its own way
    from transformers import BertConfig, BertForSequenceClassification

    other = tmp_path / "other-teacher"
    config = BertConfig(vocab_size=3000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=4, id2label=dict(enumerate(LABELS)))
    BertForSequenceClassification(config).save_pretrained(other)
    AutoTokenizer.from_pretrained(tmp_path / "tok").save_pretrained(other)
    recipe = tmp_path / "two-vocabularies.yaml"
    recipe.write_text((REPO / "kd/methods/ensemble-kd.yaml").read_text().replace(
        "members: 5", f"members: 1\nteachers: [{other}]"))
    made = kd("train-all", "--preset", "smoke", "--run-dir", run, "--set", f"methods=[{recipe}]", *settings)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    ensemble = json.loads((run / "models/teacher-ensemble/metrics.json").read_text())
    assert ensemble["members"] == ["teacher", "teacher-member2"] and ensemble["member_models"] == [None, str(other)]
    assert len(AutoTokenizer.from_pretrained(run / "models/teacher-member2")) == 3000 != teacher_vocab
    ctx = RunContext(load_config("smoke", [f"methods=[{recipe}]", *settings[1::2]]), run)
    pooled, _ = teacher_logits(ctx, "teacher-ensemble")
    np.testing.assert_allclose(pooled, pool_probabilities([teacher_logits(ctx, m)[0] for m in ensemble["members"]]))
    assert json.loads((run / "models/two-vocabularies/metrics.json").read_text())["teacher"] == "teacher-ensemble"

    # the input check loads the member of another model and keeps it for the member's stage: loaded once
    from kd.run import context as run_context
    from kd.run.ensemble import check_ensemble, member_config, members, retrained, train_member

    loaded, taken = [], []
    monkeypatch.setattr(run_context, "load_teacher", lambda c, names: loaded.append((c.teacher.model, object())) or
                        loaded[-1][1])
    monkeypatch.setattr("kd.run.teachers.fine_tune", lambda ctx, key, teacher, **kw: taken.append(teacher))
    ctx = RunContext(load_config("smoke", [f"methods=[{recipe}]", *settings[1::2]]), tmp_path / "checked")
    check_ensemble(ctx, need_teacher=True)
    train_member(ctx, "key", members(ctx)[1])
    assert [m for m, _ in loaded] == [str(other)] and taken == [loaded[0][1]]
    # resumed with the member trained: its retraining (the same model and seed) takes what the check kept, and
    # what nothing takes is let go (a study's planning, or a run reaching its students)
    check_ensemble(ctx, need_teacher=True)
    again = member_config(ctx.cfg, retrained(ctx)[1])
    assert ctx.member_teacher(again) is loaded[1][1] and len(loaded) == 2
    check_ensemble(ctx, need_teacher=True)
    ctx.drop_teacher()
    assert ctx.member_teacher(again) is loaded[3][1] and len(loaded) == 4


def _args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(str(tmp_path / "args"), report_to="none", use_cpu=True)


@pytest.mark.slow
def test_self_training_an_ensemble_retrains_each_member_on_the_ensembles_confident_pool_labels(tmp_path):
    """self-train-ensemble with two members at a 200-label budget: each member is retrained on the labelled rows plus
    the pool rows the ensemble labels most confidently (per_class of each class), and the retrained members are
    pooled as the student's teacher."""
    from kd.config import load_config
    from kd.methods import load_method
    from kd.procedures import confident_rows
    from kd.run import RunContext, train_all
    from kd.run.teachers import teacher_logits

    recipe = tmp_path / "st-ens.yaml"
    recipe.write_text((REPO / "kd/methods/self-train-ensemble-kd.yaml").read_text()
                      .replace("members: 5", "members: 2").replace("per_class: 500", "per_class: 50"))
    cfg = load_config("smoke", ["data.labelled_rows=200", "teacher.train.epochs=1", "student.train.epochs=1"])
    run = tmp_path / "run"
    ctx = RunContext(cfg, run, [load_method(str(recipe))])
    train_all(ctx)
    names = json.loads((run / "manifest.json").read_text())["models"]
    retrained = ["teacher-self-train-ensemble-member1", "teacher-self-train-ensemble-member2"]
    assert names == ["teacher", "teacher-member2", "teacher-ensemble", *retrained, "teacher-self-train-ensemble",
                     "st-ens"]
    pooled, _ = teacher_logits(ctx, "teacher-ensemble")
    rows, _ = confident_rows(pooled[ctx.budget.pool_rows], 50)
    for name, seed in zip(retrained, (cfg.teacher.train.seed, cfg.teacher.train.seed + 1)):
        metrics = json.loads((run / "models" / name / "metrics.json").read_text())
        assert metrics["pseudo_labelled_rows"] == len(rows) <= 4 * 50 and metrics["seed"] == seed
    made = json.loads((run / "models/teacher-self-train-ensemble/metrics.json").read_text())
    assert made["members"] == retrained
    # its cost: the retrained members and the ensemble member that labelled their rows (the teacher counts apart)
    seconds = {n: json.loads((run / "models" / n / "metrics.json").read_text())["train_seconds"]
               for n in ("teacher-member2", *retrained)}
    assert made["procedure_seconds"] == pytest.approx(sum(seconds.values()))
    assert json.loads((run / "models/st-ens/metrics.json").read_text())["teacher"] == "teacher-self-train-ensemble"
