"""Students: one per method of the run (kd/methods/), each trained, tested and saved by `train_student`."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from kd.methods import FILE_TEACHER, Method
from kd.run.context import RunContext
from kd.run.fit import fit
from kd.run.teachers import calibration, teacher_logits
from kd.runfolder import TEACHER
from kd.trainer import TEACHER_LOGITS, DistillationTrainer, DistillCollator, PlainTrainer


def train_student(ctx: RunContext, key: str, method: Method) -> dict:
    """The student of one method: its rows, its teacher's logits (temperature-scaled when it calibrates), and
    its terms; a method of cross-entropy alone trains with the plain Trainer, as the baseline always has."""
    name = method.model_name
    model, tokenizer = ctx.new_student()
    students = ctx.tokenized("student_train", tokenizer)
    extra = {"method": method.name, "description": method.description, "teacher": method.teacher_model}
    logits = None
    if method.teacher_model:
        logits, extra["teacher_logits"] = teacher_logits(ctx, method.teacher_model)
        if method.teacher_model in (TEACHER, FILE_TEACHER):  # (a file's labels cost the run nothing)
            extra["procedure_seconds"] = 0.0
            if method.teacher_model == FILE_TEACHER:
                extra.update(teacher_file=ctx.cfg.teacher_logits, teacher_file_sha256=ctx.weights_sha(FILE_TEACHER))
        else:  # what its teacher's procedure cost beyond the run's teacher (an ensemble: its other members)
            made = ctx.run.model_metrics(method.teacher_model)
            extra["procedure_seconds"] = made.get("procedure_seconds", made.get("train_seconds"))
        if method.calibrate:
            cal = calibration(ctx, method.folds)
            logits = logits / np.float32(cal["temperature"])
            extra["calibration"] = cal
            extra["procedure_seconds"] = cal["seconds"]
    budget = ctx.budget
    if method.rows == "labelled":
        train_ds, index = budget.labelled(students), budget.labelled_rows
    elif method.rows == "pseudo-labelled":
        train_ds, chosen = budget.labelled_and_pseudo_labelled(budget.labelled(students), students, logits,
                                                               method.per_class, method.min_confidence)
        index = np.concatenate([budget.labelled_rows, chosen])
        extra["pseudo_labelled_rows"] = len(chosen)
    else:
        train_ds, index = budget.all_rows_pool_unlabelled(students), np.arange(len(students))
    if [(t.term, t.weight) for t in method.terms] == [("ce", 1.0)]:
        trainer_cls, collator, kwargs = PlainTrainer, DataCollatorWithPadding(tokenizer), {}
    else:
        if logits is not None:
            train_ds = train_ds.add_column(TEACHER_LOGITS, logits[index].tolist())
        teacher = None
        if method.online:
            teacher = AutoModelForSequenceClassification.from_pretrained(
                ctx.verified_model(method.teacher_model), use_safetensors=True)
        trainer_cls, collator = DistillationTrainer, DistillCollator(tokenizer)
        kwargs = dict(method=method, teacher_model=teacher, **asdict(ctx.cfg.distill))
        extra.update(temperature=ctx.cfg.distill.temperature, alpha=ctx.cfg.distill.alpha)
    return fit(ctx, name, key, "student", trainer_cls, model, tokenizer, train_ds, collator, extra=extra, **kwargs)
