"""Training one model of a run, scoring it on test and saving it whole: every stage's `fit`.

A model trains in work/<name>/ with its Trainer checkpoints beside its stage key, resumed where a stopped run left
a whole checkpoint of the same key (kd/resume.py). Under torchrun every process runs the same code: the Trainer
shares the work (each process takes its share of every global batch, see kd/trainer.py), and only the main process
writes files.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

import numpy as np
from transformers import DataCollatorWithPadding

from kd import manifest
from kd.atomic import atomic_dir, write_json
from kd.device import resolve_precision
from kd.errors import KdError
from kd.features import length_order
from kd.metrics import classification_metrics
from kd.models import count_params
from kd.resume import resume_point, start_afresh
from kd.run.context import RunContext
from kd.runfolder import sha256_file, write_npy
from kd.trainer import (
    KD_TERMS,
    BatchPlan,
    PlainTrainer,
    compute_metrics,
    early_stopping,
    prediction_arguments,
    training_arguments,
)


@dataclass(frozen=True)
class Trained:
    """A model as training left it, and how it was trained (all None/empty: used as loaded, not trained)."""

    model: object
    role: str  # whose settings it trained with: teacher or student
    seconds: float | None = None
    history: list = field(default_factory=list)
    plan: BatchPlan | None = None  # how its batches were split
    resumed_from: str | None = None  # the checkpoint its training resumed from


def train(ctx: RunContext, name: str, key: str, role: str, trainer_cls, model, tokenizer, train_ds, collator,
          tc=None, **extra) -> Trained:
    """Train `name` (stage key `key`) with the settings of `role` (teacher or student; `tc`: other settings for it):
    resumed, evaluated on validation, best kept."""
    tc, plan = tc or getattr(ctx.cfg, role).train, ctx.batch_plans[role]
    work = ctx.run.work_dir(name)
    checkpoint, why = resume_point(work, key)
    ctx.log(f"{name}: {why}" if checkpoint else f"{name}: training from the start ({why})")
    if checkpoint is None and ctx.state.is_main_process:
        start_afresh(work, key)
    ctx.state.wait_for_everyone()
    if tc.reinit_layers and checkpoint is None:
        reinit_top_layers(model, tc.reinit_layers, tc.seed, f"{role}.train.reinit_layers")
    args = training_arguments(tc, plan, work, len(train_ds), ctx.device, resolve_precision(tc.precision, ctx.device))
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_ds, eval_dataset=ctx.tokenized("validation", tokenizer),
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
    ctx.log(f"{name}: trained on {len(train_ds)} rows in {seconds:.0f} s ({step} steps, "
            f"{step * plan.global_batch / seconds:.1f} examples/s; global batch {plan.global_batch} = "
            f"{plan.world_size} x {plan.per_process_batch}); "
            + (f"best validation checkpoint {trainer.state.best_model_checkpoint}" if tc.select == "best"
               else f"kept the final weights (step {step})"))
    # bf16/fp16 training wraps the model's forward in autocast in place; without unwrapping, the "fp32"
    # test predictions that follow would still run in bf16 (2e-2 off, a few predictions different)
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    if hasattr(model, KD_TERMS):  # a term's projection trained beside the student, not part of it
        delattr(model, KD_TERMS)
    return Trained(model, role, seconds, trainer.state.log_history, plan,
                   checkpoint.name if checkpoint else None)


def reinit_top_layers(model, k: int, seed: int, what: str) -> None:
    """The top `k` transformer layers, and the pooler where the model has one, drawn again from the model's own
    initialiser, seeded by the training seed so that a run gives the same weights whenever it starts."""
    import torch

    base = model.base_model
    stack = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(stack, "layer", None)
    if layers is None or not 0 < k <= len(layers):
        have = f"{len(layers)} layers" if layers is not None else "no encoder.layer or transformer.layer stack"
        raise KdError(f"{what}={k}: expected 0 to the model's layer count ({type(model).__name__} has {have})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in [*layers[-k:], *([base.pooler] if getattr(base, "pooler", None) is not None else [])]:
            module.apply(model._init_weights)


def score_test_and_save(ctx: RunContext, name: str, key: str, trained: Trained, tokenizer,
                        extra: dict | None = None) -> dict:
    """Evaluate on test (fp32), then write the model folder whole: weights, tokenizer, test logits, metrics."""
    model = trained.model.eval()
    test = ctx.tokenized("test", tokenizer)
    started = time.perf_counter()
    logits = predict(ctx, model, tokenizer, test, "fp32")
    labels = np.asarray(test["label"])
    metrics = classification_metrics(logits, labels, ctx.splits.label_names)
    evals = [h["eval_accuracy"] for h in trained.history if "eval_accuracy" in h]
    kept = getattr(ctx.cfg, trained.role).train.select
    chosen = (max(evals) if kept == "best" else evals[-1]) if evals else None  # of the weights kept
    metrics.update(
        params=count_params(model), train_seconds=trained.seconds, eval_seconds=time.perf_counter() - started,
        validation_accuracy=chosen, selected_by=kept if trained.seconds is not None else None, stage_key=key,
        resumed_from=trained.resumed_from, batch=trained.plan.as_dict() if trained.plan else None, **(extra or {}),
    )
    if ctx.state.is_main_process:
        with atomic_dir(ctx.run.model_dir(name)) as tmp:
            model.save_pretrained(tmp)
            tokenizer.model_max_length = ctx.cfg.data.max_length  # users of the folder truncate the same
            tokenizer.save_pretrained(tmp)
            metrics["size_mb"] = (tmp / "model.safetensors").stat().st_size / 2**20
            metrics["weights_sha256"] = sha256_file(tmp / "model.safetensors")
            write_npy(tmp / "test_logits.npy", logits)
            write_json(tmp / "log_history.json", trained.history)
            write_json(tmp / "metrics.json", metrics)
        write_npy(ctx.run.root / "test_labels.npy", labels)
        shutil.rmtree(ctx.run.work_dir(name), ignore_errors=True)
        manifest.record_stage(ctx.run, name, trained.seconds, metrics)
    ctx.state.wait_for_everyone()
    ctx.saved(name)
    ctx.log(f"{name}: test accuracy {metrics['accuracy']:.2%}, macro-F1 {metrics['f1_macro']:.4f}, "
            f"{metrics['params']:,} params")
    return metrics


def fit(ctx: RunContext, name: str, key: str, role: str, trainer_cls, model, tokenizer, train_ds, collator,
        extra: dict | None = None, **kwargs) -> dict:
    """Train `name`, evaluate it on test and save it whole: its metrics."""
    trained = train(ctx, name, key, role, trainer_cls, model, tokenizer, train_ds, collator, **kwargs)
    return score_test_and_save(ctx, name, key, trained, tokenizer, extra)


def predict(ctx: RunContext, model, tokenizer, tok_ds, precision: str) -> np.ndarray:
    """Logits in the dataset's row order, computed over length-sorted batches."""
    order = length_order(tok_ds)
    args = prediction_arguments(ctx.run.work_dir("predict"), ctx.batch_plans["student"], ctx.device, precision)
    trainer = PlainTrainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                           processing_class=tokenizer)
    out = trainer.predict(tok_ds.select(order))
    logits = np.empty_like(out.predictions, dtype=np.float32)
    logits[order] = out.predictions
    return logits
