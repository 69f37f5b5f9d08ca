"""PyTorch (transformers) on the CPU, a CUDA GPU or Apple MPS: the reference every export is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from export.engines import Batch, Engine
from kd.runfolder import RunFolder

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "fp16", "bf16")  # the torch dtypes of the same names


def dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def synchronize(device: torch.device) -> None:
    """Wait for the accelerator: its calls return before the work is done, so a timer must wait too."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PyTorchEngine(Engine):
    name = "pytorch"
    rank = 0
    offers = (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16"), ("mps", "fp32"),
              ("mps", "fp16"))
    files = dict.fromkeys(PRECISIONS, "model.safetensors")  # one fp32 file, cast on loading
    file_suffix = None  # from_pretrained loads the folder (config, weights)
    made_by = "make train-all"
    package = "torch"

    def __init__(self, model: torch.nn.Module, file: Path | None = None):
        """A model already in memory (`open` loads one from a folder)."""
        from kd.models import model_input_names

        first = next(model.parameters())
        precision = next(p for p in PRECISIONS if dtype(p) == first.dtype)
        super().__init__(file, first.device.type, precision)
        self.model, self._device = model, first.device
        self._names = set(model_input_names(model))

    @classmethod
    def folder(cls, run: RunFolder, model: str) -> Path:
        return run.model_dir(model)

    @classmethod
    def machine_lacks(cls, device: str, precision: str) -> str | None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name()} has no bf16"
        if device == "mps" and not torch.backends.mps.is_available():
            return "no Apple MPS device (torch.backends.mps.is_available() is False)"
        return None

    @classmethod
    def open(cls, file: Path, device: str, precision: str, allow_pickle: bool = False) -> PyTorchEngine:
        """`file`: a save_pretrained folder or its model.safetensors. Safetensors only unless `allow_pickle`
        (pickled weights can run code when loaded)."""
        from transformers import AutoModelForSequenceClassification

        folder = file if file.is_dir() else file.parent
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=None if allow_pickle else True, dtype=dtype(precision))
        weights = folder / cls.files[precision]
        return cls(model.to(device).eval(), weights if weights.is_file() else folder)

    def run(self, batch: Batch) -> np.ndarray:
        """The copies to and from the device and a synchronize are part of the call."""
        import torch

        inputs = {k: torch.from_numpy(np.asarray(v)).to(self._device) for k, v in batch.items() if k in self._names}
        with torch.inference_mode():
            logits = self.model(**inputs).logits
            synchronize(self._device)
            return logits.float().cpu().numpy()
