"""Each loss term against a hand computation on small tensors (numpy, written out), and the registry's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kd.errors import KdError
from kd.terms import Batch, Shapes, Side, build
from kd.terms.hidden import layer_map

SAME = Shapes(student_width=4, student_layers=2, teacher_width=4, teacher_layers=4)


def softmax(x, t=1.0):
    e = np.exp(np.asarray(x, dtype=np.float64) / t)
    return e / e.sum(-1, keepdims=True)


def batch(student_logits=None, teacher_logits=None, labels=(0,), mask=None, student=None, teacher=None) -> Batch:
    s = student or Side()
    t = teacher or Side()
    if student_logits is not None:
        s.logits = torch.tensor(student_logits, dtype=torch.float32)
    if teacher_logits is not None:
        t.logits = torch.tensor(teacher_logits, dtype=torch.float32)
    labels = torch.tensor(labels)
    return Batch(labels, torch.tensor(mask if mask is not None else [[1]] * len(labels)), s, t)


def test_cross_entropy_counts_only_labelled_rows_and_divides_by_every_row():
    term = build("ce", {}, SAME, "m")
    got = term(batch([[2.0, 0, 0, 0], [0, 1.0, 0, 0]], labels=[0, -100])).item()
    row0 = math.log(math.exp(2) + 3) - 2  # -log softmax(row 0)[label 0]
    assert got == pytest.approx(row0 / 2, rel=1e-6)


@pytest.mark.parametrize("name", ["kl", "reverse_kl"])
def test_kl_terms_at_temperature_2(name):
    student, teacher = [[0.0, 0, 0, 0], [1.0, 2, 0, 0]], [[1.0, 0, 0, 0], [0.0, 3, 1, 0]]
    term = build(name, {"temperature": 2}, SAME, "m")
    ps, pt = softmax(student, 2), softmax(teacher, 2)
    p, q = (pt, ps) if name == "kl" else (ps, pt)
    expected = 4 * np.mean(np.sum(p * np.log(p / q), -1))  # T² x KL(p || q), mean over rows
    assert term(batch(student, teacher, labels=[0, 1])).item() == pytest.approx(expected, rel=1e-5)
    assert term(batch(teacher, teacher, labels=[0, 1])).item() == pytest.approx(0, abs=1e-6)


def hidden_states(rng, layers, tokens=3, width=4):
    return tuple(torch.tensor(rng.normal(size=(2, tokens, width)), dtype=torch.float32) for _ in range(layers + 1))


def test_hidden_on_cls_is_pkds_normalised_squared_distance_over_the_mapped_layers():
    rng = np.random.default_rng(0)
    s, t = hidden_states(rng, 2), hidden_states(rng, 4)
    term = build("hidden", {"at": "cls"}, SAME, "m")
    assert term.map == [2, 4] and term.projections is None
    expected = []
    for i, j in ((1, 2), (2, 4)):
        a, b = s[i][:, 0].numpy(), t[j][:, 0].numpy()
        a, b = a / np.linalg.norm(a, axis=-1, keepdims=True), b / np.linalg.norm(b, axis=-1, keepdims=True)
        expected.append(np.mean(np.sum((a - b) ** 2, -1)))
    got = term(batch(labels=[0, 1], mask=[[1, 1, 1]] * 2, student=Side(hidden=s), teacher=Side(hidden=t)))
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize("distance", ["mse", "cosine"])
def test_hidden_on_tokens_averages_over_real_tokens_only(distance):
    rng = np.random.default_rng(1)
    s, t = hidden_states(rng, 2), hidden_states(rng, 4)
    mask = [[1, 1, 0], [1, 0, 0]]
    term = build("hidden", {"at": "tokens", "distance": distance, "layers": [1, 3]}, SAME, "m")
    expected = []
    for i, j in ((1, 1), (2, 3)):
        a, b = s[i].numpy(), t[j].numpy()
        if distance == "mse":
            per = ((a - b) ** 2).mean(-1)
        else:
            per = 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        real = np.array(mask, dtype=bool)
        expected.append(per[real].mean())
    got = term(batch(labels=[0, 1], mask=mask, student=Side(hidden=s), teacher=Side(hidden=t)))
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-5)
    # a padded token's states change nothing
    s2 = tuple(h.clone() for h in s)
    s2[1][0, 2] += 100
    again = term(batch(labels=[0, 1], mask=mask, student=Side(hidden=s2), teacher=Side(hidden=t)))
    assert again.item() == pytest.approx(got.item(), rel=1e-6)


def test_hidden_projects_the_student_to_the_teachers_width_with_a_trained_map_per_layer():
    rng = np.random.default_rng(2)
    shapes = Shapes(student_width=4, student_layers=2, teacher_width=6, teacher_layers=4)
    term = build("hidden", {"at": "tokens"}, shapes, "m")
    assert [tuple(p.weight.shape) for p in term.projections] == [(6, 4), (6, 4)]
    loss = term(batch(labels=[0, 1], mask=[[1, 1, 1]] * 2, student=Side(hidden=hidden_states(rng, 2)),
                      teacher=Side(hidden=hidden_states(rng, 4, width=6))))
    loss.backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in term.projections)


def test_attention_is_the_kl_of_attention_distributions_plus_value_relations_over_real_queries():
    rng = np.random.default_rng(3)
    mask = [[1, 1, 0]]

    def qkv():
        return tuple(torch.tensor(rng.normal(size=(1, 3, 4)), dtype=torch.float32) for _ in range(3))

    s, t = qkv(), qkv()
    term = build("attention", {}, SAME, "m")
    got = term(batch(labels=[0], mask=mask, student=Side(qkv=s, heads=2), teacher=Side(qkv=t, heads=2))).item()

    def rel(a, b):  # per head: softmax(a b^T / sqrt(2)) over the two real keys, (heads, queries, keys)
        out = []
        for h in range(2):
            x, y = a[0, :, 2 * h:2 * h + 2], b[0, :, 2 * h:2 * h + 2]
            out.append(softmax((x @ y.T / math.sqrt(2))[:, :2]))
        return np.stack(out)

    expected = 0.0
    for (a1, b1), (a2, b2) in (((s[0], s[1]), (t[0], t[1])), ((s[2], s[2]), (t[2], t[2]))):
        ps, pt = rel(a1.numpy(), b1.numpy()), rel(a2.numpy(), b2.numpy())
        kl = np.sum(pt * np.log(pt / ps), -1)[:, :2]  # the two real queries
        expected += kl.mean()
    assert got == pytest.approx(expected, rel=1e-5)
    assert term(batch(labels=[0], mask=mask, student=Side(qkv=t, heads=2),
                      teacher=Side(qkv=t, heads=2))).item() == pytest.approx(0, abs=1e-6)


def test_attention_with_other_head_counts_needs_relation_heads():
    rng = np.random.default_rng(4)
    qkv = tuple(torch.tensor(rng.normal(size=(1, 2, 4)), dtype=torch.float32) for _ in range(3))
    sides = {"student": Side(qkv=qkv, heads=2), "teacher": Side(qkv=qkv, heads=4)}
    with pytest.raises(KdError, match="set relation_heads"):
        build("attention", {}, SAME, "m")(batch(labels=[0], mask=[[1, 1]], **sides))
    assert build("attention", {"relation_heads": 2}, SAME, "m")(batch(labels=[0], mask=[[1, 1]], **sides)).item() \
        == pytest.approx(0, abs=1e-6)


def test_layer_maps_and_bad_settings_are_one_line_errors():
    assert layer_map("uniform", Shapes(384, 3, 384, 6)) == [2, 4, 6]
    assert layer_map("uniform", Shapes(384, 4, 384, 12)) == [3, 6, 9, 12]
    for bad, message in [("ce2", "unknown loss term 'ce2'"), ("hidden", "layers=\\[1\\]: expected 'uniform' or one")]:
        with pytest.raises(KdError, match=message):
            build(bad, {"layers": [1]} if bad == "hidden" else {}, SAME, "kd/methods/x.yaml terms[0]")
    with pytest.raises(KdError, match="kd/methods/x.yaml terms\\[1\\]: kl: .*unexpected keyword argument 'temp'"):
        build("kl", {"temp": 2}, SAME, "kd/methods/x.yaml terms[1]")
    with pytest.raises(KdError, match="at='all': expected one of cls, tokens"):
        build("hidden", {"at": "all"}, SAME, "m")


def kd_loss(student, teacher, labels, temperature, alpha):
    """The kd recipe's loss as the trainer sums it: its terms built with the run's distill settings."""
    from kd.config import DistillConfig
    from kd.methods import load_method

    terms = load_method("kd").build_terms(SAME, DistillConfig(temperature=temperature, alpha=alpha))
    b = batch(labels=list(labels))
    b.student.logits, b.teacher.logits = student, teacher
    return sum(w * term(b) for w, term in terms)


def hand_loss(s, t, y, temperature, alpha):
    """alpha * CE + (1 - alpha) * T² * KL(p_t || p_s), each a mean over the batch's rows, with math only."""
    total = 0.0
    for srow, trow, label in zip(s, t, y):
        ce = 0.0 if label == -100 else -math.log(softmax(srow)[label])  # -100: a pool row, no label
        ps, pt = softmax(srow, temperature), softmax(trow, temperature)
        total += alpha * ce + (1 - alpha) * temperature**2 * float(np.sum(pt * np.log(pt / ps)))
    return total / len(s)


STUDENT = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 1.5, 0.0, 0.3]]
TEACHER = [[3.0, -2.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0.5, 2.5, -1.0, 0.0]]


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.5), (5.0, 0.1), (3.0, 1.0), (4.0, 0.0)])
def test_the_kd_recipe_is_hintons_loss_with_the_runs_temperature_and_alpha(temperature, alpha):
    for labels in ([0, 2, 3], [0, -100, -100], [-100] * 3):  # pool rows: the soft term alone, no NaN when all are
        got = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), labels, temperature, alpha).item()
        assert got == pytest.approx(hand_loss(STUDENT, TEACHER, labels, temperature, alpha), rel=1e-5)


def test_a_pool_rows_label_never_counts_and_the_soft_term_pulls_towards_the_teacher():
    logits = torch.tensor(STUDENT, requires_grad=True)
    grads = []
    for labels in ([0, -100, -100], [3, -100, -100]):
        logits.grad = None
        kd_loss(logits, torch.tensor(TEACHER), labels, 2.0, 0.5).backward()
        grads.append(logits.grad.clone())
    assert torch.equal(grads[0][1:], grads[1][1:]) and not torch.equal(grads[0][0], grads[1][0])
    student = torch.zeros(1, 4, requires_grad=True)
    kd_loss(student, torch.tensor([[0.0, 4.0, 0.0, 0.0]]), [1], 2.0, 0.0).backward()
    assert student.grad[0, 1] < 0 and (student.grad[0, [0, 2, 3]] > 0).all()


def test_methods_load_with_their_terms_and_bad_recipes_are_one_line_errors(tmp_path):
    from kd.methods import available_methods, load_method

    assert {"baseline", "kd"} <= set(available_methods())
    kd = load_method("kd")
    assert (kd.teacher, kd.rows, [t.term for t in kd.terms], kd.online) == ("finetune", "all", ["ce", "kl"], False)
    assert load_method("baseline").needs == frozenset()
    cases = {
        "teacher: none\nterms: [{term: kl}]\n": "teacher=none, but its terms, rows or calibration need a teacher",
        "terms: [{term: hidden}]\n": None,  # loads; its weight is asked for when it is built
        "terms: [{term: ce, weight: -1}]\n": r"terms\[0\]: weight=-1: expected a number >= 0",
        "terms: [{term: mse}]\n": r"terms\[0\]: unknown loss term 'mse'",
        "rows: some\nterms: [{term: ce}]\n": "rows='some': expected one of labelled, all",
        "terms: []\n": "terms: expected a list",
        "term: [ce]\n": "unknown key 'term'",
        # teacher procedures and row sets
        "teacher: none\nrows: pseudo-labelled\nterms: [{term: ce}]\n": "teacher=none, but its terms, rows",
        "teacher: self-train\ncalibrate: true\nterms: [{term: kl}]\n": "calibrate=true needs teacher=finetune",
        "teacher: finetune\nrows: labelled\nterms: [{term: ce}]\n": "no term or row set reads the teacher",
        "rounds: 0\nterms: [{term: kl}]\n": "expected folds >= 2, rounds >= 1",
        "min_confidence: 1.5\nterms: [{term: kl}]\n": "min_confidence=1.5",
        "calibrate: yes please\nterms: [{term: kl}]\n": "calibrate='yes please': expected true or false",
        "model: teacher-2\nterms: [{term: kl}]\n": "model='teacher-2'",
        "terms: [{term: hidden, weight: 1, on: cls}]\n": "setting True is not a name",
    }
    from kd.config import DistillConfig

    for text, message in cases.items():
        path = tmp_path / "m.yaml"
        path.write_text(text)
        if message is None:
            with pytest.raises(KdError, match="the hidden term needs a weight"):
                load_method(str(path)).build_terms(SAME, DistillConfig())
            continue
        with pytest.raises(KdError, match=message):
            load_method(str(path))
    with pytest.raises(KdError, match="method 'nope' not found: expected one of"):
        load_method("nope")
