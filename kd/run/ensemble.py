"""Ensemble teachers: several teachers fine-tuned on the same labelled rows, pooled as the mean of their
probabilities (kd.procedures.pool_probabilities). A method names one with `teacher: ensemble` and its members: seeds
of the run's teacher (`members: k`; the first is the run's `teacher` itself, shared) and other models (`teachers:
[...]`), each with its own tokenizer: students read its logits over their rows, never its inputs.

Each member is a stage of its own (models/teacher-member<i>: trained, tested and saved like the teacher, resumed and
shared between study cells like it); the ensemble's folder, models/teacher-ensemble, holds the pooled test logits
and metrics, with its members' mean beside them, and no weights: its members are its weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from kd.atomic import atomic_dir, write_json
from kd.config import RunConfig
from kd.digest import json_fingerprint
from kd.errors import KdError
from kd.methods import Method
from kd.metrics import classification_metrics
from kd.procedures import pool_probabilities
from kd.run.context import RunContext
from kd.run.keys import teacher_key
from kd.runfolder import TEACHER, member_folder, write_npy

ENSEMBLE = "teacher-ensemble"  # the model folder of an ensemble teacher (kd.methods.Method.teacher_model)
SETTINGS = ("members", "teachers")  # what every ensemble method of a run must agree on


@dataclass(frozen=True)
class Member:
    name: str  # its model folder
    model: str | None  # its teacher.model
    seed: int  # its teacher.train.seed: its head's initialisation and its data order


def ensemble_method(ctx: RunContext) -> Method:
    """The settings of the run's ensemble: those of its first ensemble method (check_ensemble: all agree)."""
    return next(m for m in ctx.methods if m.ensemble)


def members(ctx: RunContext) -> list[Member]:
    """The ensemble's members in order: seeds of the run's teacher (the first is `teacher`), then the other models."""
    m, cfg = ensemble_method(ctx), ctx.cfg.teacher
    found = [Member(TEACHER if i == 0 else member_folder(TEACHER, i + 1), cfg.model, cfg.train.seed + i)
             for i in range(m.members)]
    return found + [Member(member_folder(TEACHER, len(found) + j + 1), model, cfg.train.seed)
                    for j, model in enumerate(m.teachers)]


def member_config(cfg: RunConfig, member: Member) -> RunConfig:
    """The run's config as this member's teacher sees it: its model (its own tokenizer, unless it is the run's teacher
    model) and its seed."""
    teacher = cfg.teacher
    tokenizer = teacher.tokenizer if member.model == teacher.model else None
    train = dataclasses.replace(teacher.train, seed=member.seed)
    return dataclasses.replace(cfg, teacher=dataclasses.replace(teacher, model=member.model, tokenizer=tokenizer,
                                                                train=train))


def member_key(ctx: RunContext, member: Member) -> str:
    if member.name == TEACHER:
        return teacher_key(ctx)
    return teacher_key(ctx, member.name, (json.dumps({"model": member.model, "seed": member.seed}),))


def train_member(ctx: RunContext, key: str, member: Member) -> dict:
    """One member, fine-tuned on the labelled rows as the run's teacher is (or used as trained), tested and saved."""
    from kd.run.teachers import fine_tune

    cfg = member_config(ctx.cfg, member)
    return fine_tune(ctx, key, teacher=ctx.member_teacher(cfg), name=member.name,
                     tc=cfg.teacher.train, extra={"model": member.model, "seed": member.seed})


def ensemble_key(ctx: RunContext) -> str:
    """The ensemble's key: its members' names, models and seeds, and their weights."""
    found = members(ctx)
    return teacher_key(ctx, ENSEMBLE, (json.dumps([dataclasses.asdict(m) for m in found]),
                                       *(ctx.weights_sha(m.name) for m in found)))


def check_ensemble(ctx: RunContext, need_teacher: bool) -> None:
    """Every ensemble method names the same members; seeds of a teacher used as trained would be one model; every
    other teacher loads and its labels match the data's (before anything is written)."""
    users = [m for m in ctx.methods if m.ensemble]
    if len({tuple(getattr(m, s) for s in SETTINGS) for m in users}) > 1:
        raise KdError(f"config methods={ctx.cfg.methods}: the ensemble teacher is shared, so every ensemble method "
                      f"needs the same {' and '.join(SETTINGS)}")
    if not need_teacher:
        return
    if users[0].members > 1 and not ctx.teacher.needs_finetune:
        raise KdError(f"method {users[0].name}: members={users[0].members} seeds of teacher {ctx.cfg.teacher.model}, "
                      "which is used as trained, are one model: set teacher.finetune=always, or members: 1")
    for member in members(ctx):
        if member.model != ctx.cfg.teacher.model:
            ctx.member_teacher(member_config(ctx.cfg, member), check=True)


def pool(ctx: RunContext, key: str, name: str = ENSEMBLE, found: list[str] | None = None,
         before: float = 0.0) -> dict:
    """The ensemble's test scores from its members' test logits pooled, with its members' mean beside them; saved
    as a model folder without weights (`name`, of the members `found`: the self-trained ensemble's, whose
    procedure also took `before` seconds: the ensemble that labelled its members' pool rows)."""
    found = found or [m.name for m in members(ctx)]
    folders = [ctx.verified_model(name) for name in found]
    metrics = [ctx.run.model_metrics(name) for name in found]
    logits = pool_probabilities([np.load(f / "test_logits.npy", allow_pickle=False) for f in folders])
    labels = np.load(ctx.run.root / "test_labels.npy", allow_pickle=False)
    scores = classification_metrics(logits, labels, ctx.splits.label_names)
    own = {TEACHER}  # the run's teacher: its time is the teacher's, not the ensemble procedure's
    scores.update(
        members=found, member_models=[m.get("model", ctx.cfg.teacher.model) for m in metrics],
        members_mean={k: float(np.mean([m[k] for m in metrics])) for k in ("accuracy", "f1_macro", "nll", "ece",
                                                                             "brier")},
        params=sum(m["params"] for m in metrics), size_mb=sum(m["size_mb"] for m in metrics),
        train_seconds=sum(m["train_seconds"] or 0.0 for m in metrics),
        procedure_seconds=before + sum(m["train_seconds"] or 0.0 for n, m in zip(found, metrics) if n not in own),
        stage_key=key, weights_sha256=json_fingerprint([m["weights_sha256"] for m in metrics]),
        label_match=metrics[0].get("label_match"), fine_tuned=any(m.get("fine_tuned") for m in metrics))
    if ctx.state.is_main_process:
        with atomic_dir(ctx.run.model_dir(name)) as tmp:
            write_npy(tmp / "test_logits.npy", logits)
            write_json(tmp / "metrics.json", scores)
    ctx.state.wait_for_everyone()
    ctx.log(f"{name}: {len(found)} members pooled: test accuracy {scores['accuracy']:.2%} (members' mean "
            f"{scores['members_mean']['accuracy']:.2%}), ECE {scores['ece']:.4f} (members' mean "
            f"{scores['members_mean']['ece']:.4f})")
    return scores


# ---- self-training an ensemble -----------------------------------------------------------------

SELF_TRAINED_ENSEMBLE = "teacher-self-train-ensemble"


def retrained(ctx: RunContext) -> list[Member]:
    """The ensemble's members as self-training retrains them (same models and seeds, folders of their own)."""
    return [dataclasses.replace(m, name=member_folder(SELF_TRAINED_ENSEMBLE, i)) for i, m in enumerate(members(ctx), 1)]


def self_train_settings(ctx: RunContext) -> Method:
    return next(m for m in ctx.methods if m.teacher_model == SELF_TRAINED_ENSEMBLE)


def retrained_key(ctx: RunContext, member: Member) -> str:
    """A retrained member's key: the self-training settings, the ensemble that labelled its pool rows, and itself."""
    m = self_train_settings(ctx)
    return teacher_key(ctx, member.name, (json.dumps([m.per_class, m.min_confidence, dataclasses.asdict(member)]),
                                          ctx.weights_sha(ENSEMBLE)))


def retrain_member(ctx: RunContext, key: str, member: Member) -> dict:
    """One member fine-tuned anew from its starting weights on the labelled rows plus the pool rows the ensemble
    labels most confidently, with the ensemble's labels (no pool label is read)."""
    from kd.run.fit import score_test_and_save
    from kd.run.teachers import fine_tune_with_pool_labels, teacher_logits  # (kd.run.teachers pools ensembles)

    logits, _ = teacher_logits(ctx, ENSEMBLE)
    cfg = member_config(ctx.cfg, member)
    t = ctx.member_teacher(cfg)
    trained, chosen = fine_tune_with_pool_labels(ctx, member.name, key, t, logits, self_train_settings(ctx),
                                                 "the ensemble's", tc=cfg.teacher.train)
    return score_test_and_save(ctx, member.name, key, trained, t.tokenizer,
                               {"label_match": t.label_match, "fine_tuned": True, "model": member.model,
                                "seed": member.seed, "pseudo_labelled_rows": chosen})


def self_trained_ensemble_key(ctx: RunContext) -> str:
    found = [m.name for m in retrained(ctx)]
    return teacher_key(ctx, SELF_TRAINED_ENSEMBLE, (json.dumps(found), *(ctx.weights_sha(n) for n in found)))


def pool_self_trained(ctx: RunContext, key: str) -> dict:
    # its members were retrained on the ensemble's labels, so the ensemble's own members count towards its cost
    return pool(ctx, key, SELF_TRAINED_ENSEMBLE, [m.name for m in retrained(ctx)],
                ctx.run.model_metrics(ENSEMBLE)["procedure_seconds"])


def check_self_trained_ensemble(ctx: RunContext, need_teacher: bool) -> None:
    users = [m for m in ctx.methods if m.teacher_model == SELF_TRAINED_ENSEMBLE]
    if len({(m.per_class, m.min_confidence) for m in users}) > 1:
        raise KdError(f"config methods={ctx.cfg.methods}: the self-trained ensemble is shared, so every "
                      "self-train-ensemble method needs the same per_class and min_confidence")
    if any(m.rounds != 1 for m in users):
        raise KdError(f"method {users[0].name}: self-training an ensemble runs one round (each member retrained "
                      "once on the ensemble's labels): set rounds: 1")
