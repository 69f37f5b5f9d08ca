"""int8 by ONNX Runtime's dynamic quantization: weights int8 ahead of time, activations quantized per call."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from kd.errors import KdError

CANDIDATES = {
    "qint8": (QuantType.QInt8, False),
    "qint8-per-channel": (QuantType.QInt8, True),
    "quint8": (QuantType.QUInt8, False),
    "quint8-per-channel": (QuantType.QUInt8, True),
}


def check_candidates(names: list[str]) -> None:
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        raise KdError(f"export.int8_candidates: {unknown or names} not understood; expected some of "
                      f"{', '.join(CANDIDATES)}")


def quantize(src: Path, dst: Path, candidate: str) -> None:
    weight_type, per_channel = CANDIDATES[candidate]
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs every skipped node at WARNING
    # (quantize_dynamic's default MatMulConstBOnly keeps attention's activation x activation products fp32.)
    # Shape inference cannot type the outputs of fused contrib ops (SkipLayerNormalization, BiasGelu...);
    # everything here is float, so say so instead of failing.
    quantize_dynamic(src, dst, weight_type=weight_type, per_channel=per_channel,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
