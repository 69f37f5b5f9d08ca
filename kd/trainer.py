"""Trainer set-up common to every stage, and the Trainer subclass that distils by a method's loss terms.

Multi-process training (torchrun, accelerate launch) runs the same experiment as one process: a config's
batch sizes are global batches that accelerate splits across the processes (`split_batches`), so the
sampler, the batches and the optimizer steps are those of a single process, and every trainer's loss is a
per-batch mean that DDP averages (`PlainTrainer`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from kd.config import TrainConfig
from kd.errors import KdError
from kd.metrics import selection_metrics
from kd.sampler import EpochSeededLengthGroupedSampler
from kd.terms import Batch, Side

TEACHER_LOGITS = "teacher_logits"
KD_TERMS = "kd_terms"  # the student's attribute holding loss terms with parameters while it trains


@dataclass(frozen=True)
class BatchPlan:
    """How one stage's global batch is split: recorded with every trained model."""

    world_size: int
    global_batch: int
    per_process_batch: int
    global_eval_batch: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


SELECT = ("best", "last")


def batch_plan(tc: TrainConfig, world_size: int, section: str) -> BatchPlan:
    """The split of `tc`'s global batches over `world_size` processes; one clear error where it is uneven (or
    where the section asks for what cannot be: early stopping that may not choose by validation)."""
    if tc.select not in SELECT:
        raise KdError(f"{section}.select={tc.select!r}: expected one of {', '.join(SELECT)}")
    if tc.select == "last" and tc.early_stopping_patience is not None:
        raise KdError(f"{section}.select=last keeps the final weights, but early stopping chooses by validation: "
                      f"set {section}.early_stopping_patience=null")
    if tc.evals_per_epoch == 0 and tc.select != "last":
        raise KdError(f"{section}.evals_per_epoch=0 leaves no validation pass to choose the best weights by: "
                      f"set {section}.select=last")
    if not isinstance(tc.min_steps, int) or tc.min_steps < 0:
        raise KdError(f"{section}.min_steps={tc.min_steps!r}: expected 0 or a positive number of steps")
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(tc, name)
        if not isinstance(value, int) or value < 1 or value % world_size:
            raise KdError(
                f"{section}.{name}={value!r}: batch sizes are global and split evenly across processes; "
                f"expected a positive multiple of the {world_size} processes (set --set {section}.{name}=N, "
                "or change NPROC)"
            )
    return BatchPlan(world_size, tc.batch_size, tc.batch_size // world_size, tc.eval_batch_size)


def batch_plans(cfg, world_size: int) -> dict[str, BatchPlan]:
    """Each role's (teacher, student) global batches split over `world_size` processes."""
    return {role: batch_plan(getattr(cfg, role).train, world_size, f"{role}.train") for role in ("teacher", "student")}


def parallel_arguments(plan: BatchPlan, device: str) -> dict:
    """The TrainingArguments fields that depend on the process count: every kd-bench Trainer takes them here."""
    many = plan.world_size > 1
    return {
        # The dataloader yields the config's global batch and accelerate hands each process its share: the same
        # sampler and batches as one process, where per-process batches would multiply the batch and divide
        # the optimizer steps by the process count.
        "per_device_train_batch_size": plan.global_batch,
        "per_device_eval_batch_size": plan.global_eval_batch,
        "accelerator_config": {"split_batches": many},
        "ddp_backend": "gloo" if device == "cpu" and many else None,
        "ddp_find_unused_parameters": False if many else None,
        "use_cpu": device == "cpu",
    }


def training_arguments(
    tc: TrainConfig, plan: BatchPlan, output_dir: Path, n_train: int, device: str, precision: str
) -> TrainingArguments:
    steps_per_epoch = max(1, math.ceil(n_train / plan.global_batch))
    eval_steps = max(1, steps_per_epoch // max(1, tc.evals_per_epoch))
    max_steps = -1  # the epochs decide
    if tc.min_steps > tc.epochs * steps_per_epoch:
        # as many validation passes (and checkpoints) as the epochs would have had, spread over the longer run:
        # an eval at every step of a 4-batch epoch would cost more than the training
        max_steps = tc.min_steps
        eval_steps = max(1, max_steps // max(1, math.ceil(tc.epochs * tc.evals_per_epoch)))
    best = tc.select == "best"
    # evals_per_epoch=0 (select=last only): no validation pass and no checkpoint, for stages shorter than
    # their checkpoints are worth; a stage stopped midway starts again
    strategy = "steps" if tc.evals_per_epoch else "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=tc.epochs,
        max_steps=max_steps,
        learning_rate=tc.learning_rate,
        **parallel_arguments(plan, device),
        warmup_steps=tc.warmup,
        weight_decay=tc.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        eval_steps=eval_steps,
        save_strategy=strategy,
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=best,
        metric_for_best_model="accuracy" if best else None,
        greater_is_better=True if best else None,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        length_column_name="length",
        seed=tc.seed,
        data_seed=tc.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
        dataloader_num_workers=0,
    )


def prediction_arguments(output_dir: Path, plan: BatchPlan, device: str, precision: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        **parallel_arguments(plan, device),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
    )


def compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return selection_metrics(np.asarray(logits).argmax(-1), labels)


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


class PlainTrainer(Trainer):
    """The Trainer a model trains with on its own loss (cross-entropy; DistillationTrainer adds a teacher's terms):
    its loss is the model's per-batch mean, which DDP then averages.

    transformers 5 assumes a model whose forward takes **kwargs (BERT, DistilBERT) sums its loss over
    `num_items_in_batch`, so under DDP it multiplies the loss by the process count and skips the division by
    the accumulation steps. Sequence classification returns a mean: that doubled the loss, the gradients
    (before clipping) and eval_loss with two processes. Here the Trainer takes the loss as the mean it is.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths,
                                                   seed=self.args.data_seed if self.args.data_seed is not None
                                                   else self.args.seed)
        return sampler


class DistillationTrainer(PlainTrainer):
    """A Trainer that distils: it trains `model` on a method's weighted sum of loss terms (kd/terms/), with ordinary
    TrainingArguments. Usable on its own (docs/api.md):

        DistillationTrainer(model=student, teacher_model=teacher, method="kd", temperature=2.0, alpha=0.7,
                            args=training_args, train_dataset=train, processing_class=tokenizer)

    - `method`: a recipe's name or YAML path (kd/methods/), or the weighted terms themselves, [(weight, Term)];
      `temperature` and `alpha` fill in what a recipe leaves out (kd.config.DistillConfig's defaults otherwise).
    - `teacher_model`: a live teacher, run on every training batch, frozen, in the Trainer's precision, or a list (an
      ensemble: the mean of their probabilities; logit terms only). Without it, the training rows carry cached
      logits in a `teacher_logits` column (logit-only methods; any teacher tokenizer); hidden states and
      attention need the live teacher. `temp` is `temperature` as many distillation scripts spell it.
    - Rows labelled -100 (a pool without labels) get no cross-entropy, only the teacher's terms.

    Terms with parameters of their own (a projection between widths) hang on the student as `KD_TERMS`, so that
    the optimizer, DDP, checkpoints and resume treat them as the student's; take them off before saving the student
    (kd.run.fit does). Validation batches get plain cross-entropy, so eval_loss is comparable across methods. Each
    term's value is logged as loss_<term>.
    """

    def __init__(self, *args, method="kd", teacher_model=None, temperature: float | None = None,
                 alpha: float | None = None, temp: float | None = None, **kwargs):
        from kd.methods import resolve_terms
        from kd.terms import ATTENTION, HIDDEN

        if None not in (temp, temperature) and temp != temperature:
            raise KdError(f"DistillationTrainer: temp={temp} and temperature={temperature}: give one of them")
        temperature = temp if temperature is None else temperature
        model = kwargs["model"] if "model" in kwargs else args[0]  # (the Trainer's first parameter)
        train = kwargs.get("train_dataset")
        given = teacher_model if isinstance(teacher_model, (list, tuple)) else [teacher_model]
        teachers = [t for t in given if t is not None]
        terms = method if isinstance(method, list) else resolve_terms(
            method, model.config, teachers[0].config if teachers else None, temperature, alpha)
        needs = frozenset().union(*(term.needs for _, term in terms))
        if len(teachers) > 1 and needs & {HIDDEN, ATTENTION}:
            raise KdError(f"DistillationTrainer: {len(teachers)} teachers are pooled by their probabilities, but the "
                          "method's terms read one teacher's hidden states or attention: pass one teacher_model")
        if needs and not teachers and train is not None and TEACHER_LOGITS not in train.column_names:
            raise KdError(f"DistillationTrainer: the method needs the teacher ({', '.join(sorted(needs))}): pass "
                          f"teacher_model=, or a train_dataset with a {TEACHER_LOGITS!r} column of cached logits")
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = DistillCollator(kwargs["processing_class"])
        trained = [term for _, term in terms if any(True for _ in term.parameters())]
        if trained:  # before the Trainer moves the model to its device and wraps it
            setattr(model, KD_TERMS, torch.nn.ModuleList(trained))
        super().__init__(*args, **kwargs)
        self.terms = terms
        self.needs_hidden, self.needs_attention = HIDDEN in needs, ATTENTION in needs
        self.teachers = [t.to(self.args.device).eval() for t in teachers]
        self.teacher = self.teachers[0] if self.teachers else None
        for parameter in (p for t in self.teachers for p in t.parameters()):
            parameter.requires_grad_(False)  # frozen: the teachers' weights stay as they were
        self._parts: dict[str, list[float]] = {f"loss_{term.name}": [] for _, term in terms}

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if TEACHER_LOGITS not in self._signature_columns:
            self._signature_columns.append(TEACHER_LOGITS)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop(TEACHER_LOGITS, None)
        labels = inputs.pop("labels")
        if not model.training:
            outputs = model(**inputs)
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
            return (loss, outputs) if return_outputs else loss
        student, outputs = self.side(self.accelerator.unwrap_model(model), model, inputs)
        teacher = Side(logits=teacher_logits)
        if self.teacher is not None:
            with torch.no_grad(), self.autocast_smart_context_manager():
                teacher, _ = self.side(self.teacher, self.teacher, inputs)
                others = [t(**inputs).logits.float() for t in self.teachers[1:]]
            teacher.logits = teacher.logits.float() if teacher_logits is None else teacher_logits
            if others and teacher_logits is None:  # an ensemble: the log of the members' mean probability
                log_probs = torch.stack([torch.log_softmax(z, -1) for z in (teacher.logits, *others)])
                teacher.logits = torch.logsumexp(log_probs, 0) - math.log(len(self.teachers))
        batch = Batch(labels, inputs["attention_mask"], student, teacher)
        loss = 0.0
        for weight, term in self.terms:
            value = term(batch)
            self._parts[f"loss_{term.name}"].append(value.item())
            loss = loss + weight * value
        return (loss, outputs) if return_outputs else loss

    def side(self, bare, model, inputs) -> tuple:
        """What `model` (`bare`: it without DDP's wrapper) gives the terms for this batch, and its outputs."""
        from kd.terms.attention import capture

        with capture(bare) if self.needs_attention else nullcontext({}) as seen:
            outputs = model(**inputs, output_hidden_states=self.needs_hidden)
        return Side(logits=outputs.logits, hidden=outputs.hidden_states if self.needs_hidden else None,
                    qkv=seen.get("qkv"), heads=seen.get("heads")), outputs

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and any(self._parts.values()):
            for name, values in self._parts.items():
                logs[name] = round(float(np.mean(values)), 4)
                values.clear()
        super().log(logs, *args, **kwargs)
