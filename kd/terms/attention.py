"""The MiniLM objective (Wang et al. 2020) on the last layer: the student's self-attention distributions and value
relations pulled towards the teacher's by KL. The queries, keys and values come from hooks on the last layer's
projections (`capture`), so the models keep their fast attention kernels and need not return attention maps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from kd.errors import KdError
from kd.terms.base import ATTENTION, Batch, Side, Term, register

MASKED = -1e9  # a padded key's score: exp() is exactly 0 in float32, and 0 x (a finite log) stays 0 in the KL


def qkv_projections(model) -> tuple[tuple[torch.nn.Module, ...], int]:
    """The last layer's query, key and value projections of a BERT or DistilBERT classifier, and its head count."""
    cfg = model.config
    if cfg.model_type == "bert":
        own = model.bert.encoder.layer[-1].attention.self
        return (own.query, own.key, own.value), cfg.num_attention_heads
    if cfg.model_type == "distilbert":
        own = model.distilbert.transformer.layer[-1].attention
        return (own.q_lin, own.k_lin, own.v_lin), cfg.n_heads
    raise KdError(f"the attention term knows BERT and DistilBERT layers, not {cfg.model_type!r}")


@contextmanager
def capture(model) -> Iterator[dict]:
    """While inside, every forward of `model` leaves its last layer's queries, keys and values in the yielded
    dict's "qkv" and its head count in "heads"."""
    projections, heads = qkv_projections(model)
    seen: dict = {"heads": heads}
    outputs: list = [None, None, None]

    def keep(i):
        def hook(module, args, output):
            outputs[i] = output
            if i == 2:
                seen["qkv"] = tuple(outputs)
        return hook

    handles = [p.register_forward_hook(keep(i)) for i, p in enumerate(projections)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def heads_of(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, width) -> (batch, heads, tokens, width / heads)."""
    b, n, w = x.shape
    return x.float().view(b, n, heads, w // heads).transpose(1, 2)


def relation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(a b^T / sqrt(d)) over the real keys: (batch, heads, tokens, tokens)."""
    scores = a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])
    return F.log_softmax(scores.masked_fill(mask[:, None, None, :] == 0, MASKED), dim=-1)


def relations(side: Side, heads: int, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = (heads_of(x, heads) for x in side.qkv)
    return relation(q, k, mask), relation(v, v, mask)


@register
class MiniLMAttention(Term):
    """KL(teacher ‖ student) of the last layer's attention distributions softmax(Q Kᵀ/√d) plus that of its value
    relations softmax(V Vᵀ/√d), per head, averaged over heads and real query tokens. Both models are split into the
    same heads: their own (which must then be equal, as in MiniLM), or `relation_heads` of them (MiniLMv2's
    relation heads, which lets widths and head counts differ)."""

    name = "attention"
    needs = frozenset({ATTENTION})

    def __init__(self, shapes=None, relation_heads: int | None = None):
        super().__init__()
        if relation_heads is not None and (not isinstance(relation_heads, int) or relation_heads < 1):
            raise KdError(f"relation_heads={relation_heads!r}: expected a positive number of heads")
        if relation_heads and shapes and (shapes.student_width % relation_heads or shapes.teacher_width
                                          % relation_heads):
            raise KdError(f"relation_heads={relation_heads}: must divide both widths ({shapes.student_width}, "
                          f"{shapes.teacher_width})")
        self.relation_heads = relation_heads

    def forward(self, batch: Batch) -> torch.Tensor:
        s_heads = self.relation_heads or batch.student.heads
        t_heads = self.relation_heads or batch.teacher.heads
        if s_heads != t_heads:
            raise KdError(f"attention term: the student has {s_heads} heads and the teacher {t_heads}; set "
                          "relation_heads to split both the same way")
        mask = batch.attention_mask
        queries = mask.float()[:, None, :]  # (batch, 1, tokens): the real query tokens
        total = 0.0
        for s_rel, t_rel in zip(relations(batch.student, s_heads, mask), relations(batch.teacher, t_heads, mask)):
            kl = (t_rel.exp() * (t_rel - s_rel)).sum(-1)  # (batch, heads, tokens)
            total = total + (kl * queries).sum() / (queries.sum() * s_heads)
        return total
