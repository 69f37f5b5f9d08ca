"""ONNX Runtime's transformer optimizer: fuses attention, LayerNorm (with its residual add) and GELU, which
ONNX Runtime's default session optimizations do not do for these graphs."""

from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.transformers.optimizer import optimize_model


def optimize_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Write the fused graph to `dst`; return how many of each fused operator it has (zeros left out)."""
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # model_type bert covers DistilBERT too; the heads and hidden size are given, not guessed from the graph.
    optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=1, use_gpu=False)
    optimized.save_model_to_file(str(dst))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def heads_and_hidden(config) -> tuple[int, int]:
    """(attention heads, hidden size) from a BERT or DistilBERT config."""
    return int(config.num_attention_heads), int(config.hidden_size)  # DistilBERT maps these to n_heads, dim
