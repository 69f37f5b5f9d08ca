"""int8 by ONNX Runtime: dynamic quantization (weights int8 ahead of time, activations quantized per call), or
static QDQ quantization (activations' scales too fixed ahead of time, calibrated on training rows)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from engines import feed
from kd.errors import KdError

# name -> (weight type, per channel, static)
CANDIDATES = {
    "qint8": (QuantType.QInt8, False, False),
    "qint8-per-channel": (QuantType.QInt8, True, False),
    "quint8": (QuantType.QUInt8, False, False),
    "quint8-per-channel": (QuantType.QUInt8, True, False),
    # QDQ: uint8 activations x int8 weights per channel, ONNX Runtime's recommended format for x86 (VNNI)
    "qdq-static": (QuantType.QInt8, True, True),
}


def check_candidates(names: list[str]) -> None:
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        raise KdError(f"export.int8_candidates: {unknown or names} not understood; expected some of "
                      f"{', '.join(CANDIDATES)}")


class Calibration(CalibrationDataReader):
    """Tokenized training batches, as the graph's int64 inputs, one per get_next."""

    def __init__(self, src: Path, batches: list[dict]):
        names = [i.name for i in onnx.load(src, load_external_data=False).graph.input]
        self.feeds = iter([feed(names, b, "the ONNX graph") for b in batches])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def quantize(src: Path, dst: Path, candidate: str, calibration: list[dict] | None = None) -> None:
    weight_type, per_channel, static = CANDIDATES[candidate]
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs every skipped node at WARNING
    if static:
        if not calibration:
            raise KdError(f"int8 candidate {candidate}: needs calibration batches (export.calibration_rows > 0)")
        # The encoder's matrix products and the embedding tables (Gather), as the dynamic variants quantize
        # them: quantizing softmax, LayerNorm and GELU's activations to 8 bits costs accuracy for no speed on
        # the CPU, and the head's Gemms (pooler, classifier) have biases whose int32 scale the calibration
        # cannot give (ONNX Runtime refuses them).
        quantize_static(src, dst, Calibration(src, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=weight_type,
                        op_types_to_quantize=["MatMul", "Gather"], calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return
    # (quantize_dynamic's default MatMulConstBOnly keeps attention's activation x activation products fp32.)
    # Shape inference cannot type the outputs of fused contrib ops (SkipLayerNormalization, BiasGelu...);
    # everything here is float, so say so instead of failing.
    quantize_dynamic(src, dst, weight_type=weight_type, per_channel=per_channel,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
