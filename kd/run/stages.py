"""A run is a table of stages: model name -> how to key it and how to make it. `train_all` walks the table in order:
the teachers first (the run's fine-tuned `teacher`, then each teacher procedure a method learns from), then one
student per method, then the report. A stage whose model finished with the same key is skipped.

Adding a teacher procedure is one function (kd/run/teachers.py) and one row of TEACHERS (or of the `teachers`
passed to train_all); a method with `teacher: <procedure>` learns from the model folder teacher-<procedure>
(kd.methods.Method.teacher_model), so a recipe file names it as `teacher: <procedure>`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from kd import manifest
from kd.errors import KdError
from kd.methods import FILE_TEACHER
from kd.report import write_report
from kd.run.context import RunContext
from kd.run.ensemble import (
    ENSEMBLE,
    SELF_TRAINED_ENSEMBLE,
    check_ensemble,
    check_self_trained_ensemble,
    ensemble_key,
    member_key,
    members,
    pool,
    pool_self_trained,
    retrain_member,
    retrained,
    retrained_key,
    self_trained_ensemble_key,
    train_member,
)
from kd.run.keys import is_current, student_key, teacher_key
from kd.run.students import train_student
from kd.run.teachers import SELF_TRAINED, check_self_train, fine_tune, self_train, self_train_key
from kd.runfolder import TEACHER


def no_check(ctx: RunContext, need_teacher: bool) -> None:
    pass


@dataclass(frozen=True)
class Stage:
    name: str  # the model folder it makes: models/<name>
    key: Callable[[RunContext], str]  # what its model depends on (kd/run/keys.py)
    make: Callable[[RunContext, str], dict]  # (run, key) -> its metrics: trains, tests and saves the model
    check: Callable[[RunContext, bool], None] = no_check  # (run, need_teacher): raises on a mistake, before writes
    # the stages it needs made before it, beyond the run's teacher (an ensemble's members), given the run
    before: Callable[[RunContext], list[Stage]] = lambda ctx: []


def member_stages(ctx: RunContext) -> list[Stage]:
    """An ensemble's members, each a stage (the first, the run's teacher, is the teacher's own stage)."""
    return [Stage(m.name, functools.partial(member_key, member=m), functools.partial(train_member, member=m))
            for m in members(ctx) if m.name != TEACHER]


ENSEMBLE_STAGE = Stage(ENSEMBLE, ensemble_key, pool, check_ensemble, before=member_stages)
# The teacher procedures, in the order a run makes them; the first is the run's own teacher, made where any method
# learns from a model.
TEACHERS: tuple[Stage, ...] = (
    Stage(TEACHER, teacher_key, fine_tune),
    ENSEMBLE_STAGE,
    Stage(SELF_TRAINED, self_train_key, self_train, check_self_train),
    Stage(SELF_TRAINED_ENSEMBLE, self_trained_ensemble_key, pool_self_trained, check_self_trained_ensemble,
          before=lambda ctx: [*member_stages(ctx), ENSEMBLE_STAGE, *retrained_stages(ctx)]),
)


def retrained_stages(ctx: RunContext) -> list[Stage]:
    """A self-trained ensemble's members, each retrained on the ensemble's confident pool labels."""
    return [Stage(r.name, functools.partial(retrained_key, member=r), functools.partial(retrain_member, member=r))
            for r in retrained(ctx)]


def stages(ctx: RunContext, teachers: tuple[Stage, ...] = TEACHERS) -> dict[str, Stage]:
    """The run's stages by model name, in the order it makes them: the teacher, the teachers its methods learn
    from, then a student per method."""
    wanted = {m.teacher_model for m in ctx.methods}
    # the run's teacher where a method learns from a model (every teacher procedure starts from it); a run of
    # methods without a teacher (the baseline alone) or taught by a file trains none
    own = not wanted <= {None, FILE_TEACHER}
    table = {}
    for t in teachers:
        if (own and t.name == teachers[0].name) or t.name in wanted:
            table.update({s.name: s for s in t.before(ctx)})
            table[t.name] = t
    for m in ctx.methods:
        if m.teacher_model not in (*table, None, FILE_TEACHER):
            known = ["none", "finetune", "file", *(t.name.removeprefix("teacher-") for t in teachers[1:])]
            raise KdError(f"method {m.name}: teacher={m.teacher}: no teacher procedure makes {m.teacher_model!r} "
                          f"(expected one of {', '.join(known)})")
    for m in ctx.methods:
        table[m.model_name] = Stage(m.model_name, functools.partial(student_key, method=m),
                                    functools.partial(train_student, method=m))
    return table


def check_inputs(ctx: RunContext, table: dict[str, Stage], need_teacher: bool = True,
                 need_student: bool = True) -> None:
    """Load everything a stage will need so that a user mistake stops the run before any write."""
    ctx.check_run_folder()
    _ = ctx.batch_plans
    _ = ctx.fingerprints
    _ = ctx.budget
    need_teacher = need_teacher and TEACHER in table
    if need_teacher:
        _ = ctx.teacher
    if any(m.teacher_model == FILE_TEACHER for m in ctx.methods):
        _ = ctx.file_teacher  # read and checked whole
    for stage in table.values():
        stage.check(ctx, need_teacher)
    if need_student:
        _, tokenizer = ctx.new_student()
        if need_teacher:
            check_live_teacher(ctx, tokenizer)
    if ctx.state.is_main_process:
        ctx.run.check_writable()  # last: a run stopped by a mistake above leaves no new folder behind


def check_live_teacher(ctx: RunContext, tokenizer) -> None:
    """A method whose terms read the teacher's hidden states or attention runs the teacher on the student's own
    tokens: the two must share a tokenizer. Logit terms read cached logits, which the teacher computed from its own
    tokens, and fit any pair."""
    theirs = ctx.teacher.tokenizer
    online = next((m for m in ctx.methods if m.online), None)
    if online is None:
        return
    # the same tokens: the same vocabulary, and the same ids for the students' first rows (the two may differ in
    # the inputs their models take, token_type_ids, and still read the same tokens)
    texts = ctx.student_train["text"][:32]
    if tokenizer.get_vocab() != theirs.get_vocab() or tokenizer(texts)["input_ids"] != theirs(texts)["input_ids"]:
        raise KdError(f"method {online.name}: its terms run the teacher on the student's tokens, but the student's "
                      f"tokenizer ({tokenizer.name_or_path}) is not the teacher's ({theirs.name_or_path}): use logit "
                      "terms (kl, reverse_kl, ce), which fit any tokenizer")


def finished(ctx: RunContext, table: dict[str, Stage]) -> bool:
    """Every model of the run finished with its current key (weights verified), and the report written."""
    return all(is_current(ctx, name, stage.key(ctx)) for name, stage in table.items()) \
        and ctx.run.results_json.is_file()


def train_all(ctx: RunContext, force: bool = False, teachers: tuple[Stage, ...] = TEACHERS,
              checked: bool = False) -> None:
    """Every stage of the run not finished with its current key (all of them with `force`), then the report.
    `checked`: the inputs were checked already (a study checks every cell before it runs any)."""
    table = stages(ctx, teachers)
    if not checked:
        check_inputs(ctx, table)
    # up front (each model's weights hashed once): a finished model whose weights changed stops the run
    # before any write
    current = {name: not force and is_current(ctx, name, stage.key(ctx)) for name, stage in table.items()}
    if ctx.state.is_main_process:
        manifest.start(ctx.run, "train-all", ctx.start_record())
        ctx.run.update_manifest(models=list(table))
    retrained, students = False, {m.model_name for m in ctx.methods}
    for name, stage in table.items():
        if name in students:
            ctx.drop_members()
        if retrained and not force:
            current[name] = is_current(ctx, name, stage.key(ctx))  # its key may hold a teacher's weights, retrained
        if current[name]:
            ctx.log(f"{name}: already done with this config, skipped ({ctx.run.model_dir(name)})")
            continue
        stage.make(ctx, stage.key(ctx))
        retrained = True
    if ctx.state.is_main_process:
        write_report(ctx.run)


# the single-stage verbs of the command line, and the model each makes
VERB_STAGES = {"eval-teacher": TEACHER, "train-teacher": TEACHER, "train-baseline": "baseline",
               "distill": "distilled"}


def run_verb(ctx: RunContext, verb: str) -> dict:
    """One stage of the run alone (`kd train-teacher`, ...): checked, recorded in the manifest, made."""
    table = stages(ctx)
    name = VERB_STAGES[verb]
    if name not in table:
        raise KdError(f"{name}: not a model of this run (its methods train: {', '.join(table)})")
    check_inputs(ctx, table, need_teacher=verb in ("eval-teacher", "train-teacher"),
                 need_student=verb in ("train-baseline", "distill"))
    if ctx.state.is_main_process:
        manifest.start(ctx.run, verb, ctx.start_record())
    stage = table[name]
    if verb == "eval-teacher":
        return fine_tune(ctx, stage.key(ctx), allow_finetune=False)
    return stage.make(ctx, stage.key(ctx))
