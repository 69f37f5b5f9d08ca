"""The loss terms' registry and what they read: each term registers here under its name (kd/terms/__init__.py
imports every family so that all are registered)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

# teacher signals a term may need
LOGITS, HIDDEN, ATTENTION = "logits", "hidden", "attention"


@dataclass
class Side:
    """What one model (student or teacher) gives the terms for a batch. The attention term's queries, keys and
    values are those of the model's last layer, captured by kd.terms.attention.capture, before the heads are split."""

    logits: torch.Tensor | None = None  # (batch, classes)
    hidden: tuple[torch.Tensor, ...] | None = None  # the embeddings' output, then every layer's: (batch, tokens, width)
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (batch, tokens, width) each
    heads: int | None = None  # attention heads, to split qkv


@dataclass
class Batch:
    """One training batch as the terms see it."""

    labels: torch.Tensor  # (batch,); -100: a pool row, whose label is withheld
    attention_mask: torch.Tensor  # (batch, tokens), 1 on real tokens
    student: Side
    teacher: Side


class Term(nn.Module):
    """One loss term. `needs`: the teacher signals it reads (empty: the labels only). A term with parameters (a
    projection between widths) trains with the student."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]

    def forward(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError


TERMS: dict[str, type[Term]] = {}


def register(cls: type[Term]) -> type[Term]:
    TERMS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Shapes:
    """What a term's parameters depend on: each model's width and layer count."""

    student_width: int
    student_layers: int
    teacher_width: int
    teacher_layers: int
