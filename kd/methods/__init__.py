"""Distillation methods as named recipes (kd/methods/<name>.yaml): which teacher, which rows the student learns
from, and the loss terms it sums with their weights (kd/terms/). Adding a method is one YAML file; adding a term,
one module in kd/terms/."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from kd import runfolder
from kd.config import read_named_yaml, yaml_names
from kd.errors import KdError
from kd.terms import ATTENTION, HIDDEN, LOGITS, TERMS, Shapes, Term, build, known_term
from kd.typed import NOT_READ, REST, Check, at_least, read

METHOD_DIR = Path(__file__).parent
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")  # a procedure's or a model folder's name: lower-case letters, digits, - and _
# What the teacher is before it teaches (Method.teacher): none; fine-tuned on the labelled rows (the run's `teacher`);
# or made by another procedure, such as self-train: fine-tuned again on the labelled rows plus its own confident
# labels on the pool, for `rounds` rounds (the run's `teacher-self-train`). The pool's labels are never read. The
# procedures are the rows of kd.run.stages.TEACHERS, which checks a recipe's name against them when a run starts:
# a procedure added there needs no edit here.
TEACHER = Check(lambda t: NAME.fullmatch(t) is not None,
                "none, finetune or a teacher procedure's name (kd/run/stages.py: TEACHERS), such as self-train")
# Which of the students' train rows the student learns from (Method.rows): the labelled ones only; every row, the
# pool's with their labels withheld (the teacher's terms teach there); or the labelled rows plus the pool rows the
# teacher labels most confidently, with the teacher's labels (pseudo-labels).
ROWS = ("labelled", "all", "pseudo-labelled")
# `teacher: file`: the soft labels of the run's teacher_logits file (kd/teacherfile.py), not a model of the run
FILE_TEACHER = "teacher-file"
# The teacher procedures that pool an ensemble of teachers (Method.members, Method.teachers): the members fine-tuned
# on the labelled rows, or those members each fine-tuned again with the ensemble's confident pool labels.
ENSEMBLES = ("ensemble", "self-train-ensemble")
COUNTS = "folds >= 2, rounds >= 1 and per_class >= 1"
FOLDER = Check(lambda m: not m or (NAME.fullmatch(m) is not None and not runfolder.is_teacher(m)),
               "a folder name of lower-case letters, digits, - and _, not starting with 'teacher'")


@dataclass(frozen=True)
class TermSpec:
    """A term of a recipe, written {term: NAME, weight: W, ...settings}. A weight or temperature the recipe leaves out
    comes from the run's `distill` section (kd.config.DistillConfig), so that a preset or `--set
    distill.temperature=4` tunes every recipe alike: `ce` weighs alpha, a term on the teacher's logits 1 - alpha at
    distill.temperature; other terms need a weight. The settings go to the term's constructor, which checks them
    against the models' shapes when it is built."""

    term: str
    weight: Annotated[float | None, Check(lambda w: w is None or w >= 0, "a number >= 0")] = None
    params: dict[str, Any] = field(default_factory=dict, metadata={REST: True})

    def __post_init__(self):
        if self.weight is not None:  # 1 and 1.0 are one recipe, with one stage key
            object.__setattr__(self, "weight", float(self.weight))

    def settled(self, distill, where: str) -> tuple[float, dict]:
        """The weight and settings with the run's defaults filled in."""
        soft = LOGITS in TERMS[self.term].needs
        params = {"temperature": distill.temperature, **self.params} if soft else dict(self.params)
        if self.weight is not None:
            return self.weight, params
        if self.term == "ce":
            return distill.alpha, params
        if soft:
            return 1.0 - distill.alpha, params
        raise KdError(f"{where}: the {self.term} term needs a weight")


@dataclass(frozen=True)
class Method:
    """A recipe. The pseudo-label settings (`per_class`, `min_confidence`) serve both self-training and the
    pseudo-labelled rows; `calibrate`: the teacher's logits are temperature-scaled before they become soft targets,
    the temperature fitted on out-of-fold logits of `folds` teachers cross-fitted on the labelled rows."""

    terms: Annotated[tuple[TermSpec, ...], Check(bool, "a list of {term: NAME, weight: W, ...settings}")]
    name: str = field(default="", metadata={NOT_READ: True})  # its file's name
    description: str = ""
    teacher: Annotated[str, TEACHER] = "finetune"
    rows: Literal[ROWS] = "all"
    # the model folder it trains (models/<model>); its name where empty
    model: Annotated[str, FOLDER] = ""
    calibrate: bool = False
    folds: Annotated[int, at_least(2, COUNTS)] = 2
    rounds: Annotated[int, at_least(1, COUNTS)] = 1
    per_class: Annotated[int, at_least(1, COUNTS)] = 500
    min_confidence: Annotated[float, Check(lambda c: 0 <= c < 1, "0 <= value < 1")] = 0.0
    # An ensemble teacher's members (teacher: ensemble or self-train-ensemble): `members` fine-tunes of the run's
    # teacher (seeds teacher.train.seed, +1, +2, ...; the first is the run's `teacher` itself) and one member for each
    # model of `teachers` (hub id, folder or bundled name, each with its own tokenizer and architecture).
    members: Annotated[int, at_least(0, "members >= 0")] = 5
    teachers: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "min_confidence", float(self.min_confidence))  # one recipe, one stage key

    @property
    def model_name(self) -> str:
        return self.model or self.name

    @property
    def teacher_model(self) -> str | None:
        """The run's model folder of the teacher it learns from (None: no teacher): `teacher` when fine-tuned,
        teacher-<procedure> when another procedure makes it (teacher-self-train)."""
        if self.teacher == "none":
            return None
        folder = runfolder.TEACHER
        return folder if self.teacher == "finetune" else f"{folder}-{self.teacher}"  # file: FILE_TEACHER

    def recipe(self) -> dict:
        """What the trained student depends on, for its stage key (the description aside)."""
        out = dataclasses.asdict(self)
        out.pop("description")
        if not self.ensemble:  # settings it does not read stay out of its key (keys from before they existed hold)
            out.pop("members")
            out.pop("teachers")
        return out

    @property
    def ensemble(self) -> bool:
        """True when it learns from an ensemble of teachers (its members pooled)."""
        return self.teacher in ENSEMBLES

    @property
    def needs(self) -> frozenset[str]:
        """The teacher signals its terms read."""
        return frozenset().union(*(TERMS[t.term].needs for t in self.terms))

    @property
    def online(self) -> bool:
        """True when a term needs the teacher's hidden states or attention: the teacher runs on every batch,
        frozen. Logit-only methods train from the cached teacher logits."""
        return bool(self.needs & {HIDDEN, ATTENTION})

    def build_terms(self, shapes: Shapes, distill) -> list[tuple[float, Term]]:
        """Each term with its weight, built for these models' shapes; `distill`: the run's DistillConfig, which
        fills in what the recipe leaves out."""
        built = []
        for i, spec in enumerate(self.terms):
            where = f"method {self.name}, terms[{i}] ({spec.term})"
            weight, params = spec.settled(distill, where)
            built.append((weight, build(spec.term, params, shapes, where)))
        return built


def shapes(student_config, teacher_config) -> Shapes:
    """The widths and depths the terms' parameters depend on, from two transformers configs."""
    return Shapes(student_config.hidden_size, student_config.num_hidden_layers, teacher_config.hidden_size,
                  teacher_config.num_hidden_layers)


def resolve_terms(method, student_config, teacher_config=None, temperature: float | None = None,
                  alpha: float | None = None) -> list[tuple[float, Term]]:
    """The weighted terms of `method` (a name, a YAML path or a Method) for a student and teacher of these configs
    (no teacher config: cached logits only, which fit any teacher); `temperature` and `alpha` fill in what the
    recipe leaves out, DistillConfig's defaults where they are None."""
    from kd.config import DistillConfig

    recipe = method if isinstance(method, Method) else load_method(str(method))
    if teacher_config is None and recipe.online:
        raise KdError(f"method {recipe.name}: its terms need the teacher's hidden states or attention; pass the live "
                      "teacher_model")
    given = {"temperature": temperature, "alpha": alpha}
    distill = DistillConfig(**{k: v for k, v in given.items() if v is not None})
    return recipe.build_terms(shapes(student_config, teacher_config or student_config), distill)


def available_methods() -> list[str]:
    return yaml_names(METHOD_DIR)


def load_method(name: str) -> Method:
    """A method from its name (kd/methods/<name>.yaml) or a YAML path, checked before anything runs: its fields by
    their types (kd.typed), then what the fields mean together."""
    path, raw = read_named_yaml(name, METHOD_DIR, "method")
    method = dataclasses.replace(read(Method, raw, f"{path}:"), name=path.stem)
    for i, spec in enumerate(method.terms):
        known_term(spec.term, f"{path}: terms[{i}]")
    needs_teacher = bool(method.needs) or method.rows == "pseudo-labelled"
    if method.teacher == "none" and (needs_teacher or method.calibrate):
        raise KdError(f"{path}: teacher=none, but its terms, rows or calibration need a teacher")
    if method.teacher == "file" and method.online:
        raise KdError(f"{path}: teacher=file gives logits only, but its terms read a live teacher's hidden states or "
                      "attention: use logit terms (kl, reverse_kl, ce)")
    if method.calibrate and method.teacher != "finetune":
        raise KdError(f"{path}: calibrate=true needs teacher=finetune (cross-fitting trains the teacher's procedure "
                      "once per fold; a self-trained teacher would repeat its rounds per fold)")
    if method.ensemble and method.members + len(method.teachers) < 2:
        raise KdError(f"{path}: teacher={method.teacher} pools members + teachers models: expected at least two, got "
                      f"members={method.members} and {len(method.teachers)} teachers")
    if method.ensemble and method.online:
        raise KdError(f"{path}: its terms run a live teacher on the student's tokens (hidden states, attention), but "
                      f"teacher={method.teacher} pools several teachers: use logit terms (kl, reverse_kl, ce)")
    if not method.ensemble and (method.members != Method.members or method.teachers):
        raise KdError(f"{path}: members and teachers are settings of an ensemble teacher (teacher: "
                      f"{' or '.join(ENSEMBLES)}), not of teacher={method.teacher}")
    if method.teacher != "none" and not needs_teacher:
        raise KdError(f"{path}: teacher={method.teacher}, but no term or row set reads the teacher: use teacher=none")
    return method
