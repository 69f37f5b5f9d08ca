import math

import pytest
import torch

from kd.losses import distillation_loss


def hand_loss(s, t, y, T, alpha):
    """The formula written out with math only: alpha*CE + (1-alpha)*T^2*KL(p_t || p_s), batch mean."""
    def softmax(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        return [v / sum(e) for v in e]

    total = 0.0
    for srow, trow, label in zip(s, t, y):
        ce = 0.0 if label == -100 else -math.log(softmax(srow)[label])  # -100: a pool row, no label
        ps, pt = softmax([x / T for x in srow]), softmax([x / T for x in trow])
        kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
        total += alpha * ce + (1 - alpha) * T * T * kl
    return total / len(s)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.5), (5.0, 0.1), (3.0, 1.0), (4.0, 0.0)])
def test_loss_matches_hand_computation(T, alpha):
    s = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 1.5, 0.0, 0.3]]
    t = [[3.0, -2.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0.5, 2.5, -1.0, 0.0]]
    y = [0, 2, 3]
    loss, ce, kl = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, alpha)
    assert loss.item() == pytest.approx(hand_loss(s, t, y, T, alpha), rel=1e-5)
    assert loss.item() == pytest.approx(alpha * ce.item() + (1 - alpha) * T * T * kl.item(), rel=1e-6)


def test_pool_rows_have_only_the_soft_term_and_their_labels_never_count():
    s = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 1.5, 0.0, 0.3]]
    t = [[3.0, -2.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0.5, 2.5, -1.0, 0.0]]
    loss, ce, kl = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor([0, -100, -100]), 2.0, 0.5)
    assert loss.item() == pytest.approx(hand_loss(s, t, [0, -100, -100], 2.0, 0.5), rel=1e-5)
    assert ce.item() == pytest.approx(-math.log(torch.softmax(torch.tensor(s[0]), -1)[0].item()), rel=1e-6)
    # what a pool row's label would have been changes nothing; a labelled row's label does
    logits = torch.tensor(s, requires_grad=True)
    grads = []
    for labels in ([0, -100, -100], [3, -100, -100]):
        logits.grad = None
        distillation_loss(logits, torch.tensor(t), torch.tensor(labels), 2.0, 0.5)[0].backward()
        grads.append(logits.grad.clone())
    assert torch.equal(grads[0][1:], grads[1][1:]) and not torch.equal(grads[0][0], grads[1][0])
    # a batch of pool rows only: the soft term alone, no NaN from an empty cross-entropy
    loss, ce, kl = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor([-100] * 3), 2.0, 0.5)
    assert loss.item() == pytest.approx(0.5 * 4 * kl.item(), rel=1e-6) and ce.item() == 0.0


def test_kl_is_zero_when_student_equals_teacher_and_grows_otherwise():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    _, _, kl_same = distillation_loss(logits, logits, torch.tensor([1]), 2.0, 0.5)
    _, _, kl_diff = distillation_loss(logits, logits.flip(-1), torch.tensor([1]), 2.0, 0.5)
    assert kl_same.item() == pytest.approx(0.0, abs=1e-7)
    assert kl_diff.item() > 0.01


def test_soft_term_pulls_student_toward_teacher():
    student = torch.zeros(1, 4, requires_grad=True)
    teacher = torch.tensor([[0.0, 4.0, 0.0, 0.0]])
    loss, _, _ = distillation_loss(student, teacher, torch.tensor([1]), 2.0, 0.0)
    loss.backward()
    assert student.grad[0, 1] < 0 and (student.grad[0, [0, 2, 3]] > 0).all()
