"""ONNX Runtime sessions sized to the CPUs this process may use, and batched inference over tokenized texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from kd.device import cpu_count

# what ONNX Runtime raises for a graph that does not load or run (they derive from Exception only)
ORT_ERRORS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in
                   ("Fail", "InvalidArgument", "InvalidGraph", "RuntimeException", "NoSuchFile"))


def session(path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # ORT sizes its pool from the host's cores; inside a container or under taskset that oversubscribes.
    opts.intra_op_num_threads = cpu_count()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # ORT's threads spin after each call by default, stealing the cores from whatever runs next (PyTorch in a
    # side-by-side timing, the tokenizer in a service); on 2 cores that made PyTorch look 10x slower.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ONNX Runtime's own SkipLayerNormFusion (Add + LayerNormalization) made the int8 students 11 % slower at
    # batch 32 on this project's CPU (791 vs 712 samples/s; fp32 unchanged, 307 vs 307), so it is left out.
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"],
                                disabled_optimizers=["SkipLayerNormFusion"])


def input_names(sess: ort.InferenceSession) -> list[str]:
    return [i.name for i in sess.get_inputs()]


def feed(sess: ort.InferenceSession, encoded: dict) -> dict[str, np.ndarray]:
    """The tokenizer's arrays the graph takes, as int64; a graph input the tokenizer lacks is a clear error."""
    names = input_names(sess)
    missing = [n for n in names if n not in encoded]
    if missing:
        raise KeyError(f"the ONNX graph wants input {missing[0]!r}, the tokenizer gives {sorted(encoded)}")
    return {n: np.asarray(encoded[n], dtype=np.int64) for n in names}


def run_logits(sess: ort.InferenceSession, encoded: dict) -> np.ndarray:
    return sess.run(None, feed(sess, encoded))[0].astype(np.float32)
