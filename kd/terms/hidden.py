"""Hidden-state transfer: each student layer pulled towards a mapped teacher layer, on the [CLS] token (PKD, Sun et
al. 2019) or on every real token (TinyBERT, Jiao et al. 2020), with a learned projection where the widths differ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError
from kd.terms.base import HIDDEN, Batch, Shapes, Term, register
from kd.typed import is_integer

AT = ("cls", "tokens")
DISTANCES = ("mse", "cosine")


def layer_map(layers, shapes: Shapes) -> list[int]:
    """The teacher layer (1-based; 0: the embeddings) each student layer 1..S learns from. "uniform": teacher layer
    round(i * T / S) for student layer i, so the last layers meet (PKD's "skip" map: 2, 4, 6 for 3 of 6)."""
    s, t = shapes.student_layers, shapes.teacher_layers
    if layers == "uniform":
        return [round(i * t / s) for i in range(1, s + 1)]
    if (not isinstance(layers, list) or len(layers) != s
            or not all(is_integer(x) and 0 <= x <= t for x in layers)):
        raise KdError(f"layers={layers!r}: expected 'uniform' or one teacher layer (0..{t}) for each of the "
                      f"{s} student layers")
    return list(layers)


@register
class HiddenStates(Term):
    """Mean over the mapped layers of a distance between the student's hidden states (projected to the teacher's
    width where they differ: one linear map per layer, trained with the student) and the teacher's:
    - at="cls" with "mse": PKD's squared distance between the L2-normalised [CLS] vectors, summed over the width;
    - at="tokens" with "mse": TinyBERT's mean squared error over the width, averaged over the real tokens;
    - "cosine": 1 - cosine similarity, on [CLS] or averaged over the real tokens.
    Every row counts, labelled or not: the teacher's hidden states need no label."""

    name = "hidden"
    needs = frozenset({HIDDEN})

    def __init__(self, shapes: Shapes, layers="uniform", at: str = "cls", distance: str = "mse"):
        super().__init__()
        if at not in AT:
            raise KdError(f"at={at!r}: expected one of {', '.join(AT)}")
        if distance not in DISTANCES:
            raise KdError(f"distance={distance!r}: expected one of {', '.join(DISTANCES)}")
        self.map, self.at, self.distance = layer_map(layers, shapes), at, distance
        differ = shapes.student_width != shapes.teacher_width
        self.projections = nn.ModuleList(nn.Linear(shapes.student_width, shapes.teacher_width) for _ in self.map) \
            if differ else None

    def forward(self, batch: Batch) -> torch.Tensor:
        mask = batch.attention_mask.float()
        losses = []
        for i, t_layer in enumerate(self.map):
            s = batch.student.hidden[i + 1].float()
            t = batch.teacher.hidden[t_layer].float()
            if self.projections is not None:
                s = self.projections[i](s)
            if self.at == "cls":
                s, t = s[:, 0], t[:, 0]
                if self.distance == "mse":
                    losses.append((F.normalize(s, dim=-1) - F.normalize(t, dim=-1)).pow(2).sum(-1).mean())
                else:
                    losses.append((1 - F.cosine_similarity(s, t, dim=-1)).mean())
                continue
            per_token = ((s - t).pow(2).mean(-1) if self.distance == "mse"
                         else 1 - F.cosine_similarity(s, t, dim=-1))
            losses.append((per_token * mask).sum() / mask.sum())
        return torch.stack(losses).mean()
