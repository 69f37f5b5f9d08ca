"""Each engine's per-call floor at batch 1: a call on a graph that takes the model's inputs and does next to no
arithmetic (the inputs summed into the logits). What a row's b1 p50 costs beyond its engine's floor and its
arithmetic at the yardstick's rate is the room left for session settings, copies and graph changes; the
summary prints the three side by side."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engines import Engine, engine
from kd.atomic import write_bytes

INPUTS = ("input_ids", "attention_mask")  # what every model here takes (BERT adds token_type_ids)
LABELS = 4
BACKENDS = ("pytorch", "onnxruntime", "openvino")  # the engines a floor is built for (the CPU rows' engines)


def floor_onnx(path: Path) -> Path:
    """The floor graph for the file-loading engines (ONNX Runtime, and OpenVINO, which reads ONNX): each input cast
    to float and summed over the sequence, the sums added and projected to LABELS logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, sums = [], []
    for name in INPUTS:
        nodes += [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceSum", [f"{name}_f", "axes"], [f"{name}_sum"], keepdims=1)]
        sums.append(f"{name}_sum")
    nodes += [helper.make_node("Sum", sums, ["total"]), helper.make_node("MatMul", ["total", "head"], ["logits"])]
    graph = helper.make_graph(
        nodes, "floor", [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in INPUTS],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LABELS])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "axes"),
                     numpy_helper.from_array(np.full((1, LABELS), 1e-3, np.float32), "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every supported ONNX Runtime and OpenVINO reads
    onnx.checker.check_model(model)
    write_bytes(path, model.SerializeToString())
    return path


def floor_torch_module():
    """The same arithmetic as a torch module with a transformers-like output (`.logits`)."""
    import torch

    class Floor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Parameter(torch.full((1, LABELS), 1e-3))

        def forward(self, input_ids, attention_mask):
            total = input_ids.float().sum(1, keepdim=True) + attention_mask.float().sum(1, keepdim=True)
            return SimpleNamespace(logits=total @ self.head)

    return Floor().eval()


def open_floor(backend: str, folder: Path) -> Engine:
    """The floor model opened by `backend` on the CPU, with the settings the bench gives its rows."""
    cls = engine(backend)
    if backend == "pytorch":
        return cls(floor_torch_module())
    file = folder / "floor.onnx"
    if not file.is_file():
        floor_onnx(file)
    return cls.open(file, "cpu", "fp32", **cls.bench_options)


def floor_batches(singles: list[dict]) -> list[dict]:
    """The latency texts' batches, as the floor graph takes them."""
    return [{k: b[k] for k in INPUTS} for b in singles]
