"""What every stage of a run reads, and nothing a stage writes: the config, the run folder, this process's device and
place among the processes, the splits and the students' rows, their fingerprints, the methods and batch plans.

Each input is loaded on first use and then kept, so that a run checks them all before it writes anything
(kd.run.stages.check_inputs) and the stages read the very same objects. What it remembers as the run goes: which
model folders it has verified against their recorded sha256, so that no weights are hashed twice; and the ensemble
members of other models that the check loaded, until their stage takes them, so that none is loaded twice.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from accelerate import PartialState

from kd.config import RunConfig
from kd.data import Splits, fingerprint, load_splits, stratified_take
from kd.device import detect_device, resolve_precision
from kd.errors import KdError
from kd.features import tokenized
from kd.manifest import RunStart
from kd.methods import FILE_TEACHER, Method, load_method
from kd.models import Teacher, build_student, load_teacher
from kd.run.rows import LabelBudget
from kd.runfolder import RunFolder, sha256_file
from kd.teacherfile import read_teacher_file
from kd.trainer import BatchPlan, batch_plans


class RunContext:
    def __init__(self, cfg: RunConfig, run_dir: Path, methods: list[Method] | None = None):
        """`methods`: the run's students (default: config `methods`, loaded from kd/methods/)."""
        self.cfg = cfg
        self.run = RunFolder(Path(run_dir))
        self.device = detect_device()
        # cpu=True is what makes accelerate see a torchrun launch on CPU as multi-process (gloo), not as N copies
        self.state = PartialState(cpu=self.device == "cpu")
        # the precision teachers predict in (their logits, a calibration fold's held-out rows), recorded in the manifest
        self.teacher_precision = resolve_precision(cfg.teacher.train.precision, self.device)
        if methods is not None:
            self.__dict__["methods"] = list(methods)
        self._verified: dict[str, tuple] = {}  # model -> the stat of its files when their sha256 last matched
        # (model, tokenizer, seed) -> an ensemble member's starting weights as the input check loaded them
        self._kept: dict[tuple, Teacher] = {}

    # ---- inputs, loaded once --------------------------------------------------------------------

    @functools.cached_property
    def splits(self) -> Splits:
        return load_splits(self.cfg.data)

    @functools.cached_property
    def student_train(self):
        rows = self.cfg.student.train_rows
        return stratified_take(self.splits.train, rows, self.cfg.data.seed, what=f"student.train_rows={rows}",
                               where="the train split")

    @functools.cached_property
    def budget(self) -> LabelBudget:
        """The students' train rows split by the label budget: labelled rows and the pool."""
        return LabelBudget.choose(self.student_train, self.cfg.data)

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        fps = self.splits.fingerprints()
        fps["student_train"] = fingerprint(self.student_train)
        return fps

    @functools.cached_property
    def teacher(self):
        """The teacher as loaded (kd.models.Teacher): its starting weights, tokenizer and label match."""
        return load_teacher(self.cfg, self.splits.label_names)

    def member_teacher(self, cfg: RunConfig, check: bool = False) -> Teacher:
        """An ensemble member's teacher at its starting weights (cfg: the run's config as the member sees it). The
        input check loads it (check=True) and keeps it; the first stage that starts from the same weights (the same
        model, tokenizer and seed: the member's training, or its retraining where that finished) takes it; anything
        else loads it anew."""
        tc = cfg.teacher
        key = (tc.model, tc.tokenizer, tc.train.seed)
        teacher = self._kept.pop(key, None) or load_teacher(cfg, self.splits.label_names)
        if check:
            self._kept[key] = teacher
        return teacher

    @functools.cached_property
    def batch_plans(self) -> dict[str, BatchPlan]:
        """Each role's global batches split over this launch's processes (teacher, student)."""
        return batch_plans(self.cfg, self.state.num_processes)

    @functools.cached_property
    def methods(self) -> list[Method]:
        """The run's methods (config `methods`, recipes in kd/methods/): one student each."""
        if not self.cfg.methods:
            raise KdError("config methods=[]: expected at least one method, e.g. [baseline, kd]")
        found = [load_method(str(name)) for name in self.cfg.methods]
        names = [m.model_name for m in found]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice:
            raise KdError(f"config methods={self.cfg.methods}: two of them train the model {twice!r}")
        return found

    @functools.cached_property
    def file_teacher(self) -> tuple[np.ndarray, str]:
        """The run's teacher_logits file (methods with teacher: file): its logits over the students' rows, checked,
        and its sha256."""
        if not self.cfg.teacher_logits:
            raise KdError("a method has teacher=file, but the run names no file of soft labels: pass "
                          "--teacher-logits FILE (config teacher_logits)")
        path = Path(self.cfg.teacher_logits)
        logits = read_teacher_file(path, self.student_train["text"][:], self.splits.label_names)
        return logits, sha256_file(path)

    def drop_teacher(self) -> None:
        """Let go of the loaded teacher and of the members the input check kept; each loads again when a stage needs
        it (a study holds every cell's run from planning to running, and a model per cell would add up)."""
        self.__dict__.pop("teacher", None)
        self.drop_members()

    def drop_members(self) -> None:
        """Let go of the members the input check kept that no stage took (a resumed run whose member stages had
        finished): the students need none of them."""
        self._kept.clear()

    def method_of(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.model_name == name), None)

    def new_student(self):
        """A student at its starting weights, with its tokenizer (the same seed: the same weights every time)."""
        return build_student(self.cfg, self.splits.label_names)

    def check_run_folder(self) -> None:
        previous = self.run.read_manifest().get("config", {}).get("preset")
        if previous and previous != self.cfg.preset:
            raise KdError(
                f"run folder {self.run.root} holds a {previous!r} run, not {self.cfg.preset!r}: "
                "pass another --run-dir (or RUN=...)"
            )

    def start_record(self) -> RunStart:
        """What the manifest records as a command starts."""
        splits = self.splits
        return RunStart(
            config=self.cfg.to_dict(), device=self.device, precision=self.teacher_precision,
            processes=self.state.num_processes,
            batches={role: plan.as_dict() for role, plan in self.batch_plans.items()},
            source=splits.source, label_names=splits.label_names,
            rows={"train": len(splits.train), "student_train": len(self.student_train),
                  "labelled": len(self.budget.labelled_rows), "validation": len(splits.validation),
                  "test": len(splits.test)},
            fingerprints=self.fingerprints,
        )

    # ---- reading the run folder ------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.state.is_main_process:
            print(f"kd: {message}", flush=True)

    def tokenized(self, split: str, tokenizer):
        """A split (train, validation, test, or student_train: the students' rows) tokenized, from the cache."""
        ds = self.student_train if split == "student_train" else getattr(self.splits, split)
        return tokenized(ds, self.fingerprints[split], tokenizer, self.cfg.data.max_length,
                         self.run.cache_dir("tokenized"), self.state)

    def weights_sha(self, name: str) -> str:
        """The sha256 a finished model recorded for its weights ("" when it has not finished); a file teacher's:
        the file's."""
        if name == FILE_TEACHER:
            return self.file_teacher[1]
        metrics = self.run.model_dir(name) / "metrics.json"
        return json.loads(metrics.read_text()).get("weights_sha256", "") if metrics.is_file() else ""

    def _files_stat(self, name: str) -> tuple | None:
        folder = self.run.model_dir(name)
        try:
            return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (
                (folder / "model.safetensors").stat(), (folder / "metrics.json").stat()))
        except OSError:
            return None

    def verified_model(self, name: str) -> Path:
        """A finished model's folder, its weights checked against their recorded sha256: hashed once per run, and
        again only if its files were replaced since."""
        found = self.run.members(name) if (self.run.model_dir(name) / "metrics.json").is_file() else []
        if found:  # an ensemble: its members' weights
            for member in found:
                self.verified_model(member)
            return self.run.model_dir(name)
        seen = self._files_stat(name)
        if seen is None or self._verified.get(name) != seen:
            self.run.verified_model(name)
            self._verified[name] = seen
        return self.run.model_dir(name)

    def saved(self, name: str) -> None:
        """`name` was just written whole by this run, its sha256 recorded from the weights it wrote."""
        self._verified[name] = self._files_stat(name)
