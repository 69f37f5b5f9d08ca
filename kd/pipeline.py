"""The stages of a run: teacher, baseline student, distilled student, report.

Every stage reads and writes the run folder only, so each can run again alone on an existing run.
Under torchrun every process runs the same code: the Trainer shares the work (each process takes its
share of every global batch, see kd/trainer.py), and only the main process writes files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from kd import cache, manifest
from kd.config import RunConfig
from kd.data import Splits, fingerprint, load_splits, stratified_take
from kd.device import detect_device, resolve_precision
from kd.errors import KdError
from kd.features import length_order, tokenized, tokenizer_fingerprint
from kd.metrics import classification_metrics
from kd.models import build_student, count_params, load_teacher
from kd.report import write_report
from kd.resume import resume_point, start_afresh
from kd.runfolder import MODEL_NAMES, RunFolder, atomic_dir, sha256_file, write_json, write_npy
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

STAGE_SECTIONS = {
    "teacher": ("data", "teacher"),
    "baseline": ("data", "teacher.model", "student"),
    "distilled": ("data", "teacher", "student", "distill"),
}


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

    def check_inputs(self, need_teacher: bool = True, need_student: bool = True) -> None:
        """Load everything a stage will need so that a user mistake stops the run before any write."""
        self.check_run_folder()
        _ = self.batch_plans
        _ = self.fingerprints
        _ = self.labelled
        if need_teacher:
            _ = self.teacher
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
        """What a stage's result depends on: its config sections, the data's content and, for the distilled
        student, the teacher's weights. A finished stage with another key is stale."""
        parts = [self.cfg.section_hash(*STAGE_SECTIONS[stage]), json.dumps(self.fingerprints, sort_keys=True)]
        if stage == "distilled":
            parts.append(self.teacher_weights_sha())
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def teacher_weights_sha(self) -> str:
        metrics = self.run.model_dir("teacher") / "metrics.json"
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

    def train(self, name, role, trainer_cls, model, tokenizer, train_ds, collator, **extra):
        """Train `name` with the settings of `role` (teacher or student): resumed, evaluated, best kept."""
        tc, plan = getattr(self.cfg, role).train, self.batch_plans[role]
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
        kept = getattr(self.cfg, "teacher" if name == "teacher" else "student").train.select
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

    def stage_teacher(self, allow_finetune: bool = True) -> dict:
        t = self.teacher
        self.log(f"teacher: {self.cfg.teacher.model or 'built from teacher.arch'}; labels: {t.label_match}")
        if t.needs_finetune and not allow_finetune:
            raise KdError(f"teacher {self.cfg.teacher.model}: not trained for these labels; run `kd train-teacher`")
        seconds, history, model = None, [], t.model
        if t.needs_finetune:
            # under a label budget the teacher sees only the labels the students see (all the students' rows
            # when the budget covers them: a study's full budget), else the whole train split
            rows = (self.tokenized("train", t.tokenizer) if self.cfg.data.labelled_rows is None
                    else self.labelled_only(self.tokenized("student_train", t.tokenizer)))
            model, seconds, history = self.train(
                "teacher", "teacher", KdTrainer, t.model, t.tokenizer, rows, DataCollatorWithPadding(t.tokenizer),
            )
        return self.finish("teacher", model, t.tokenizer, seconds, history,
                           {"label_match": t.label_match, "fine_tuned": t.needs_finetune})

    def stage_baseline(self) -> dict:
        model, tokenizer = self.new_student()
        model, seconds, history = self.train(
            "baseline", "student", KdTrainer, model, tokenizer,
            self.labelled_only(self.tokenized("student_train", tokenizer)),
            DataCollatorWithPadding(tokenizer),
        )
        return self.finish("baseline", model, tokenizer, seconds, history)

    def stage_distill(self) -> dict:
        logits, cache_note = self.teacher_logits()
        model, tokenizer = self.new_student()
        train_ds = self.pool_unlabelled(self.tokenized("student_train", tokenizer)).add_column(
            TEACHER_LOGITS, logits.tolist())
        model, seconds, history = self.train(
            "distilled", "student", DistillationTrainer, model, tokenizer, train_ds, DistillCollator(tokenizer),
            method="kd", **asdict(self.cfg.distill),
        )
        return self.finish("distilled", model, tokenizer, seconds, history,
                           {"temperature": self.cfg.distill.temperature, "alpha": self.cfg.distill.alpha,
                            "teacher_logits": cache_note})

    def teacher_logits(self) -> tuple[np.ndarray, str]:
        """Teacher logits over the students' train rows, cached and bound to teacher weights + data + tokenizer."""
        folder = self.run.verified_model("teacher")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        made_from = {"teacher_weights": self.teacher_weights_sha(), "data": self.fingerprints["student_train"],
                     "tokenizer": tokenizer_fingerprint(tokenizer, self.cfg.data.max_length),
                     "shape": [len(self.student_train), len(self.splits.label_names)]}
        key = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:16]
        path = self.run.cache_dir("teacher_logits") / f"{key}.npy"
        record = path.with_suffix(".json")
        why = cache.mismatch(record, made_from, [path])
        if why is None:
            self.log(f"distilled: teacher logits reused from {path}")
            return np.load(path, allow_pickle=False), "reused"
        if path.exists():
            self.log(f"distilled: teacher logits cache {path} not used: {why}; computing them again")
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
        started = time.perf_counter()
        precision = resolve_precision(self.cfg.teacher.train.precision, self.device)
        logits = self.predict(model, tokenizer, self.tokenized("student_train", tokenizer), precision)
        seconds = time.perf_counter() - started
        self.log(f"distilled: teacher logits for {len(logits)} rows in {seconds:.0f} s ({precision})")
        if self.state.is_main_process:
            write_npy(path, logits)
            cache.write_record(record, made_from, [path])  # last: logits without a record are never used
            manifest.record_stage(self.run, "teacher_logits", seconds, {})
        self.state.wait_for_everyone()
        return logits, f"computed in {seconds:.0f} s"

    def train_all(self, force: bool = False) -> None:
        self.check_inputs()
        # up front (each model's weights hashed once): a finished model whose weights changed stops the run
        # before any write
        current = {name: not force and self.is_current(name) for name in MODEL_NAMES}
        manifest.start(self, "train-all")
        stages = {"teacher": self.stage_teacher, "baseline": self.stage_baseline, "distilled": self.stage_distill}
        for name in MODEL_NAMES:
            if name == "distilled" and not current["teacher"] and not force:
                current[name] = self.is_current(name)  # its key holds the teacher's weights, just retrained
            if current[name]:
                self.log(f"{name}: already done with this config, skipped ({self.run.model_dir(name)})")
                continue
            stages[name]()
        if self.state.is_main_process:
            write_report(self.run)

