"""The stages of a run: the teacher, then one student per method of the run (kd/methods/), then the report.

Every stage reads and writes the run folder only, so each can run again alone on an existing run.
Under torchrun every process runs the same code: the Trainer shares the work (each process takes its
share of every global batch, see kd/trainer.py), and only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from accelerate import PartialState
from datasets import concatenate_datasets
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from kd import cache, manifest
from kd.config import RunConfig
from kd.data import Splits, fingerprint, load_splits, stratified_take
from kd.device import detect_device, resolve_precision
from kd.errors import KdError
from kd.features import length_order, tokenized, tokenizer_fingerprint
from kd.methods import Method, load_method
from kd.metrics import classification_metrics
from kd.models import build_student, count_params, load_teacher
from kd.procedures import confident_rows, fit_temperature, folds, nll
from kd.report import write_report
from kd.resume import resume_point, start_afresh
from kd.runfolder import RunFolder, atomic_dir, sha256_file, write_json, write_npy
from kd.trainer import (
    KD_TERMS,
    TEACHER_LOGITS,
    BatchPlan,
    DistillationTrainer,
    DistillCollator,
    KdTrainer,
    batch_plans,
    compute_metrics,
    early_stopping,
    prediction_arguments,
    training_arguments,
)

SELF_TRAINED = "teacher-self-train"  # the model folder of a self-trained teacher (kd.methods.TEACHER_MODEL)


class Pipeline:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg = cfg
        self.run = RunFolder(Path(run_dir))
        self.device = detect_device()
        # cpu=True is what makes accelerate see a torchrun launch on CPU as multi-process (gloo), not as N copies
        self.state = PartialState(cpu=self.device == "cpu")
        self.precision = resolve_precision(cfg.teacher.train.precision, self.device)
        self.resumed_from: dict[str, str | None] = {}  # stage -> the checkpoint its training resumed from
        self.trained_with: dict[str, BatchPlan] = {}  # stage -> how its batches were split

    # ---- inputs, loaded once and checked before anything is written ----------------------------

    @functools.cached_property
    def splits(self) -> Splits:
        return load_splits(self.cfg.data)

    @functools.cached_property
    def student_train(self):
        rows = self.cfg.student.train_rows
        return stratified_take(self.splits.train, rows, self.cfg.data.seed, what=f"student.train_rows={rows}",
                               where="the train split")

    @functools.cached_property
    def labelled(self) -> np.ndarray | None:
        """Indices of the students' train rows that carry labels under a label budget (None: every row does)."""
        rows, ds = self.cfg.data.labelled_rows, self.student_train
        if rows is None or rows >= len(ds):
            return None
        seed = self.cfg.data.seed if self.cfg.data.labelled_seed is None else self.cfg.data.labelled_seed
        chosen = stratified_take(ds.add_column("row", range(len(ds))), rows, seed,
                                 what=f"data.labelled_rows={rows}", where="the students' train rows")
        return np.sort(chosen["row"])

    def labelled_only(self, tok_ds):
        """The labelled rows of the tokenized students' train rows (all of them without a label budget)."""
        return tok_ds if self.labelled is None else tok_ds.select(self.labelled)

    def pool_unlabelled(self, tok_ds):
        """The tokenized students' train rows with the pool's labels withheld (-100: no cross-entropy term)."""
        if self.labelled is None:
            return tok_ds
        labels = np.full(len(tok_ds), -100, dtype=np.int64)
        labels[self.labelled] = np.asarray(tok_ds["label"])[self.labelled]
        return tok_ds.remove_columns("label").add_column("label", labels.tolist())

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        fps = self.splits.fingerprints()
        fps["student_train"] = fingerprint(self.student_train)
        return fps

    @functools.cached_property
    def teacher(self):
        return load_teacher(self.cfg, self.splits.label_names)

    @functools.cached_property
    def batch_plans(self) -> dict[str, BatchPlan]:
        """Each role's global batches split over this launch's processes (teacher, student)."""
        return batch_plans(self.cfg, self.state.num_processes)

    @property
    def teacher_precision(self) -> str:
        """The precision teachers predict in (their logits, a calibration fold's held-out rows)."""
        return resolve_precision(self.cfg.teacher.train.precision, self.device)

    @property
    def labelled_index(self) -> np.ndarray:
        """The indices of the students' train rows that carry labels (all of them without a label budget)."""
        return np.arange(len(self.student_train)) if self.labelled is None else self.labelled

    @functools.cached_property
    def methods(self) -> list[Method]:
        """The run's methods (config `methods`, recipes in kd/methods/): one student each."""
        if not self.cfg.methods:
            raise KdError("config methods=[]: expected at least one method, e.g. [baseline, kd]")
        found = [load_method(str(name)) for name in self.cfg.methods]
        names = [m.model_name for m in found]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice:
            raise KdError(f"config methods={self.cfg.methods}: two of them train the model {twice!r}")
        if len({(m.rounds, m.per_class, m.min_confidence) for m in found if m.teacher == "self-train"}) > 1:
            raise KdError(f"config methods={self.cfg.methods}: the self-trained teacher is shared, so every "
                          "self-train method needs the same rounds, per_class and min_confidence")
        return found

    @property
    def model_names(self) -> list[str]:
        """The models this run trains, in the order it trains them: the teacher(s), then a student per method."""
        teachers = ["teacher"] + ([SELF_TRAINED] if self.self_train_method else [])
        return teachers + [m.model_name for m in self.methods]

    def method_of(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.model_name == name), None)

    @property
    def self_train_method(self) -> Method | None:
        return next((m for m in self.methods if m.teacher == "self-train"), None)

    def check_inputs(self, need_teacher: bool = True, need_student: bool = True) -> None:
        """Load everything a stage will need so that a user mistake stops the run before any write."""
        self.check_run_folder()
        _ = self.batch_plans
        _ = self.fingerprints
        _ = self.labelled
        _ = self.methods
        if need_teacher:
            _ = self.teacher
            if self.self_train_method and not self.teacher.needs_finetune:
                raise KdError(f"method {self.self_train_method.name}: self-training fine-tunes the teacher, but "
                              f"teacher {self.cfg.teacher.model} is used as trained: set teacher.finetune=always")
        if need_student:
            self.new_student()
        if self.state.is_main_process:
            self.run.check_writable()  # last: a run stopped by a mistake above leaves no new folder behind

    def check_run_folder(self) -> None:
        previous = self.run.read_manifest().get("config", {}).get("preset")
        if previous and previous != self.cfg.preset:
            raise KdError(
                f"run folder {self.run.root} holds a {previous!r} run, not {self.cfg.preset!r}: "
                "pass another --run-dir (or RUN=...)"
            )

    def new_student(self):
        return build_student(self.cfg, self.splits.label_names)

    # ---- helpers ---------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.state.is_main_process:
            print(f"kd: {message}", flush=True)

    def tokenized(self, split: str, tokenizer):
        ds = self.student_train if split == "student_train" else getattr(self.splits, split)
        return tokenized(ds, self.fingerprints[split], tokenizer, self.cfg.data.max_length,
                         self.run.cache_dir("tokenized"), self.state)

    def predict(self, model, tokenizer, tok_ds, precision: str) -> np.ndarray:
        """Logits in the dataset's row order, computed over length-sorted batches."""
        order = length_order(tok_ds)
        args = prediction_arguments(self.run.work_dir("predict"), self.batch_plans["student"], self.device, precision)
        trainer = KdTrainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                            processing_class=tokenizer)
        out = trainer.predict(tok_ds.select(order))
        logits = np.empty_like(out.predictions, dtype=np.float32)
        logits[order] = out.predictions
        return logits

    def stage_key(self, stage: str) -> str:
        """What a stage's result depends on: its config sections, the data's content and, for a student, its recipe
        and the weights of the teacher it learns from. A finished stage with another key is stale. Teachers trained
        on the way are named teacher-<part>: a calibration fold (teacher-fold1) or the self-trained teacher."""
        if stage == "teacher":
            parts = [self.cfg.section_hash("data", "teacher")]
        elif stage.startswith("teacher-"):
            parts = [self.cfg.section_hash("data", "teacher"), stage]
            if stage.startswith(SELF_TRAINED):
                m = self.self_train_method
                parts += [json.dumps([m.rounds, m.per_class, m.min_confidence]), self.teacher_weights_sha("teacher")]
        else:
            method = self.method_of(stage)
            if method is None:
                raise KdError(f"{stage}: not a model of this run (its methods train: {', '.join(self.model_names)})")
            sections = ("data", "teacher.model", "student") if method.teacher == "none" else (
                "data", "teacher", "student", "distill")
            parts = [self.cfg.section_hash(*sections), json.dumps(method.recipe(), sort_keys=True)]
            if method.teacher_model:
                parts.append(self.teacher_weights_sha(method.teacher_model))
        parts.append(json.dumps(self.fingerprints, sort_keys=True))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def teacher_weights_sha(self, name: str = "teacher") -> str:
        metrics = self.run.model_dir(name) / "metrics.json"
        return json.loads(metrics.read_text()).get("weights_sha256", "") if metrics.is_file() else ""

    def is_current(self, stage: str) -> bool:
        metrics = self.run.model_dir(stage) / "metrics.json"
        if not metrics.is_file():
            return False
        try:
            recorded = json.loads(metrics.read_text()).get("stage_key")
        except ValueError:
            return False  # never written by a finished stage (those are written whole): do it again
        if recorded != self.stage_key(stage):
            return False
        self.run.verified_model(stage)  # done, but are the weights still the ones it saved?
        return True

    def train(self, name, role, trainer_cls, model, tokenizer, train_ds, collator, tc=None, **extra):
        """Train `name` with the settings of `role` (teacher or student; `tc`: other settings for it): resumed,
        evaluated, best kept."""
        tc, plan = tc or getattr(self.cfg, role).train, self.batch_plans[role]
        work = self.run.work_dir(name)
        checkpoint, why = resume_point(work, self.stage_key(name))
        self.log(f"{name}: {why}" if checkpoint else f"{name}: training from the start ({why})")
        self.resumed_from[name] = checkpoint.name if checkpoint else None
        if checkpoint is None and self.state.is_main_process:
            start_afresh(work, self.stage_key(name))
        self.state.wait_for_everyone()
        self.trained_with[name] = plan
        args = training_arguments(tc, plan, work, len(train_ds), self.device,
                                  resolve_precision(tc.precision, self.device))
        trainer = trainer_cls(
            model=model, args=args, train_dataset=train_ds, eval_dataset=self.tokenized("validation", tokenizer),
            data_collator=collator, processing_class=tokenizer, compute_metrics=compute_metrics,
            callbacks=early_stopping(tc), **extra,
        )
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        seconds = time.perf_counter() - started
        step = trainer.state.global_step
        evaluated = {h["step"] for h in trainer.state.log_history if "eval_accuracy" in h}
        if tc.select == "last" and tc.evals_per_epoch and step not in evaluated:
            trainer.evaluate()  # the final weights' validation accuracy, for the record (it chooses nothing)
        self.log(f"{name}: trained on {len(train_ds)} rows in {seconds:.0f} s ({step} steps, "
                 f"{step * plan.global_batch / seconds:.1f} examples/s; global batch {plan.global_batch} = "
                 f"{plan.world_size} x {plan.per_process_batch}); "
                 + (f"best validation checkpoint {trainer.state.best_model_checkpoint}" if tc.select == "best"
                    else f"kept the final weights (step {step})"))
        # bf16/fp16 training wraps the model's forward in autocast in place; without unwrapping, the "fp32"
        # test predictions that follow would still run in bf16 (2e-2 off, a few predictions different)
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        if hasattr(model, KD_TERMS):  # a term's projection trained beside the student, not part of it
            delattr(model, KD_TERMS)
        return model, seconds, trainer.state.log_history

    def finish(self, name, model, tokenizer, seconds, log_history, extra=None) -> dict:
        """Evaluate on test (fp32), then write the model folder whole: weights, tokenizer, metrics."""
        model.eval()
        test = self.tokenized("test", tokenizer)
        started = time.perf_counter()
        logits = self.predict(model, tokenizer, test, "fp32")
        labels = np.asarray(test["label"])
        metrics = classification_metrics(logits, labels, self.splits.label_names)
        evals = [h["eval_accuracy"] for h in log_history if "eval_accuracy" in h]
        plan = self.trained_with.get(name)  # None for a teacher used as trained
        kept = getattr(self.cfg, "teacher" if name.startswith("teacher") else "student").train.select
        chosen = (max(evals) if kept == "best" else evals[-1]) if evals else None  # of the weights kept
        metrics.update(
            params=count_params(model), train_seconds=seconds, eval_seconds=time.perf_counter() - started,
            validation_accuracy=chosen, selected_by=kept if seconds is not None else None,
            stage_key=self.stage_key(name),
            resumed_from=self.resumed_from.get(name), batch=plan.as_dict() if plan else None, **(extra or {}),
        )
        if self.state.is_main_process:
            with atomic_dir(self.run.model_dir(name)) as tmp:
                model.save_pretrained(tmp)
                tokenizer.model_max_length = self.cfg.data.max_length  # users of the folder truncate the same
                tokenizer.save_pretrained(tmp)
                metrics["size_mb"] = (tmp / "model.safetensors").stat().st_size / 2**20
                metrics["weights_sha256"] = sha256_file(tmp / "model.safetensors")
                write_npy(tmp / "test_logits.npy", logits)
                write_json(tmp / "log_history.json", log_history)
                write_json(tmp / "metrics.json", metrics)
            write_npy(self.run.root / "test_labels.npy", labels)
            shutil.rmtree(self.run.work_dir(name), ignore_errors=True)
            manifest.record_stage(self.run, name, seconds, metrics)
        self.state.wait_for_everyone()
        self.log(f"{name}: test accuracy {metrics['accuracy']:.2%}, macro-F1 {metrics['f1_macro']:.4f}, "
                 f"{metrics['params']:,} params")
        return metrics

    # ---- stages ----------------------------------------------------------------------------------

    def teacher_rows(self, tokenizer):
        """The rows a teacher fine-tunes on: under a label budget the labels the students see (all the students' rows
        when the budget covers them: a study's full budget), else the whole train split."""
        return (self.tokenized("train", tokenizer) if self.cfg.data.labelled_rows is None
                else self.labelled_only(self.tokenized("student_train", tokenizer)))

    def stage_teacher(self, allow_finetune: bool = True) -> dict:
        t = self.teacher
        self.log(f"teacher: {self.cfg.teacher.model or 'built from teacher.arch'}; labels: {t.label_match}")
        if t.needs_finetune and not allow_finetune:
            raise KdError(f"teacher {self.cfg.teacher.model}: not trained for these labels; run `kd train-teacher`")
        seconds, history, model = None, [], t.model
        if t.needs_finetune:
            model, seconds, history = self.train(
                "teacher", "teacher", KdTrainer, t.model, t.tokenizer, self.teacher_rows(t.tokenizer),
                DataCollatorWithPadding(t.tokenizer),
            )
        return self.finish("teacher", model, t.tokenizer, seconds, history,
                           {"label_match": t.label_match, "fine_tuned": t.needs_finetune})

    def pool(self) -> np.ndarray:
        """The students' train rows whose labels are withheld (none without a label budget)."""
        return np.setdiff1d(np.arange(len(self.student_train)), self.labelled_index)

    def pseudo_labelled(self, base, tok_students, logits: np.ndarray, method: Method) -> tuple:
        """`base` (labelled rows) plus the pool rows of `tok_students` that the teacher (`logits` over the students'
        rows) labels most confidently, with its labels: the dataset and the chosen pool rows. No pool label is
        read."""
        pool = self.pool()
        rows, labels = confident_rows(logits[pool], method.per_class, method.min_confidence)
        chosen = pool[rows]
        def relabel(ds, values):
            # in memory: flattening a selection of a cached dataset would write into the cache's folder
            ds = ds.flatten_indices(keep_in_memory=True) if ds._indices is not None else ds
            return ds.remove_columns("label").add_column("label", [int(v) for v in values])

        extra = relabel(tok_students.select(chosen), labels)
        return concatenate_datasets([relabel(base, base["label"]), extra]), chosen

    def stage_self_train(self) -> dict:
        """The self-trained teacher: fine-tuned anew from the teacher's starting weights on its labelled rows plus the
        pool rows the previous round's teacher (round 1: the fine-tuned teacher) labels most confidently, with
        those labels, for `rounds` rounds. Only the last round is kept."""
        method = self.self_train_method
        logits, _ = self.teacher_logits("teacher")
        seconds_total = 0.0
        for r in range(1, method.rounds + 1):
            last = r == method.rounds
            name = SELF_TRAINED if last else f"{SELF_TRAINED}-round{r}"
            t = load_teacher(self.cfg, self.splits.label_names)
            rows, chosen = self.pseudo_labelled(self.teacher_rows(t.tokenizer),
                                                self.tokenized("student_train", t.tokenizer), logits, method)
            self.log(f"{name}: round {r} of {method.rounds}: {len(chosen)} pool rows with the teacher's labels "
                     f"beside {len(rows) - len(chosen)} labelled ones")
            model, seconds, history = self.train(name, "teacher", KdTrainer, t.model, t.tokenizer, rows,
                                                 DataCollatorWithPadding(t.tokenizer))
            seconds_total += seconds
            if not last:
                logits = self.predict(model.eval(), t.tokenizer, self.tokenized("student_train", t.tokenizer),
                                      self.teacher_precision)
                shutil.rmtree(self.run.work_dir(name), ignore_errors=True)
        return self.finish(SELF_TRAINED, model, t.tokenizer, seconds_total, history,
                           {"label_match": self.teacher.label_match, "fine_tuned": True, "rounds": method.rounds,
                            "pseudo_labelled_rows": len(chosen)})

    def calibration(self, folds_k: int) -> dict:
        """The temperature that calibrates the fine-tuned teacher's logits, fitted by NLL on logits of labelled rows
        that the model scoring them never trained on: cross-fitted, each of `folds_k` folds of the teacher's rows
        scored by a teacher trained as the teacher is on the other folds (a teacher used as trained scores its rows
        directly: it trained on none of them). Only the budget's labels are read. Cached, bound to the teacher."""
        made_from = {"teacher": self.stage_key("teacher"), "weights": self.teacher_weights_sha("teacher"),
                     "folds": folds_k}
        path = self.run.cache_dir("calibration") / f"{cache.key(made_from)}.fit.json"
        record = path.with_name(f"{cache.key(made_from)}.json")
        why = cache.mismatch(record, made_from, [path])
        if why is None:
            return json.loads(path.read_text())
        if path.exists():
            self.log(f"calibration cache {path} not used: {why}; fitting it again")
        started = time.perf_counter()
        precision = self.teacher_precision
        tokenizer = self.teacher.tokenizer
        rows = self.teacher_rows(tokenizer)
        labels = np.asarray(rows["label"])
        if not self.teacher.needs_finetune:
            model = AutoModelForSequenceClassification.from_pretrained(self.run.verified_model("teacher"),
                                                                       use_safetensors=True)
            logits = self.predict(model.eval(), tokenizer, rows, precision)
            how = "the teacher's own logits (it trained on none of these rows)"
        else:
            logits = np.zeros((len(rows), len(self.splits.label_names)), dtype=np.float32)
            # as many passes over its rows as the teacher makes over its own: a step floor (min_steps) is scaled
            # to the fold teacher's share, or it would see each row folds/(folds - 1) times as often, and be more
            # (over)confident than the teacher it stands in for
            tc = self.cfg.teacher.train
            tc = dataclasses.replace(tc, min_steps=math.ceil(tc.min_steps * (folds_k - 1) / folds_k))
            for k, held in enumerate(folds(len(rows), folds_k, self.cfg.data.seed), 1):
                name = f"teacher-fold{k}"
                t = load_teacher(self.cfg, self.splits.label_names)
                model, _, _ = self.train(name, "teacher", KdTrainer, t.model, tokenizer,
                                         rows.select(np.setdiff1d(np.arange(len(rows)), held)),
                                         DataCollatorWithPadding(tokenizer), tc=tc)
                logits[held] = self.predict(model.eval(), tokenizer, rows.select(held), precision)
                shutil.rmtree(self.run.work_dir(name), ignore_errors=True)
            how = f"out-of-fold logits of {folds_k} teachers cross-fitted on the teacher's rows"
        temperature = fit_temperature(logits, labels)
        found = {"temperature": temperature, "rows": len(labels), "folds": folds_k, "fitted_on": how,
                 "nll_before": nll(logits, labels, 1.0), "nll_after": nll(logits, labels, temperature),
                 "seconds": time.perf_counter() - started}
        self.log(f"calibration: T = {temperature:.3f} from {how} (NLL {found['nll_before']:.3f} -> "
                 f"{found['nll_after']:.3f}) in {found['seconds']:.0f} s")
        if self.state.is_main_process:
            write_json(path, found)
            cache.write_record(record, made_from, [path])  # last: a temperature without a record is never used
        self.state.wait_for_everyone()
        return found

    def stage_student(self, method: Method) -> dict:
        """The student of one method: its rows, its teacher's logits (temperature-scaled when it calibrates), and
        its terms; a method of cross-entropy alone trains with the plain Trainer, as the baseline always has."""
        name = method.model_name
        model, tokenizer = self.new_student()
        students = self.tokenized("student_train", tokenizer)
        extra = {"method": method.name, "description": method.description, "teacher": method.teacher_model}
        logits = None
        if method.teacher_model:
            logits, extra["teacher_logits"] = self.teacher_logits(method.teacher_model)
            extra["procedure_seconds"] = self.run.model_metrics(method.teacher_model).get("train_seconds") \
                if method.teacher_model != "teacher" else 0.0
            if method.calibrate:
                cal = self.calibration(method.folds)
                logits = logits / np.float32(cal["temperature"])
                extra["calibration"] = cal
                extra["procedure_seconds"] = cal["seconds"]
        if method.rows == "labelled":
            train_ds, index = self.labelled_only(students), self.labelled_index
        elif method.rows == "pseudo-labelled":
            train_ds, chosen = self.pseudo_labelled(self.labelled_only(students), students, logits, method)
            index = np.concatenate([self.labelled_index, chosen])
            extra["pseudo_labelled_rows"] = len(chosen)
        else:
            train_ds, index = self.pool_unlabelled(students), np.arange(len(students))
        if [(t.term, t.weight) for t in method.terms] == [("ce", 1.0)]:
            trainer_cls, collator, kwargs = KdTrainer, DataCollatorWithPadding(tokenizer), {}
        else:
            if logits is not None:
                train_ds = train_ds.add_column(TEACHER_LOGITS, logits[index].tolist())
            teacher = None
            if method.online:
                teacher = AutoModelForSequenceClassification.from_pretrained(
                    self.run.verified_model(method.teacher_model), use_safetensors=True)
            trainer_cls, collator = DistillationTrainer, DistillCollator(tokenizer)
            kwargs = dict(method=method, teacher_model=teacher, **asdict(self.cfg.distill))
            extra.update(temperature=self.cfg.distill.temperature, alpha=self.cfg.distill.alpha)
        model, seconds, history = self.train(name, "student", trainer_cls, model, tokenizer, train_ds, collator,
                                             **kwargs)
        return self.finish(name, model, tokenizer, seconds, history, extra)

    def stage_baseline(self) -> dict:
        return self.stage_student(self.method_of("baseline") or load_method("baseline"))

    def stage_distill(self) -> dict:
        return self.stage_student(self.method_of("distilled") or load_method("kd"))

    def teacher_logits(self, name: str = "teacher") -> tuple[np.ndarray, str]:
        """A teacher's logits over the students' train rows, cached and bound to its weights + data + tokenizer."""
        folder = self.run.verified_model(name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        made_from = {"teacher_weights": self.teacher_weights_sha(name), "data": self.fingerprints["student_train"],
                     "tokenizer": tokenizer_fingerprint(tokenizer, self.cfg.data.max_length),
                     "shape": [len(self.student_train), len(self.splits.label_names)]}
        path = self.run.cache_dir("teacher_logits") / f"{cache.key(made_from)}.npy"
        record = path.with_suffix(".json")
        why = cache.mismatch(record, made_from, [path])
        if why is None:
            self.log(f"{name}: logits reused from {path}")
            return np.load(path, allow_pickle=False), "reused"
        if path.exists():
            self.log(f"{name}: logits cache {path} not used: {why}; computing them again")
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
        started = time.perf_counter()
        precision = self.teacher_precision
        logits = self.predict(model, tokenizer, self.tokenized("student_train", tokenizer), precision)
        seconds = time.perf_counter() - started
        self.log(f"{name}: logits for {len(logits)} rows in {seconds:.0f} s ({precision})")
        if self.state.is_main_process:
            write_npy(path, logits)
            cache.write_record(record, made_from, [path])  # last: logits without a record are never used
            manifest.record_stage(self.run, f"{name}_logits", seconds, {})
        self.state.wait_for_everyone()
        return logits, f"computed in {seconds:.0f} s"

    def train_all(self, force: bool = False) -> None:
        self.check_inputs()
        names = self.model_names
        # up front (each model's weights hashed once): a finished model whose weights changed stops the run
        # before any write
        current = {name: not force and self.is_current(name) for name in names}
        manifest.start(self, "train-all")
        if self.state.is_main_process:
            self.run.update_manifest(models=names)
        retrained = False
        for name in names:
            if retrained and not force:
                current[name] = self.is_current(name)  # its key may hold a teacher's weights, just retrained
            if current[name]:
                self.log(f"{name}: already done with this config, skipped ({self.run.model_dir(name)})")
                continue
            if name == "teacher":
                self.stage_teacher()
            elif name == SELF_TRAINED:
                self.stage_self_train()
            else:
                self.stage_student(self.method_of(name))
            retrained = True
        if self.state.is_main_process:
            write_report(self.run)
