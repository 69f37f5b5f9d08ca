"""Teacher procedures: what a teacher is before it teaches. Each is one function of (run, stage key) that trains, tests
and saves its model folder, and one row of kd.run.stages.TEACHERS. Fine-tuning makes the run's `teacher`;
self-training makes `teacher-self-train` from it. Beside them, what students read of a teacher: its logits over
the students' rows and the temperature that calibrates them, both cached and bound to its weights."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from kd import manifest
from kd.atomic import write_json
from kd.cache import cached
from kd.config import TrainConfig
from kd.errors import KdError
from kd.features import tokenizer_fingerprint
from kd.methods import FILE_TEACHER, Method
from kd.models import Teacher, load_teacher
from kd.procedures import fit_temperature, folds, nll, pool_probabilities
from kd.run.context import RunContext
from kd.run.fit import Trained, predict, score_test_and_save, train
from kd.run.keys import teacher_key
from kd.run.rows import teacher_rows
from kd.runfolder import TEACHER, is_teacher, write_npy
from kd.teacherfile import write_teacher_file
from kd.trainer import PlainTrainer

SELF_TRAINED = "teacher-self-train"  # the model folder of a self-trained teacher (kd.methods.Method.teacher_model)


def fine_tune(ctx: RunContext, key: str, allow_finetune: bool = True, teacher: Teacher | None = None,
              name: str = TEACHER, tc: TrainConfig | None = None, extra: dict | None = None) -> dict:
    """The run's teacher (or another, `teacher`, saved as `name`, trained with `tc`: an ensemble's member):
    fine-tuned on its rows when it needs it (teacher.finetune), else used as trained; then tested and saved."""
    t = teacher or ctx.teacher
    ctx.log(f"{name}: {(extra or {}).get('model', ctx.cfg.teacher.model) or 'built from teacher.arch'}; "
            f"labels: {t.label_match}")
    if t.needs_finetune and not allow_finetune:
        raise KdError(f"teacher {ctx.cfg.teacher.model}: not trained for these labels; run `kd train-teacher`")
    trained = Trained(t.model, "teacher")
    if t.needs_finetune:
        trained = train(ctx, name, key, "teacher", PlainTrainer, t.model, t.tokenizer,
                        teacher_rows(ctx, t.tokenizer), DataCollatorWithPadding(t.tokenizer), tc=tc)
    return score_test_and_save(ctx, name, key, trained, t.tokenizer,
                               {"label_match": t.label_match, "fine_tuned": t.needs_finetune, **(extra or {})})


# ---- self-training ------------------------------------------------------------------------------

def self_train_method(ctx: RunContext) -> Method:
    """The settings of self-training: those of the first method that learns from the self-trained teacher."""
    return next(m for m in ctx.methods if m.teacher_model == SELF_TRAINED)


def self_train_key(ctx: RunContext, name: str = SELF_TRAINED) -> str:
    """The key of the self-trained teacher (or of one of its rounds, `name`): its settings and the weights of the
    fine-tuned teacher that labels its first round."""
    m = self_train_method(ctx)
    return teacher_key(ctx, name, (json.dumps([m.rounds, m.per_class, m.min_confidence]), ctx.weights_sha(TEACHER)))


def check_self_train(ctx: RunContext, need_teacher: bool) -> None:
    users = [m for m in ctx.methods if m.teacher_model == SELF_TRAINED]
    if len({(m.rounds, m.per_class, m.min_confidence) for m in users}) > 1:
        raise KdError(f"config methods={ctx.cfg.methods}: the self-trained teacher is shared, so every "
                      "self-train method needs the same rounds, per_class and min_confidence")
    if need_teacher and not ctx.teacher.needs_finetune:
        raise KdError(f"method {users[0].name}: self-training fine-tunes the teacher, but "
                      f"teacher {ctx.cfg.teacher.model} is used as trained: set teacher.finetune=always")


def self_train(ctx: RunContext, key: str) -> dict:
    """The self-trained teacher: fine-tuned anew from the teacher's starting weights on its labelled rows plus the
    pool rows the previous round's teacher (round 1: the fine-tuned teacher) labels most confidently, with
    those labels, for `rounds` rounds. Only the last round is kept."""
    method = self_train_method(ctx)
    logits, _ = teacher_logits(ctx, TEACHER)
    seconds_total = 0.0
    for r in range(1, method.rounds + 1):
        last = r == method.rounds
        name = SELF_TRAINED if last else f"{SELF_TRAINED}-round{r}"
        t = load_teacher(ctx.cfg, ctx.splits.label_names)
        trained, chosen = fine_tune_with_pool_labels(ctx, name, key if last else self_train_key(ctx, name), t,
                                                     logits, method, "the teacher's", f"round {r} of {method.rounds}: ")
        seconds_total += trained.seconds
        if not last:
            logits = predict(ctx, trained.model.eval(), t.tokenizer, ctx.tokenized("student_train", t.tokenizer),
                             ctx.teacher_precision)
            shutil.rmtree(ctx.run.work_dir(name), ignore_errors=True)
    return score_test_and_save(ctx, SELF_TRAINED, key, dataclasses.replace(trained, seconds=seconds_total),
                               t.tokenizer, {"label_match": ctx.teacher.label_match, "fine_tuned": True,
                                             "rounds": method.rounds, "pseudo_labelled_rows": chosen})


def fine_tune_with_pool_labels(ctx: RunContext, name: str, key: str, t: Teacher, logits: np.ndarray,
                               method: Method, whose: str, note: str = "",
                               tc: TrainConfig | None = None) -> tuple[Trained, int]:
    """Teacher `t` (its starting weights) fine-tuned on the labelled rows plus the pool rows that `logits` (a
    teacher's over the students' rows) label most confidently, with those labels (method.per_class of each class at
    least method.min_confidence; no pool label is read): self-training's round, and an ensemble member's retraining.
    The model as trained and how many pool rows it took."""
    base, students = teacher_rows(ctx, t.tokenizer), ctx.tokenized("student_train", t.tokenizer)
    rows, chosen = ctx.budget.labelled_and_pseudo_labelled(base, students, logits, method.per_class,
                                                           method.min_confidence)
    ctx.log(f"{name}: {note}{len(chosen)} pool rows with {whose} labels beside {len(rows) - len(chosen)} labelled "
            "ones")
    trained = train(ctx, name, key, "teacher", PlainTrainer, t.model, t.tokenizer, rows,
                    DataCollatorWithPadding(t.tokenizer), tc=tc)
    return trained, len(chosen)


# ---- what students read of a teacher ------------------------------------------------------------

def teacher_logits(ctx: RunContext, name: str = TEACHER) -> tuple[np.ndarray, str]:
    """A teacher's logits over the students' train rows, cached and bound to its weights + data + tokenizer (an
    ensemble's: its members' pooled; a file teacher's: read from the file); and a note: reused, or how long they
    took."""
    if name == FILE_TEACHER:
        return ctx.file_teacher[0], f"read from {ctx.cfg.teacher_logits}"
    folder = ctx.verified_model(name)
    found = ctx.run.members(name)
    if found:
        parts = [teacher_logits(ctx, member) for member in found]
        return pool_probabilities([logits for logits, _ in parts]), "; ".join(
            f"{member}: {note}" for member, (_, note) in zip(found, parts))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    made_from = {"teacher_weights": ctx.weights_sha(name), "data": ctx.fingerprints["student_train"],
                 "tokenizer": tokenizer_fingerprint(tokenizer, ctx.cfg.data.max_length),
                 "shape": [len(ctx.student_train), len(ctx.splits.label_names)]}
    took = {}

    def compute() -> np.ndarray:
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
        started = time.perf_counter()
        logits = predict(ctx, model, tokenizer, ctx.tokenized("student_train", tokenizer), ctx.teacher_precision)
        took["seconds"] = seconds = time.perf_counter() - started
        ctx.log(f"{name}: logits for {len(logits)} rows in {seconds:.0f} s ({ctx.teacher_precision})")
        if ctx.state.is_main_process:
            manifest.record_stage(ctx.run, f"{name}_logits", seconds, {})
        return logits

    logits, why = cached(ctx.run.cache_dir("teacher_logits"), made_from, compute,
                         save=lambda values, entry: write_npy(entry / "logits.npy", values),
                         load=lambda entry: np.load(entry / "logits.npy", allow_pickle=False), state=ctx.state)
    if why is None:
        ctx.log(f"{name}: logits reused from the cache")
        return logits, "reused"
    return logits, f"computed in {took['seconds']:.0f} s"


def write_teacher_logits(ctx: RunContext, name: str, out) -> None:
    """`kd teacher-logits`: a finished teacher's logits over the students' train rows, written as a file that a
    method with teacher: file reads back (kd/teacherfile.py)."""
    if not is_teacher(name) or name == FILE_TEACHER:
        raise KdError(f"--model {name}: expected a teacher of the run (teacher, teacher-ensemble, ...)")
    if not (ctx.run.model_dir(name) / "metrics.json").is_file():
        raise KdError(f"--model {name}: not trained in {ctx.run.root} (run `kd train-all` first)")
    logits, _ = teacher_logits(ctx, name)
    rows = write_teacher_file(out, ctx.student_train["text"][:], logits, ctx.splits.label_names)
    ctx.log(f"{name}: logits of {rows} student rows written to {out}")


def calibration(ctx: RunContext, folds_k: int) -> dict:
    """The temperature that calibrates the fine-tuned teacher's logits, fitted by NLL on logits of labelled rows
    that the model scoring them never trained on: cross-fitted, each of `folds_k` folds of the teacher's rows
    scored by a teacher trained as the teacher is on the other folds (a teacher used as trained scores its rows
    directly: it trained on none of them). Only the budget's labels are read. Cached, bound to the teacher."""
    made_from = {"teacher": teacher_key(ctx), "weights": ctx.weights_sha(TEACHER), "folds": folds_k}
    found, _ = cached(ctx.run.cache_dir("calibration"), made_from, lambda: fit_calibration(ctx, folds_k),
                      save=lambda fit, entry: write_json(entry / "calibration.json", fit),
                      load=lambda entry: json.loads((entry / "calibration.json").read_text()), state=ctx.state)
    return found


def fit_calibration(ctx: RunContext, folds_k: int) -> dict:
    started = time.perf_counter()
    tokenizer = ctx.teacher.tokenizer
    rows = teacher_rows(ctx, tokenizer)
    labels = np.asarray(rows["label"])
    if not ctx.teacher.needs_finetune:
        model = AutoModelForSequenceClassification.from_pretrained(ctx.verified_model(TEACHER),
                                                                   use_safetensors=True)
        logits = predict(ctx, model.eval(), tokenizer, rows, ctx.teacher_precision)
        how = "the teacher's own logits (it trained on none of these rows)"
    else:
        logits = np.zeros((len(rows), len(ctx.splits.label_names)), dtype=np.float32)
        # as many passes over its rows as the teacher makes over its own: a step floor (min_steps) is scaled
        # to the fold teacher's share, or it would see each row folds/(folds - 1) times as often, and be more
        # (over)confident than the teacher it stands in for
        tc = ctx.cfg.teacher.train
        tc = dataclasses.replace(tc, min_steps=math.ceil(tc.min_steps * (folds_k - 1) / folds_k))
        for k, held in enumerate(folds(len(rows), folds_k, ctx.cfg.data.seed), 1):
            name = f"teacher-fold{k}"
            t = load_teacher(ctx.cfg, ctx.splits.label_names)
            trained = train(ctx, name, teacher_key(ctx, name), "teacher", PlainTrainer, t.model, tokenizer,
                            rows.select(np.setdiff1d(np.arange(len(rows)), held)),
                            DataCollatorWithPadding(tokenizer), tc=tc)
            logits[held] = predict(ctx, trained.model.eval(), tokenizer, rows.select(held), ctx.teacher_precision)
            shutil.rmtree(ctx.run.work_dir(name), ignore_errors=True)
        how = f"out-of-fold logits of {folds_k} teachers cross-fitted on the teacher's rows"
    temperature = fit_temperature(logits, labels)
    found = {"temperature": temperature, "rows": len(labels), "folds": folds_k, "fitted_on": how,
             "nll_before": nll(logits, labels, 1.0), "nll_after": nll(logits, labels, temperature),
             "seconds": time.perf_counter() - started}
    ctx.log(f"calibration: T = {temperature:.3f} from {how} (NLL {found['nll_before']:.3f} -> "
            f"{found['nll_after']:.3f}) in {found['seconds']:.0f} s")
    return found
