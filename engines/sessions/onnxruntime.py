"""ONNX Runtime on the CPU (or a CUDA GPU with onnxruntime-gpu): the exported fp32 and int8 graphs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines import Batch, Engine, feed
from kd.device import cpu_count
from kd.runfolder import RunFolder

if TYPE_CHECKING:
    import onnxruntime as ort


def session_options(spinning: bool = False) -> ort.SessionOptions:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # ORT sizes its pool from the host's cores; inside a container or under taskset that oversubscribes.
    opts.intra_op_num_threads = cpu_count()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # ORT's threads spin after each call by default, stealing the cores from whatever runs next (PyTorch in a
    # side-by-side timing, the tokenizer in a service); on 2 cores that made PyTorch look many times slower. So they
    # spin only when asked (`spinning`): the bench, which gives each row the cores to itself, as a user who
    # deploys the model alone would.
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def session(path: Path, providers: list[str], plain: bool = False, spinning: bool = False) -> ort.InferenceSession:
    """`plain`: ONNX Runtime's defaults, as a user who loads the file would run it."""
    import onnxruntime as ort

    if plain:
        return ort.InferenceSession(str(path), providers=providers)
    # ONNX Runtime's own SkipLayerNormFusion (Add + LayerNormalization) made the int8 students slower at batch 32
    # and fp32 no faster (docs/export.md), so it is left out.
    return ort.InferenceSession(str(path), session_options(spinning), providers=providers,
                                disabled_optimizers=["SkipLayerNormFusion"])


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    rank = 1
    offers = (("cpu", "fp32"), ("cpu", "int8"), ("cuda", "fp32"), ("cuda", "int8"))
    files = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
    file_suffix = ".onnx"
    made_by = "make export"
    package = "onnxruntime"
    bench_options = {"spinning": True}

    def __init__(self, sess: ort.InferenceSession, file: Path, device: str, precision: str, host_choice=None):
        """`host_choice`: the int8 variant chosen for this CPU, when the file is one of the export's variants."""
        super().__init__(file, device, precision)
        self.session, self.host_choice = sess, host_choice
        self.input_names = [i.name for i in sess.get_inputs()]

    @classmethod
    def folder(cls, run: RunFolder, model: str) -> Path:
        return run.onnx_dir(model)

    @classmethod
    def errors(cls) -> tuple[type[Exception], ...]:
        """What ONNX Runtime raises for a graph that does not load or run (they derive from Exception only)."""
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        return tuple(getattr(state, n) for n in ("Fail", "InvalidArgument", "InvalidGraph", "RuntimeException",
                                                 "NoSuchFile"))

    @classmethod
    def machine_lacks(cls, device: str, precision: str) -> str | None:
        import onnxruntime as ort

        from kd.device import detect_device

        if device == "cuda" and precision == "int8":
            return "ONNX Runtime's dynamic int8 has no CUDA kernels (MatMulInteger runs on the CPU provider only)"
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
        if device == "cuda" and detect_device() != "cuda":  # onnxruntime-gpu lists its CUDA provider without a GPU
            return "no CUDA device (torch.cuda.is_available() is False)"
        return None

    @classmethod
    def open(cls, file: Path, device: str, precision: str, plain: bool = False,
             spinning: bool = False) -> OnnxRuntimeEngine:
        """The session sized to the CPUs this process may use, threads spinning only if asked, and for the export's
        model_int8.onnx its variant fastest on this CPU. `plain`: the file as given with no options, as a user's own
        `onnxruntime.InferenceSession` runs it (export-check and optimum-check compare exactly that file)."""
        from engines.int8_host import VARIANTS, choose

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        choice = None
        if precision == "int8" and not plain and Path(file).name == cls.files["int8"]:
            # the export's int8 variants: the one fastest on this CPU (measured once per CPU, engines/int8_host.py)
            choice = choose(file, lambda path: session(path, providers, plain, spinning))
            file = Path(file).parent / VARIANTS / f"{choice.variant}.onnx" if choice else file
        # a variant just measured is run in the session it was measured in: opened once
        sess = choice.session if choice and choice.session else session(file, providers, plain, spinning)
        if sess.get_providers()[0] != providers[0]:
            raise RuntimeError(f"{file}: onnxruntime fell back to {sess.get_providers()[0]}")
        return cls(sess, file, device, precision, choice)

    def describe(self) -> dict:
        choice = self.host_choice
        return {**super().describe(), **({"int8_variant": choice.variant} if choice else {})}

    def run(self, batch: Batch) -> np.ndarray:
        """Host arrays in, host logits out (the CUDA provider copies them and waits within the call)."""
        return self.session.run(None, feed(self.input_names, batch, "the ONNX graph"))[0].astype(np.float32)
