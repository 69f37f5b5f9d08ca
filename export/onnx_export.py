"""torch.onnx.export of a sequence classifier: inputs named as the tokenizer emits them, logits out,
dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from kd.errors import KdError
from kd.models import model_input_names


class LogitsOnly(torch.nn.Module):
    """The exported graph takes the tokenizer's arrays positionally and returns logits only."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def graph_input_names(model, tokenizer) -> list[str]:
    """What the tokenizer emits and the model accepts, in the tokenizer's order (DistilBERT: no token_type_ids)."""
    accepted = set(model_input_names(model))
    names = [n for n in tokenizer.model_input_names if n in accepted]
    if "input_ids" not in names:
        raise KdError(f"tokenizer emits {tokenizer.model_input_names}: no input_ids the model accepts")
    return names


def export_onnx(model, tokenizer, sample_texts: list[str], path: Path, opset: int, exporter: str) -> list[str]:
    """Write `path` and return its input names. The model is left in eval mode (checked)."""
    if exporter not in ("legacy", "dynamo"):
        raise KdError(f"export.exporter={exporter!r}: expected legacy or dynamo")
    names = graph_input_names(model, tokenizer)
    model.eval()
    wrapper = LogitsOnly(model, names).eval()
    # a padded batch of two real texts: the trace sees padding, and batch/sequence are marked dynamic
    enc = tokenizer(sample_texts[:2], padding=True, truncation=True, max_length=64, return_tensors="pt")
    args = tuple(enc[n] for n in names)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        if exporter == "legacy":
            torch.onnx.export(
                wrapper, args, str(path), input_names=names, output_names=["logits"], opset_version=opset,
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                do_constant_folding=True, dynamo=False,
            )
        else:
            batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
            torch.onnx.export(
                wrapper, args, str(path), input_names=names, output_names=["logits"], opset_version=opset,
                dynamic_shapes=tuple({0: batch, 1: seq} for _ in names), dynamo=True, optimize=True,
                verbose=False,
            )
    if model.training:  # the legacy exporter restores the mode it found, and that reaches the inner model
        raise RuntimeError("export left the model in training mode")
    return names
