"""The runtime layer that export/ and bench/ both stand on (kd/ does not know it): a model loaded and run by one
inference engine (sessions/, registered here), plain inference over texts (inference.py), `kd predict`
(predict.py), the CPU's identity (cpu.py) and the int8 variant chosen per CPU (int8_host.py, timed by timing.py).

Inference engines behind one interface. `kd predict`, `kd export` / `export-check` and the bench load a model
and run it only through these classes, so each engine's loading, running and limits are written once.

An engine is one module of engines/sessions/ holding one `Engine` subclass; defining the class registers it under
its `name` (the bench's backend column). Adding one is one new file there. A module imports its runtime (torch,
onnxruntime, openvino) only inside the methods that run a model, so the engines are listed, and an engine whose
`package` is not installed is reported as unavailable, without importing any runtime.

    engine = load("onnxruntime", "runs/cpu/onnx/distilled/model.onnx")
    logits = engine.run(batch)  # a tokenized batch (numpy arrays) -> logits (numpy float32)
    engine.describe()           # engine, device, precision, file, size_mb
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from kd.errors import KdError
from kd.runfolder import RunFolder

Batch = dict[str, np.ndarray]
Runner = Callable[[Batch], np.ndarray]  # what an engine's `run` is: a padded batch -> logits

_REGISTRY: dict[str, type[Engine]] = {}


def feed(names: list[str], batch: Batch, what: str) -> dict[str, np.ndarray]:
    """The tokenizer's arrays a graph takes (`names`), as int64; an input the tokenizer lacks is a clear error
    naming `what` wants it."""
    missing = [n for n in names if n not in batch]
    if missing:
        raise KeyError(f"{what} wants input {missing[0]!r}, the tokenizer gives {sorted(batch)}")
    return {n: np.asarray(batch[n], dtype=np.int64) for n in names}


class Engine:
    """One model file opened by one inference engine on one device, in one precision."""

    name: ClassVar[str]  # registry name and the bench's backend column: "pytorch", "onnxruntime"
    rank: ClassVar[int]  # where its rows stand among the engines' in tables (PyTorch, the reference, first)
    offers: ClassVar[tuple[tuple[str, str], ...]]  # (device, precision) it can run, in table order
    files: ClassVar[dict[str, str]]  # precision -> the model's file in its folder of a run
    file_suffix: ClassVar[str | None]  # a file it loads on its own (".onnx"); None: it loads a model folder
    made_by: ClassVar[str]  # what writes its files into a run folder ("make export")
    package: ClassVar[str]  # the Python package it runs on (its distribution's name on PyPI)
    # how it can score many batches (`run_many`'s modes); the bench times each and keeps the fastest
    bulk_modes: ClassVar[tuple[str, ...]] = ("sync",)
    # the mode export's validation passes use: its fastest on this project's CPU (the bench times them all)
    check_mode: ClassVar[str] = "sync"
    # `open`'s options for the bench: the settings a user would deploy when the model has the cores to itself
    bench_options: ClassVar[dict] = {}
    # True for an engine whose first call on an input shape builds kernels for it: the bench runs each shape once
    # before timing it (bench/workload.py, RowState.warm), as a deployed model has seen it
    compiles_per_shape: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __init__(self, file: Path | None, device: str, precision: str):
        self.file, self.device, self.precision = file, device, precision

    # ---- what it offers and where its files are -----------------------------------------------------------

    @classmethod
    def folder(cls, run: RunFolder, model: str) -> Path:
        """The run's folder holding this engine's files of `model`."""
        raise NotImplementedError

    @classmethod
    def model_file(cls, run: RunFolder, model: str, precision: str) -> Path:
        return cls.folder(run, model) / cls.files[precision]

    @classmethod
    def precision_of(cls, file: Path) -> str:
        """The precision of one of its files, by the file's name in a run folder (fp32 for other names)."""
        return next((p for p, name in cls.files.items() if name == Path(file).name), "fp32")

    @classmethod
    def errors(cls) -> tuple[type[Exception], ...]:
        """What it raises for a model that does not load or run."""
        return ()

    @classmethod
    def not_installed(cls) -> str | None:
        """One line naming the package when it is not installed (None: it is)."""
        return not_installed(cls.package)

    @classmethod
    def unavailable(cls, device: str, precision: str) -> str | None:
        """Why this machine cannot run the engine on `device` in `precision` (None: it can)."""
        if (device, precision) not in cls.offers:
            return f"{cls.name} offers no {precision} on {device}"
        return cls.not_installed() or cls.machine_lacks(device, precision)

    @classmethod
    def machine_lacks(cls, device: str, precision: str) -> str | None:
        """What this machine lacks for one of the (device, precision) the engine offers (None: nothing)."""
        return None

    @classmethod
    def missing(cls, run: RunFolder, model: str, device: str, precision: str) -> str | None:
        """Why this machine or this run folder cannot give the model on `device` in `precision` (None: they can)."""
        reason = cls.unavailable(device, precision)
        if reason:
            return reason
        file = cls.model_file(run, model, precision)
        if not file.is_file():
            return f"{file} is missing: run `{cls.made_by}` for {run.root}"
        return None

    # ---- a loaded model ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, file: Path, device: str, precision: str, **options) -> Engine:
        """The model in `file` (an existing file or model folder), ready to run."""
        raise NotImplementedError

    def run(self, batch: Batch) -> np.ndarray:
        """Host arrays in, host float32 logits out; an accelerator has finished the work when it returns."""
        raise NotImplementedError

    def run_many(self, batches: list[Batch], mode: str = "sync") -> list[np.ndarray]:
        """Logits of every batch, in order; `mode` is one of `bulk_modes` ("sync": one `run` after another)."""
        if mode not in self.bulk_modes:
            raise ValueError(f"{self.name} has no bulk mode {mode!r}; it has {', '.join(self.bulk_modes)}")
        return [self.run(batch) for batch in batches]

    @property
    def size_mb(self) -> float | None:
        return self.file.stat().st_size / 2**20 if self.file and self.file.is_file() else None

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device, "precision": self.precision,
                "file": None if self.file is None else str(self.file), "size_mb": self.size_mb}


def not_installed(package: str) -> str | None:
    """One line naming `package` when it is not installed (None: it is), found without importing it."""
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a package whose import machinery is broken counts as missing
        found = False
    return None if found else f"{package} is not installed (pip install {package}; requirements.txt pins it)"


@functools.cache
def _discover() -> None:
    """Import each module of engines/sessions/ once: defining its class registers the engine."""
    from engines import sessions

    for module in pkgutil.iter_modules(sessions.__path__):
        importlib.import_module(f"{sessions.__name__}.{module.name}")


def engines() -> list[type[Engine]]:
    """Every engine, in table order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda cls: cls.rank)


def engine(name: str) -> type[Engine]:
    known = {cls.name: cls for cls in engines()}
    if name not in known:
        raise KdError(f"engine {name!r}: unknown; expected one of {', '.join(known)}")
    return known[name]


def load(name: str, file: Path, device: str = "cpu", precision: str = "fp32", **options) -> Engine:
    """Open `file` (a model file, or a model folder for an engine that loads folders) with the engine `name`."""
    cls = engine(name)
    file = Path(file)
    if not file.exists():
        raise KdError(f"{file}: no such model file for {name}")
    reason = cls.unavailable(device, precision)
    if reason:
        raise KdError(f"{file}: {reason}")
    return cls.open(file, device, precision, **options)


def engine_for(target: Path) -> tuple[type[Engine], Path] | None:
    """The engine that loads `target` and the file it opens: a file by its suffix; a folder by the fp32 file of
    an engine that loads files (an export folder's model.onnx), else as a model folder. None: no engine loads
    that kind of file."""
    target = Path(target)
    if target.is_file():
        return next(((cls, target) for cls in engines() if cls.file_suffix == target.suffix), None)
    for cls in engines():
        if cls.file_suffix and (target / cls.files["fp32"]).is_file():
            return cls, target / cls.files["fp32"]
    return next(((cls, target) for cls in engines() if cls.file_suffix is None), None)


def file_suffixes() -> list[str]:
    return [cls.file_suffix for cls in engines() if cls.file_suffix]


@dataclass
class Loaded:
    """A model as predict and the bench use it: an engine, the tokenizer and config saved beside its file."""

    engine: Engine
    tokenizer: object
    config: object  # the transformers config: label names, layers and widths
    params: int | None = None  # parameters of the trained model, where the caller knows them (the bench)

    @property
    def label_names(self) -> list[str]:
        return [self.config.id2label[i] for i in range(len(self.config.id2label))]

    @property
    def max_length(self) -> int:
        # a run saves its training max_length as the tokenizer's model_max_length: users truncate the same way
        return min(self.tokenizer.model_max_length, getattr(self.config, "max_position_embeddings", 512))


def load_model(name: str, file: Path, device: str = "cpu", precision: str = "fp32", tokenizer=None,
               **options) -> Loaded:
    """`load`, with the tokenizer (unless given) and the config from the model's folder."""
    from transformers import AutoConfig, AutoTokenizer

    file = Path(file)
    folder = file if file.is_dir() else file.parent
    engine_ = load(name, file, device, precision, **options)
    return Loaded(engine_, tokenizer or AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder))
