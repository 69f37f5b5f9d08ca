"""Run configuration: dataclasses filled from a preset YAML plus `--set key=value` overrides.

A preset is data, not a code path: every preset goes through the same pipeline with these fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kd.digest import json_fingerprint
from kd.errors import KdError
from kd.typed import read

PRESET_DIR = Path(__file__).parent / "presets"
AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@dataclass
class DataConfig:
    # A local folder with train/test files or a hub dataset id, taken as written (`--data` sets it verbatim);
    # None: the search order of kd.data.locate_data ($KD_DATA, data/ag_news/, then AG News from the hub).
    source: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Names of label ids 0..n-1; used when the files hold ids, and to map label names to ids.
    label_names: list[str] = field(default_factory=lambda: list(AG_NEWS_LABELS))
    train_rows: int | None = None  # stratified subsample of train (before the validation split)
    test_rows: int | None = None  # stratified subsample of test (quick looks only; reports say so)
    validation_rows: int = 1600  # carved from train, stratified and seeded; drives model selection
    # A label budget: how many of the students' train rows carry labels (a stratified, seeded choice; None: all).
    # A teacher that fine-tunes and the baseline student train on those rows only; the distilled student trains
    # on them too and on the rest, the unlabelled transfer pool, from the teacher's soft targets alone. A budget
    # of every student row has no pool, but its teacher still trains on the students' rows only (None: on the
    # whole train split).
    labelled_rows: int | None = None
    labelled_seed: int | None = None  # which rows carry labels under a budget (None: data.seed); a study's seed
    max_length: int = 128
    seed: int = 42


@dataclass
class TrainConfig:
    epochs: float = 1.0
    # At least this many optimizer steps (epochs are raised to reach them), so that a small label budget still
    # trains: 100 labelled rows are 4 batches an epoch.
    min_steps: int = 0
    learning_rate: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    warmup: float = 0.06  # a float < 1 is a fraction of the steps, an integer >= 1 a step count
    weight_decay: float = 0.01
    # Re-initialise the top k transformer layers (and a pooler) before training: with few labels the top layers'
    # pretrained weights can hinder more than help (Zhang et al., "Revisiting Few-sample BERT Fine-tuning", 2021).
    reinit_layers: int = 0
    evals_per_epoch: int = 4  # validation passes per epoch; the best one is kept (0: none, with select=last)
    # validation passes without a better accuracy before training stops; None: every epoch runs (the best
    # validation checkpoint is still the one kept)
    early_stopping_patience: int | None = 3
    # Which weights the stage keeps: best (the validation pass with the best accuracy) or last (the final step;
    # validation chooses nothing, which is what a user with a few hundred labels has to do).
    select: str = "best"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    group_by_length: bool = True
    logging_steps: int = 25
    seed: int = 42


@dataclass
class TeacherConfig:
    # Weights: a hub id, a local folder, "bundled:all-MiniLM-L6-v2", or None to build from `arch`.
    model: str | None = "bundled:all-MiniLM-L6-v2"
    tokenizer: str | None = None  # defaults to `model`
    arch: dict[str, Any] = field(default_factory=dict)  # config fields when building from scratch
    finetune: str = "auto"  # auto | always | never
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class StudentConfig:
    # pretrained: load `model`; from-teacher:0,2,4: DistilBERT from those layers of the teacher's
    # starting (pretrained) weights; random: a DistilBERT built from `arch`.
    init: str = "from-teacher:0,2,4"
    model: str | None = None
    tokenizer: str | None = None  # defaults to `model`, else the teacher's tokenizer
    arch: dict[str, Any] = field(default_factory=dict)
    train_rows: int | None = None  # the students may train on a stratified subset of the train split
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DistillConfig:
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label cross-entropy; 1 - alpha weighs the soft KL term


@dataclass
class RunConfig:
    preset: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # The students this run trains, one per method (recipes in kd/methods/, by name or YAML path), beside the
    # teacher; the report tests each against `baseline`.
    methods: list[str] = field(default_factory=lambda: ["baseline", "kd"])
    # Soft labels from a file (csv, jsonl or parquet; kd/teacherfile.py) that methods with `teacher: file` learn
    # from: an LLM's or an API's labels, or another run's teacher (`kd teacher-logits --out FILE`). `--teacher-logits`.
    teacher_logits: str | None = None
    # Settings of `kd export` (fields of export/config.py's ExportConfig): a preset may pin them, and
    # `kd export --set key=value` overrides them.
    export: dict[str, Any] = field(default_factory=dict)
    allow_pickle: bool = False  # load pytorch_model.bin weights; off: safetensors only
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings as a stage key reads them: fields added since runs were keyed are left out while they hold
        their default (KEY_NEUTRAL), so that a run finished before they existed stays current."""
        return key_settings(self.to_dict())

    def section_hash(self, *names: str) -> str:
        """A short fingerprint of some sections, to tell whether a finished stage is still current."""
        return json_fingerprint({n: _get(self.identity(), n) for n in names})


# field name -> the default at which a stage key leaves it out (RunConfig.identity)
KEY_NEUTRAL: dict[str, Any] = {"reinit_layers": 0, "teacher_logits": None}


def key_settings(d: Any) -> Any:
    """A config mapping (or a manifest's) without the KEY_NEUTRAL fields that hold their default."""
    if not isinstance(d, dict):
        return d
    return {k: key_settings(v) for k, v in d.items() if not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}


def yaml_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_named_yaml(name: str, folder: Path, what: str) -> tuple[Path, Any]:
    """A YAML file by its name (`folder`/<name>.yaml) or its path: the path and the contents, or one clear error
    naming `what` it should have been."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        raise KdError(f"{what} {name!r} not found: expected one of {yaml_names(folder)} or a .yaml file")
    try:
        return path, yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise KdError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None


def available_presets() -> list[str]:
    return yaml_names(PRESET_DIR)


def choose_preset(requested: str | None) -> str:
    """The preset asked for, else `full` where CUDA or MPS is present and `cpu` otherwise (said on stderr)."""
    if requested:
        return requested
    import sys

    from kd.device import detect_device

    device = detect_device()
    preset = "full" if device in ("cuda", "mps") else "cpu"
    reason = f"a {device.upper()} device is present" if device != "cpu" else "no CUDA or MPS device was found"
    print(f"kd: no preset given; using '{preset}' because {reason} (choose with --preset or PRESET=)",
          file=sys.stderr)
    return preset


def load_config(preset: str, overrides: list[str] = (), sections: dict[str, type] | None = None) -> RunConfig:
    """Build a RunConfig from a preset name (or a YAML path) and `key=value` overrides. `sections` maps the
    free-form sections (export) to the dataclass that will read them, so that a typo there stops the run up
    front; the CLI passes them, because the core does not know the packages that build on it."""
    path, raw = read_named_yaml(preset, PRESET_DIR, "preset")
    raw.setdefault("preset", path.stem)
    cfg = build_dataclass(RunConfig, raw, overrides)
    for name, cls in (sections or {}).items():
        read(cls, getattr(cfg, name), "config", (name,))
    return cfg


def build_dataclass(cls, raw: dict[str, Any], overrides: list[str] = ()):
    """Fill a (nested) config dataclass from a mapping and `key=value` overrides; unknown keys are errors."""
    raw = json.loads(json.dumps(raw))  # a copy: overrides must not reach the caller's mapping
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KdError(f"--set {item!r}: expected key=value, e.g. --set distill.temperature=4")
        _set(raw, key.strip().split("."), yaml.safe_load(value))
    return read(cls, raw, "config")


def _set(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        raw = raw.setdefault(key, {})
        if not isinstance(raw, dict):
            raise KdError(f"--set {'.'.join(keys)}: {key} is not a section")
    raw[keys[-1]] = value


def _get(d: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        d = d[key]
    return d
