"""Trainer set-up shared by every stage, and the Trainer subclass that distils from cached logits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments

from kd.config import DistillConfig, TrainConfig
from kd.losses import distillation_loss

TEACHER_LOGITS = "teacher_logits"


def training_arguments(
    tc: TrainConfig, output_dir: Path, n_train: int, device: str, precision: str, world_size: int = 1
) -> TrainingArguments:
    steps_per_epoch = max(1, math.ceil(n_train / (tc.batch_size * world_size)))
    eval_steps = max(1, steps_per_epoch // max(1, tc.evals_per_epoch))
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=tc.epochs,
        learning_rate=tc.learning_rate,
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        warmup_steps=tc.warmup,
        weight_decay=tc.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        length_column_name="length",
        seed=tc.seed,
        data_seed=tc.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and world_size > 1 else None,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        report_to="none",
        dataloader_num_workers=0,
    )


def prediction_arguments(output_dir: Path, batch_size: int, device: str, precision: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=batch_size,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        report_to="none",
    )


def compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    preds = np.asarray(logits).argmax(-1)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro")),
    }


def early_stopping(tc: TrainConfig) -> list:
    if tc.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience)]


class DistillCollator:
    """Pads the model inputs per batch and stacks each example's cached teacher logits beside them."""

    def __init__(self, tokenizer, padding: bool | str = True, max_length: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, padding=padding, max_length=max_length)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        has_teacher = TEACHER_LOGITS in features[0]
        teacher = [f.pop(TEACHER_LOGITS) for f in features] if has_teacher else None
        batch = self.pad(features)
        if has_teacher:
            batch[TEACHER_LOGITS] = torch.tensor(np.asarray(teacher), dtype=torch.float32)
        return batch


class DistillationTrainer(Trainer):
    """Trains on alpha * CE + (1 - alpha) * T^2 * KL against cached teacher logits.

    Batches without teacher logits (validation) get plain cross-entropy, so eval_loss is comparable
    across baseline and distilled students.
    """

    # Our loss is a per-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, distill: DistillConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill = distill
        self.model_accepts_loss_kwargs = False
        self._parts: dict[str, list[float]] = {"loss_ce": [], "loss_kl": []}

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if TEACHER_LOGITS not in self._signature_columns:
            self._signature_columns.append(TEACHER_LOGITS)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop(TEACHER_LOGITS, None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if teacher_logits is None:
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
        else:
            loss, ce, kl = distillation_loss(
                outputs.logits, teacher_logits, labels, self.distill.temperature, self.distill.alpha
            )
            self._parts["loss_ce"].append(ce.item())
            self._parts["loss_kl"].append(kl.item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._parts["loss_ce"]:
            for name, values in self._parts.items():
                logs[name] = round(float(np.mean(values)), 4)
                values.clear()
        super().log(logs, *args, **kwargs)
