"""The rows of the bench: one model on one backend, device and precision; what the machine or the run lacks
for a row (the reason it is skipped), and the row loaded as a runner over tokenized batches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kd.runfolder import RunFolder

# (backend, device, precision) in the order the table lists them
COMBOS = (
    ("pytorch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"), ("onnxruntime", "cpu", "int8"),
    ("pytorch", "cuda", "fp32"), ("pytorch", "cuda", "fp16"), ("pytorch", "cuda", "bf16"),
    ("onnxruntime", "cuda", "fp32"), ("onnxruntime", "cuda", "int8"),
    ("pytorch", "mps", "fp32"), ("pytorch", "mps", "fp16"),
)
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}


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

    def fields(self) -> dict[str, str]:
        return {"row": self.id, "model": self.model, "backend": self.backend, "device": self.device,
                "precision": self.precision}


def rows_for(models: list[str], devices: list[str]) -> list[Row]:
    return [Row(m, b, d, p) for m in models for b, d, p in COMBOS if d in devices]


def weights_file(run: RunFolder, row: Row) -> Path:
    if row.backend == "pytorch":
        return run.model_dir(row.model) / "model.safetensors"
    return run.onnx_dir(row.model) / ONNX_FILES[row.precision]


def missing(row: Row, run: RunFolder) -> str | None:
    """Why this machine or this run folder cannot give the row (None: it can)."""
    import torch

    if row.backend == "pytorch":
        if row.device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if row.device == "cuda" and row.precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name()} has no bf16"
        if row.device == "mps" and not torch.backends.mps.is_available():
            return "no Apple MPS device (torch.backends.mps.is_available() is False)"
    else:
        import onnxruntime as ort

        if row.device == "cuda" and row.precision == "int8":
            return "ONNX Runtime's dynamic int8 has no CUDA kernels (MatMulInteger runs on the CPU provider only)"
        if row.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
    file = weights_file(run, row)
    if not file.is_file():
        verb = "make train-all" if row.backend == "pytorch" else "make export"
        return f"{file} is missing: run `{verb}` for {run.root}"
    return None


@dataclass
class Loaded:
    runner: object  # tokenized batch (numpy arrays) -> logits (numpy); waits for the device before returning
    tokenizer: object
    config: object  # the transformers config: layers and widths for the FLOP count
    file: Path
    params: int

    @property
    def size_mb(self) -> float:
        return self.file.stat().st_size / 2**20


def count_params(safetensors_file: Path) -> int:
    """Parameters stored in a safetensors file, read from its header (no weights loaded)."""
    with open(safetensors_file, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def load(row: Row, run: RunFolder) -> Loaded:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    file = weights_file(run, row)
    folder = file.parent
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    params = count_params(run.model_dir(row.model) / "model.safetensors")
    if row.backend == "pytorch":
        from export.inference import torch_runner

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[row.precision]
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True, dtype=dtype)
        return Loaded(torch_runner(model.to(row.device).eval()), tokenizer, config, file, params)
    from export.inference import ort_runner
    from export.ort import session

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if row.device == "cuda" else None
    sess = session(file, providers)
    if row.device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"{file}: onnxruntime fell back to {sess.get_providers()[0]}")
    return Loaded(ort_runner(sess), tokenizer, config, file, params)
