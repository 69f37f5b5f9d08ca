"""Floating-point work of a BERT-style encoder classifier, counted from its shape and the batch shapes it ran:
what "achieved GFLOP/s" divides by. Multiply-adds count as two operations; softmax, LayerNorm and GELU are
left out (a few percent at these sizes)."""

from __future__ import annotations


def encoder_shape(config) -> tuple[int, int, int, int]:
    """(layers, hidden size, feed-forward size, labels) of a BERT or DistilBERT config."""
    ffn = getattr(config, "intermediate_size", None) or config.hidden_dim  # DistilBERT names it hidden_dim
    return int(config.num_hidden_layers), int(config.hidden_size), int(ffn), int(config.num_labels)


def batch_flops(config, batch: int, sequence: int) -> int:
    layers, hidden, ffn, labels = encoder_shape(config)
    tokens = batch * sequence
    projections = 2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn)  # Q, K, V, output; FFN in and out
    attention = 2 * 2 * batch * sequence * sequence * hidden  # scores and the weighted sum, all heads
    head = 2 * batch * (hidden * hidden + hidden * labels)  # pooler / pre-classifier, classifier
    return layers * (projections + attention) + head


def flops_of(config, batches) -> int:
    return sum(batch_flops(config, *b["input_ids"].shape) for b in batches)
