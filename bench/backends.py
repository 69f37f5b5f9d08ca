"""The rows of the bench: one model on one backend (an inference engine, engines/), device and
precision; what the machine or the run lacks for a row (the reason it is skipped), and the row loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.config import DEVICES
from engines import Loaded, engine, engines, load_model
from kd.errors import KdError
from kd.runfolder import RunFolder

# (backend, device, precision) in the order the table lists them: by device, then engine, then what it offers
COMBOS = tuple((cls.name, device, precision) for device in DEVICES for cls in engines()
               for d, precision in cls.offers if d == device)


@dataclass(frozen=True)
class Row:
    model: str
    backend: str
    device: str
    precision: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.backend}-{self.device}-{self.precision}"

    @property
    def reference(self) -> Row:
        """What this row's speed-up is measured against: the teacher in PyTorch fp32 on the same device."""
        return Row("teacher", "pytorch", self.device, "fp32")


def rows_for(models: list[str], devices: list[str]) -> list[Row]:
    return [Row(m, b, d, p) for m in models for b, d, p in COMBOS if d in devices]


def weights_file(run: RunFolder, row: Row) -> Path:
    return engine(row.backend).model_file(run, row.model, row.precision)


def missing(row: Row, run: RunFolder) -> str | None:
    """Why this machine or this run folder cannot give the row (None: it can)."""
    return engine(row.backend).missing(run, row.model, row.device, row.precision)


def recorded_params(run: RunFolder, model: str) -> int:
    """The trained model's parameter count, as training recorded it (kd.models.count_params) in metrics.json."""
    params = run.model_metrics(model).get("params")
    if not isinstance(params, int):
        raise KdError(f"{run.model_dir(model) / 'metrics.json'}: no params recorded; the {model} stage did not "
                      "finish here (run make train-all)")
    return params


def load(row: Row, run: RunFolder) -> Loaded:
    """The row's model with its engine's deployed settings (`bench_options`: ONNX Runtime's threads spinning)."""
    options = engine(row.backend).bench_options
    loaded = load_model(row.backend, weights_file(run, row), row.device, row.precision, **options)
    loaded.params = recorded_params(run, row.model)
    return loaded
