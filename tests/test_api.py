"""The Python API's documented example (docs/api.md), run as written with small local models in place of the
hub names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import sample_rows
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from kd.models import resolve_source

DOC = Path(__file__).parent.parent / "docs" / "api.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/api.md has one example"
    return blocks[0]


def test_the_documented_example_distils_a_student_from_a_live_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("bundled:all-MiniLM-L6-v2", "tokenizer"))
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64, num_labels=4))
    student = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                                                                   num_labels=4))
    for folder, model in (("teacher", teacher), ("student", student)):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    rows = sample_rows("train", 24)
    Path("rows.csv").write_text("text,label\n" + "".join(f'"{t.replace(chr(34), "")}",{y}\n' for y, t in rows))
    code = example()
    for name, value in (("TEACHER", "teacher"), ("STUDENT", "student"), ("DATA", "rows.csv")):
        code, n = re.subn(rf'^{name} = "[^"]*"', f'{name} = "{value}"', code, flags=re.M)
        assert n == 1, name
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    trainer = scope["trainer"]
    trained = DistilBertForSequenceClassification.from_pretrained("distilled")
    assert not torch.equal(trained.classifier.weight, student.classifier.weight), "the student trained"
    teacher_after = scope["teacher"]
    reloaded = BertForSequenceClassification.from_pretrained("teacher")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), teacher_after.state_dict().values()))
    # both of the kd recipe's terms ran on every step (logged every logging_steps; these 12 steps are fewer)
    assert len(trainer._parts["loss_kl"]) == len(trainer._parts["loss_ce"]) == trainer.state.global_step > 0


def test_a_method_that_needs_the_teacher_without_one_is_one_clear_error():
    from datasets import Dataset

    from kd import DistillationTrainer
    from kd.errors import KdError

    student = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                                                                   num_labels=4))
    rows = Dataset.from_dict({"input_ids": [[1, 2]], "attention_mask": [[1, 1]], "label": [0]})
    with pytest.raises(KdError, match="needs the teacher \\(logits\\): pass teacher_model="):
        DistillationTrainer(model=student, method="kd", train_dataset=rows)
    with pytest.raises(KdError, match="not found: expected one of"):
        DistillationTrainer(model=student, method="nope", train_dataset=rows)


def _tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    teacher = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                       intermediate_size=64, num_labels=4, vocab_size=100))
    # no dropout: the loss computed twice (by the trainer, by hand) sees the same student
    student = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                                                                   num_labels=4, vocab_size=100, dropout=0.0,
                                                                   attention_dropout=0.0, seq_classif_dropout=0.0))
    return teacher, student


def test_the_seeds_spelling_temp_alpha_and_a_list_of_teachers_pooled_by_their_mean_probability(tmp_path):
    """`DistillationTrainer(model=…, teacher_model=…, temp=2.0, alpha=0.7, args=…)` builds kd with those settings;
    teacher_model=[t1, t2] distils from the mean of the two teachers' probabilities, on the hand-computed loss."""
    import torch.nn.functional as F
    from transformers import TrainingArguments

    from kd import DistillationTrainer
    from kd.errors import KdError

    t1, student = _tiny_pair(0)
    t2, _ = _tiny_pair(1)
    args = TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True)
    trainer = DistillationTrainer(model=student, teacher_model=t1, temp=2.0, alpha=0.7, args=args)
    (w_ce, ce), (w_kl, kl) = trainer.terms
    assert (ce.name, kl.name, w_ce, w_kl, kl.temperature) == ("ce", "kl", 0.7, pytest.approx(0.3), 2.0)
    with pytest.raises(KdError, match="temp=3.0 and temperature=2.0: give one of them"):
        DistillationTrainer(model=student, teacher_model=t1, temp=3.0, temperature=2.0, args=args)

    pooled = DistillationTrainer(model=student, teacher_model=[t1, t2], temp=2.0, alpha=0.7, args=args)
    inputs = {"input_ids": torch.tensor([[1, 5, 9, 2], [1, 7, 2, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), "labels": torch.tensor([2, -100])}
    student.train()
    loss = pooled.compute_loss(student, dict(inputs))
    with torch.no_grad():
        z_s = student(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        probs = [F.softmax(t.eval()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits, -1)
                 for t in (t1, t2)]
        mean = (probs[0] + probs[1]) / 2  # the ensemble's distribution, then softened at T = 2
        target = F.softmax(torch.log(mean) / 2.0, -1)
        kl_hand = 4.0 * (target * (target.log() - F.log_softmax(z_s / 2.0, -1))).sum(-1).mean()
        ce_hand = -F.log_softmax(z_s, -1)[0, 2] / 2  # one labelled row of two: summed over the batch's rows
    assert loss.item() == pytest.approx((0.7 * ce_hand + 0.3 * kl_hand).item(), rel=1e-5)
    with pytest.raises(KdError, match="2 teachers are pooled by their probabilities"):
        DistillationTrainer(model=student, teacher_model=[t1, t2], method="kd-hidden", args=args)
