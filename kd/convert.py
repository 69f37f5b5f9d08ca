"""BERT -> DistilBERT weight conversion, the way DistilBERT itself was initialised from BERT.

DistilBERT has no token-type embedding, so BERT's token-type-0 row is folded into every position
embedding: for single-segment inputs (token_type_ids all 0) the embeddings are then the same sum.
Each chosen BERT layer maps one-to-one onto a DistilBERT block.
"""

from __future__ import annotations

import torch
from transformers import BertModel, DistilBertConfig, DistilBertForSequenceClassification, DistilBertModel

from kd.errors import KdError

DISTILBERT_LAYER_NORM_EPS = 1e-12  # hard-coded in DistilBERT's modules


def parse_layers(init: str) -> list[int]:
    """'from-teacher:0,2,4' -> [0, 2, 4]."""
    _, _, spec = init.partition(":")
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise KdError(f"student.init={init!r}: expected from-teacher:<layer>,<layer>,... e.g. from-teacher:0,2,4")
    return layers


def distilbert_config(bert_config, n_layers: int, **extra) -> DistilBertConfig:
    if abs(bert_config.layer_norm_eps - DISTILBERT_LAYER_NORM_EPS) > 1e-15:
        raise KdError(
            f"teacher layer_norm_eps={bert_config.layer_norm_eps}: DistilBERT fixes it at 1e-12, "
            "so a converted student could not match the teacher's layers"
        )
    return DistilBertConfig(
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        dim=bert_config.hidden_size,
        n_layers=n_layers,
        n_heads=bert_config.num_attention_heads,
        hidden_dim=bert_config.intermediate_size,
        activation=bert_config.hidden_act,
        dropout=bert_config.hidden_dropout_prob,
        attention_dropout=bert_config.attention_probs_dropout_prob,
        pad_token_id=bert_config.pad_token_id,
        initializer_range=bert_config.initializer_range,
        **extra,
    )


@torch.no_grad()
def copy_bert_into_distilbert(bert: BertModel, student: DistilBertModel, layers: list[int]) -> None:
    n_bert = bert.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n_bert]
    if bad:
        raise KdError(f"student.init layers {bad}: the teacher has layers 0-{n_bert - 1}")
    if getattr(bert.config, "position_embedding_type", "absolute") != "absolute":
        raise KdError("teacher uses relative position embeddings: DistilBERT cannot take them over")
    src, dst = bert.embeddings, student.embeddings
    dst.word_embeddings.weight.copy_(src.word_embeddings.weight)
    dst.position_embeddings.weight.copy_(src.position_embeddings.weight + src.token_type_embeddings.weight[0])
    dst.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
    for block, index in zip(student.transformer.layer, layers):
        layer = bert.encoder.layer[index]
        block.attention.q_lin.load_state_dict(layer.attention.self.query.state_dict())
        block.attention.k_lin.load_state_dict(layer.attention.self.key.state_dict())
        block.attention.v_lin.load_state_dict(layer.attention.self.value.state_dict())
        block.attention.out_lin.load_state_dict(layer.attention.output.dense.state_dict())
        block.sa_layer_norm.load_state_dict(layer.attention.output.LayerNorm.state_dict())
        block.ffn.lin1.load_state_dict(layer.intermediate.dense.state_dict())
        block.ffn.lin2.load_state_dict(layer.output.dense.state_dict())
        block.output_layer_norm.load_state_dict(layer.output.LayerNorm.state_dict())


def distilbert_from_bert(bert: BertModel, layers: list[int], **config_extra) -> DistilBertForSequenceClassification:
    """A DistilBERT classifier whose embeddings and blocks are the given BERT layers; a fresh head."""
    student = DistilBertForSequenceClassification(distilbert_config(bert.config, len(layers), **config_extra))
    copy_bert_into_distilbert(bert, student.distilbert, layers)
    return student
