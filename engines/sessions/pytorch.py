"""PyTorch (transformers) on the CPU, a CUDA GPU or Apple MPS: the reference every export is checked against."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines import Batch, Engine
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
    offers = (("cpu", "fp32"), ("cpu", "bf16"), ("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16"),
              ("mps", "fp32"), ("mps", "fp16"))
    files = dict.fromkeys(PRECISIONS, "model.safetensors")  # one fp32 file, cast on loading
    file_suffix = None  # from_pretrained loads the folder (config, weights)
    made_by = "make train-all"
    package = "torch"

    def __init__(self, model: torch.nn.Module, file: Path | None = None, autocast: str | None = None):
        """A model already in memory (`open` loads one from a folder), run in its weights' precision, or under
        `torch.autocast` to `autocast` ("bf16") with fp32 weights."""
        from kd.models import model_input_names

        first = next(model.parameters())
        precision = autocast or next(p for p in PRECISIONS if dtype(p) == first.dtype)
        super().__init__(file, first.device.type, precision)
        self.model, self._device, self._autocast = model, first.device, autocast
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
        if device == "cpu" and precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "this CPU has no bf16 (neither avx512_bf16 nor AMX: oneDNN reports no bf16 support)"
        if device == "mps" and not torch.backends.mps.is_available():
            return "no Apple MPS device (torch.backends.mps.is_available() is False)"
        return None

    @classmethod
    def open(cls, file: Path, device: str, precision: str, allow_pickle: bool = False) -> PyTorchEngine:
        """`file`: a save_pretrained folder or its model.safetensors. Safetensors only unless `allow_pickle`
        (pickled weights can run code when loaded). bf16 on the CPU is `torch.autocast` over the fp32 weights, as
        users run it there: the matrix products in bf16, softmax and LayerNorm in fp32."""
        from transformers import AutoModelForSequenceClassification

        autocast = precision if device == "cpu" and precision != "fp32" else None
        folder = file if file.is_dir() else file.parent
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=None if allow_pickle else True, dtype=dtype("fp32" if autocast else precision))
        weights = folder / cls.files[precision]
        return cls(model.to(device).eval(), weights if weights.is_file() else folder, autocast)

    def run(self, batch: Batch) -> np.ndarray:
        """The copies to and from the device and a synchronize are part of the call."""
        import torch

        inputs = {k: torch.from_numpy(np.asarray(v)).to(self._device) for k, v in batch.items() if k in self._names}
        autocast = (torch.autocast(self._device.type, dtype(self._autocast)) if self._autocast
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            logits = self.model(**inputs).logits
            synchronize(self._device)
            return logits.float().cpu().numpy()
