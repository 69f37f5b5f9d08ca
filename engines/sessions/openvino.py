"""OpenVINO on the CPU: the fp32 IR (run in f32, or in bf16 where the CPU has it) and NNCF's int8 IR.

Each IR sits in its own folder of the export (onnx/<model>/openvino/, onnx/<model>/openvino_int8/) with the
tokenizer and config beside it, so a folder is what a user copies and loads (`kd predict --model <folder>`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines import Batch, Engine, feed
from kd.device import cpu_count
from kd.runfolder import RunFolder

if TYPE_CHECKING:
    import openvino as ov

FOLDERS = {"fp32": "openvino", "bf16": "openvino", "int8": "openvino_int8"}  # one fp32 IR serves fp32 and bf16
# OpenVINO runs an fp32 IR in bf16 by default on CPUs that have it: fp32 must be asked for. The int8 IR keeps
# OpenVINO's default for its unquantized parts, as a user who loads it gets.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}
LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"


@functools.cache
def core() -> ov.Core:
    import openvino as ov

    return ov.Core()


def cpu_has_bf16() -> bool:
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def input_names(model: ov.Model) -> list[str]:
    """The IR's inputs, in its order (DistilBERT has no token_type_ids)."""
    return [i.get_any_name() for i in model.inputs]


class OpenVinoEngine(Engine):
    name = "openvino"
    rank = 2
    offers = (("cpu", "fp32"), ("cpu", "bf16"), ("cpu", "int8"))
    files = dict.fromkeys(FOLDERS, "model.xml")  # (and model.bin beside it)
    file_suffix = ".xml"
    made_by = "make export"
    package = "openvino"
    # Bulk scoring runs one synchronous request at a time (the LATENCY hint) or an asynchronous queue of requests
    # (the THROUGHPUT hint: several streams, each on a share of the threads); the bench keeps the faster.
    bulk_modes = ("sync", "async")
    check_mode = "async"  # on 2 cores the queue scored the validation split faster than one request at a time
    compiles_per_shape = True  # the CPU plugin builds its kernels for each input shape on first sight

    def __init__(self, model: ov.Model, file: Path, device: str, precision: str):
        super().__init__(file, device, precision)
        self.model = model
        self.input_names = input_names(model)

    @functools.cached_property
    def request(self) -> ov.InferRequest:
        """One synchronous request under the LATENCY hint, made on first use (bulk scoring may never need it)."""
        return self.compiled(LATENCY).create_infer_request()

    @classmethod
    def folder(cls, run: RunFolder, model: str) -> Path:
        return run.onnx_dir(model)

    @classmethod
    def model_file(cls, run: RunFolder, model: str, precision: str) -> Path:
        return cls.folder(run, model) / FOLDERS[precision] / cls.files[precision]

    @classmethod
    def precision_of(cls, file: Path) -> str:
        return "int8" if Path(file).parent.name == FOLDERS["int8"] else "fp32"

    @classmethod
    def errors(cls) -> tuple[type[Exception], ...]:
        return (RuntimeError,)  # what openvino raises for an IR that does not compile or run

    @classmethod
    def machine_lacks(cls, device: str, precision: str) -> str | None:
        if precision == "bf16" and not cpu_has_bf16():
            return "this CPU has no bf16 (OpenVINO's OPTIMIZATION_CAPABILITIES lists no BF16)"
        return None

    @classmethod
    def open(cls, file: Path, device: str, precision: str) -> OpenVinoEngine:
        file = file / cls.files[precision] if file.is_dir() else file
        return cls(core().read_model(file), file, device, precision)

    @functools.cache  # noqa: B019 (one compiled model per hint for the engine's lifetime is the point)
    def compiled(self, hint: str) -> ov.CompiledModel:
        """The model compiled for the CPU with the bench's thread count and this precision, under `hint`."""
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": cpu_count()}
        if PRECISION_HINTS[self.precision]:
            config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[self.precision]
        return core().compile_model(self.model, "CPU", config)

    def feed(self, batch: Batch) -> dict[str, np.ndarray]:
        return feed(self.input_names, batch, "the OpenVINO model")

    def run(self, batch: Batch) -> np.ndarray:
        self.request.infer(self.feed(batch))
        return self.request.get_output_tensor(0).data.astype(np.float32)  # a copy: the request reuses its buffer

    @functools.cached_property
    def queue(self) -> ov.AsyncInferQueue:
        """As many requests as the THROUGHPUT hint's streams want, made once: `run_many` reuses them."""
        import openvino as ov

        return ov.AsyncInferQueue(self.compiled(THROUGHPUT))

    def run_many(self, batches: list[Batch], mode: str = "sync") -> list[np.ndarray]:
        if mode == "sync":
            return super().run_many(batches)
        out: list[np.ndarray | None] = [None] * len(batches)

        def done(request, index):
            out[index] = request.get_output_tensor(0).data.astype(np.float32)

        self.queue.set_callback(done)
        for i, batch in enumerate(batches):
            self.queue.start_async(self.feed(batch), i)
        self.queue.wait_all()
        return out

    def describe(self) -> dict:
        return {**super().describe(), "bulk_modes": {"sync": f"{LATENCY} hint, one request at a time",
                                                     "async": f"{THROUGHPUT} hint, an asynchronous request queue"}}

    @property
    def size_mb(self) -> float | None:
        weights = self.file.with_suffix(".bin") if self.file else None
        return (self.file.stat().st_size + weights.stat().st_size) / 2**20 if weights and weights.is_file() else None
