"""The distillation objective: hard-label cross-entropy mixed with temperature-softened KL to the teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    The T^2 keeps the soft term's gradients on the same scale as the hard term's as T grows
    (Hinton et al. 2015). KL is averaged over the batch ("batchmean"), as the math defines it.
    A row whose label is -100 (the unlabelled transfer pool of a label budget) has no CE term, only the soft
    one; both terms are means over the batch's rows. Returns (loss, ce, kl) so the two parts can be logged (ce:
    the mean over the labelled rows).
    """
    student_logits = student_logits.float()
    teacher_logits = teacher_logits.float()
    labelled = labels != -100
    if bool(labelled.all()):
        ce = F.cross_entropy(student_logits, labels)
        ce_term = ce
    else:
        ce_rows = F.cross_entropy(student_logits, labels, ignore_index=-100, reduction="none")
        ce_term = ce_rows.sum() / len(labels)
        ce = ce_rows.sum() / labelled.sum().clamp(min=1)
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * ce_term + (1.0 - alpha) * temperature**2 * kl, ce, kl
