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
