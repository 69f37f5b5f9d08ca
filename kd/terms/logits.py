"""Terms on the logits: cross-entropy on the labels, and the teacher's soft targets compared by forward KL (Hinton
et al. 2015) or reverse KL. All of them run on cached teacher logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.terms.base import LOGITS, Batch, Term, register


@register
class CrossEntropy(Term):
    """Cross-entropy on the labelled rows, summed and divided by the batch's rows: every term is a mean over the
    batch's rows, so a pool row (label -100) adds nothing here and its soft terms keep their weight."""

    name = "ce"
    needs = frozenset()

    def __init__(self, shapes=None):
        super().__init__()

    def forward(self, batch: Batch) -> torch.Tensor:
        logits, labels = batch.student.logits.float(), batch.labels
        return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / len(labels)


def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


@register
class ForwardKL(Term):
    """T² · KL(teacher_T ‖ student_T), each softmax at temperature T, averaged over the batch's rows. The T² keeps
    the soft term's gradients on the scale of the hard term's as T grows (Hinton et al. 2015)."""

    name = "kl"
    needs = frozenset({LOGITS})
    reverse = False

    def __init__(self, temperature: float = 2.0, shapes=None):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, batch: Batch) -> torch.Tensor:
        t = self.temperature
        student, teacher = softened(batch.student.logits, t), softened(batch.teacher.logits, t)
        target, given = (student, teacher) if self.reverse else (teacher, student)
        return t * t * F.kl_div(given, target, reduction="batchmean", log_target=True)


@register
class ReverseKL(ForwardKL):
    """T² · KL(student_T ‖ teacher_T): mode-seeking where the forward KL is mean-seeking, so the student puts its
    mass on the teacher's top classes rather than spreading it over all the teacher's (Gu et al. 2024, MiniLLM)."""

    name = "reverse_kl"
    reverse = True
