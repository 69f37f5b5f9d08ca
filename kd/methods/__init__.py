"""Distillation methods as named recipes (kd/methods/<name>.yaml): which teacher, which rows the student learns
from, and the loss terms it sums with their weights (kd/terms/). Adding a method is one YAML file; adding a term,
one module in kd/terms/."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from kd.config import read_named_yaml, yaml_names
from kd.errors import KdError
from kd.terms import ATTENTION, HIDDEN, LOGITS, TERMS, Shapes, Term, build

METHOD_DIR = Path(__file__).parent
# What the teacher is before it teaches: none; fine-tuned on the labelled rows (the run's `teacher`); or
# self-trained: fine-tuned again on the labelled rows plus its own confident labels on the pool, for `rounds` rounds
# (the run's `teacher-self-train`). The pool's labels are never read. Each procedure is a row of kd.run.TEACHERS.
TEACHERS = ("none", "finetune", "self-train")
# Which of the students' train rows the student learns from: the labelled ones only; every row, the pool's with
# their labels withheld (the teacher's terms teach there); or the labelled rows plus the pool rows the teacher
# labels most confidently, with the teacher's labels (pseudo-labels).
ROWS = ("labelled", "all", "pseudo-labelled")


@dataclass(frozen=True)
class TermSpec:
    """A term of a recipe. A weight or temperature the recipe leaves out comes from the run's `distill` section
    (kd.config.DistillConfig), so that a preset or `--set distill.temperature=4` tunes every recipe alike: `ce`
    weighs alpha, a term on the teacher's logits 1 - alpha at distill.temperature; other terms need a weight."""

    term: str
    weight: float | None
    params: dict = field(default_factory=dict)

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

    name: str
    description: str
    teacher: str
    rows: str
    terms: tuple[TermSpec, ...]
    model: str = ""  # the model folder it trains (models/<model>); its name where empty
    calibrate: bool = False
    folds: int = 2
    rounds: int = 1
    per_class: int = 500
    min_confidence: float = 0.0

    @property
    def model_name(self) -> str:
        return self.model or self.name

    @property
    def teacher_model(self) -> str | None:
        """The run's model folder of the teacher it learns from (None: no teacher): `teacher` when fine-tuned,
        teacher-<procedure> when another procedure makes it (teacher-self-train)."""
        if self.teacher == "none":
            return None
        return "teacher" if self.teacher == "finetune" else f"teacher-{self.teacher}"

    def recipe(self) -> dict:
        """What the trained student depends on, for its stage key (the description aside)."""
        out = dataclasses.asdict(self)
        out.pop("description")
        return out

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


SETTINGS = {"calibrate": bool, "folds": int, "rounds": int, "per_class": int, "min_confidence": float}


def load_method(name: str) -> Method:
    """A method from its name (kd/methods/<name>.yaml) or a YAML path, checked before anything runs."""
    path, raw = read_named_yaml(name, METHOD_DIR, "method")
    if not isinstance(raw, dict):
        raise KdError(f"{path}: expected a mapping with description, teacher, rows and terms")
    known = {"description", "model", "teacher", "rows", "terms", *SETTINGS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise KdError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    teacher, rows = raw.get("teacher", "finetune"), raw.get("rows", "all")
    if teacher not in TEACHERS:
        raise KdError(f"{path}: teacher={teacher!r}: expected one of {', '.join(TEACHERS)}")
    if rows not in ROWS:
        raise KdError(f"{path}: rows={rows!r}: expected one of {', '.join(ROWS)}")
    settings = {}
    for key, kind in SETTINGS.items():
        if key in raw:
            value = raw[key]
            ok = (isinstance(value, bool) if kind is bool else
                  not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int))
            if not ok:
                raise KdError(f"{path}: {key}={value!r}: expected {'true or false' if kind is bool else 'a number'}")
            settings[key] = kind(value)
    if settings.get("folds", 2) < 2 or settings.get("rounds", 1) < 1 or settings.get("per_class", 1) < 1:
        raise KdError(f"{path}: expected folds >= 2, rounds >= 1 and per_class >= 1")
    if not 0 <= settings.get("min_confidence", 0.0) < 1:
        raise KdError(f"{path}: min_confidence={settings['min_confidence']!r}: expected 0 <= value < 1")
    model = raw.get("model", "")
    if not isinstance(model, str) or (model and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", model)) \
            or model.startswith("teacher"):
        raise KdError(f"{path}: model={model!r}: expected a folder name of lower-case letters, digits, - and _, "
                      "not starting with 'teacher'")
    terms = raw.get("terms")
    if not isinstance(terms, list) or not terms:
        raise KdError(f"{path}: terms: expected a list of {{term: NAME, weight: W, ...settings}}")
    specs = []
    for i, item in enumerate(terms):
        where = f"{path}: terms[{i}]"
        if not isinstance(item, dict) or "term" not in item:
            raise KdError(f"{where}: expected {{term: NAME, weight: W, ...settings}}, got {item!r}")
        term_settings = dict(item)
        odd = next((k for k in term_settings if not isinstance(k, str)), None)
        if odd is not None:
            raise KdError(f"{where}: setting {odd!r} is not a name (YAML reads on, off, yes and no as true or false: "
                          "quote the key)")
        term, weight = term_settings.pop("term"), term_settings.pop("weight", None)
        if term not in TERMS:
            raise KdError(f"{where}: unknown loss term {term!r} (known: {', '.join(sorted(TERMS))})")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
            raise KdError(f"{where}: weight={weight!r}: expected a number >= 0")
        specs.append(TermSpec(term, None if weight is None else float(weight), term_settings))
    needs_teacher = any(TERMS[s.term].needs for s in specs) or rows == "pseudo-labelled"
    if teacher == "none" and (needs_teacher or settings.get("calibrate")):
        raise KdError(f"{path}: teacher=none, but its terms, rows or calibration need a teacher")
    if settings.get("calibrate") and teacher != "finetune":
        raise KdError(f"{path}: calibrate=true needs teacher=finetune (cross-fitting trains the teacher's procedure "
                      "once per fold; a self-trained teacher would repeat its rounds per fold)")
    if teacher != "none" and not needs_teacher:
        raise KdError(f"{path}: teacher={teacher}, but no term or row set reads the teacher: use teacher=none")
    return Method(path.stem, str(raw.get("description", "")), teacher, rows, tuple(specs), model=model, **settings)
