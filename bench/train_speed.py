"""Training-speed benchmark: what distilling from cached logits costs over plain training.

Times one epoch over the same rows of the same student, four ways:
  baseline (dynamic)    hard labels, dynamic padding, length-grouped batches (what train-baseline does)
  distilled (dynamic)   + cached teacher logits (what distill does)
  baseline (padded)     every batch padded to max_length, random batches
  distilled (padded)    + the teacher run online on every batch, as in the textbook recipe
All four use the run's precision, so the ratios isolate padding and the online teacher.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from kd.atomic import write_json
from kd.config import RunConfig
from kd.device import resolve_precision
from kd.run import RunContext, check_inputs, stages
from kd.run.teachers import teacher_logits
from kd.trainer import TEACHER_LOGITS, DistillationTrainer, DistillCollator, PlainTrainer, parallel_arguments


def _epoch_seconds(trainer) -> float:
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def train_speed(cfg: RunConfig, run_dir: Path, rows: int) -> dict:
    ctx = RunContext(cfg, run_dir)
    check_inputs(ctx, stages(ctx), need_teacher=False)
    logits, _ = teacher_logits(ctx)
    rows = min(rows, len(ctx.student_train))
    teacher = AutoModelForSequenceClassification.from_pretrained(ctx.run.model_dir("teacher"), use_safetensors=True)
    tc, plan = cfg.student.train, ctx.batch_plans["student"]
    precision = resolve_precision(tc.precision, ctx.device)

    def args(grouped: bool) -> TrainingArguments:
        return TrainingArguments(
            output_dir=str(ctx.run.work_dir("bench-train")), num_train_epochs=1, learning_rate=tc.learning_rate,
            warmup_steps=tc.warmup, seed=tc.seed, data_seed=tc.seed,
            train_sampling_strategy="group_by_length" if grouped else "random", length_column_name="length",
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
            bf16=precision == "bf16", fp16=precision == "fp16", **parallel_arguments(plan, ctx.device),
        )

    timings = {}
    for way, grouped, padding in (("dynamic", True, True), ("padded", False, "max_length")):
        for kind in ("baseline", "distilled"):
            model, tokenizer = ctx.new_student()
            train_ds = ctx.tokenized("student_train", tokenizer).select(range(rows))
            pad = DataCollatorWithPadding(tokenizer, padding=padding, max_length=cfg.data.max_length)
            if kind == "baseline":
                trainer = PlainTrainer(model=model, args=args(grouped), train_dataset=train_ds, data_collator=pad)
            elif way == "dynamic":
                train_ds = train_ds.add_column(TEACHER_LOGITS, logits[:rows].tolist())
                collator = DistillCollator(tokenizer, padding, cfg.data.max_length)
                trainer = DistillationTrainer(model=model, args=args(grouped), train_dataset=train_ds,
                                              data_collator=collator,
                                              method="kd", **asdict(cfg.distill))
            else:  # the teacher runs forward on every training batch
                trainer = DistillationTrainer(model=model, args=args(grouped), train_dataset=train_ds,
                                              data_collator=pad, teacher_model=teacher,
                                              method="kd", **asdict(cfg.distill))
            seconds = _epoch_seconds(trainer)
            timings[f"{kind}_{way}"] = {"seconds": seconds, "examples_per_s": rows / seconds}
            ctx.log(f"bench-train: {kind}, {way} padding: {seconds:.1f} s ({rows / seconds:.1f} examples/s)")

    base, cached = timings["baseline_dynamic"]["seconds"], timings["distilled_dynamic"]["seconds"]
    result = {
        "rows": rows, "precision": precision, "device": ctx.device, "timings": timings,
        "distill_over_baseline": cached / base,
        "online_distill_over_baseline": timings["distilled_padded"]["seconds"] / base,
        "online_distill_over_distill": timings["distilled_padded"]["seconds"] / cached,
    }
    write_json(ctx.run.bench_dir / "train_speed.json", result)
    print(render(result))
    return result


def render(r: dict) -> str:
    t = r["timings"]
    lines = [f"Training speed, one epoch of {r['rows']} rows ({r['device']}, {r['precision']}):", "",
             "| recipe | seconds | examples/s |", "|---|---:|---:|"]
    names = {"baseline_dynamic": "baseline (dynamic padding, length-grouped)",
             "distilled_dynamic": "distilled, cached teacher logits (same batches)",
             "baseline_padded": "baseline (pad to max_length, random batches)",
             "distilled_padded": "distilled, teacher online every step (pad to max_length, random batches)"}
    for key, label in names.items():
        lines.append(f"| {label} | {t[key]['seconds']:.1f} | {t[key]['examples_per_s']:.1f} |")
    lines += ["", f"distillation epoch / baseline epoch: {r['distill_over_baseline']:.3f}",
              f"online-teacher distillation epoch / baseline epoch: {r['online_distill_over_baseline']:.2f}",
              f"online teacher / cached logits: {r['online_distill_over_distill']:.2f}x slower"]
    return "\n".join(lines)
