"""Stage keys: what a model of the run depends on. A finished model whose recorded key differs from the one its stage
would have now is stale, and is trained again; a checkpoint of another key is never resumed."""

from __future__ import annotations

import json

from kd.digest import short_sha256
from kd.methods import Method
from kd.run.context import RunContext
from kd.runfolder import TEACHER


def _key(ctx: RunContext, parts: list[str]) -> str:
    # the parts joined as they always were, so that runs finished before stay current
    return short_sha256("|".join([*parts, json.dumps(ctx.fingerprints, sort_keys=True)]))


def teacher_key(ctx: RunContext, name: str = TEACHER, depends_on: tuple[str, ...] = ()) -> str:
    """A teacher's key: the data and teacher settings, the data's content and, for a teacher trained on the way
    (teacher-<part>: a calibration fold, a self-trained teacher, one of its rounds), its name and `depends_on`."""
    parts = [ctx.cfg.section_hash("data", "teacher")]
    if name != TEACHER:
        parts += [name, *depends_on]
    return _key(ctx, parts)


def student_key(ctx: RunContext, method: Method) -> str:
    """A student's key: its config sections, its recipe, the data's content and the weights of the teacher it learns
    from."""
    sections = ("data", "teacher.model", "student") if method.teacher == "none" else (
        "data", "teacher", "student", "distill")
    parts = [ctx.cfg.section_hash(*sections), json.dumps(method.recipe(), sort_keys=True)]
    if method.teacher_model:
        parts.append(ctx.weights_sha(method.teacher_model))
    return _key(ctx, parts)


def is_current(ctx: RunContext, name: str, key: str) -> bool:
    """`name` finished with this key, and its weights are still the ones it saved (else an error says so)."""
    metrics = ctx.run.model_dir(name) / "metrics.json"
    if not metrics.is_file():
        return False
    try:
        recorded = json.loads(metrics.read_text()).get("stage_key")
    except ValueError:
        return False  # never written by a finished stage (those are written whole): do it again
    if recorded != key:
        return False
    ctx.verified_model(name)  # done, but are the weights still the ones it saved?
    return True
