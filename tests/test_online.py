"""Terms that need the teacher's hidden states and attention: the teacher runs on every batch, frozen."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    TrainingArguments,
)

from kd.config import DistillConfig
from kd.methods import shapes
from kd.terms import build
from kd.trainer import KD_TERMS, DistillationTrainer


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([r["input_ids"] for r in rows]),
            "attention_mask": torch.tensor([r["attention_mask"] for r in rows]),
            "labels": torch.tensor([r["label"] for r in rows])}


def test_hidden_and_attention_terms_train_the_student_and_its_projections_never_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=4))
    student = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=4,
                                                                   hidden_dim=32, num_labels=4))
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_student = {k: v.clone() for k, v in student.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50, (16, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 4:] = 0  # padded rows
    labels = [-100 if i % 3 else i % 4 for i in range(16)]  # mostly pool rows, as under a label budget
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "label": labels})
    sh = shapes(student.config, teacher.config)
    distill = DistillConfig()
    terms = [(0.5, build("ce", {}, sh, "t")), (0.5, build("kl", {"temperature": 2.0}, sh, "t")),
             (1.0, build("hidden", {"at": "tokens"}, sh, "t")), (1.0, build("attention", {}, sh, "t"))]
    assert distill.alpha == 0.5 and terms[2][1].projections is not None  # widths 16 and 32: projected
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
                             use_cpu=True, report_to="none", save_strategy="no", logging_steps=2,
                             remove_unused_columns=False)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=data, data_collator=collate,
                                  method=terms, teacher_model=teacher)
    projection = terms[2][1].projections[0].weight.detach().clone()
    trainer.train()
    assert all(torch.equal(before_teacher[k], v) for k, v in teacher.state_dict().items()), "the teacher is untouched"
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    changed = [k for k, v in student.state_dict().items()
               if k in before_student and not torch.equal(before_student[k], v)]
    last = "distilbert.transformer.layer.1.attention.q_lin.weight"  # the attention term's own path into the student
    assert last in changed and "distilbert.transformer.layer.0.ffn.lin1.weight" in changed
    assert not torch.equal(projection, terms[2][1].projections[0].weight), "the projection trains with the student"
    assert len(getattr(student, KD_TERMS)) == 1, "the projection rides on the student (optimizer, DDP, checkpoints)"
    logged = [h for h in trainer.state.log_history if "loss_hidden" in h]
    assert logged and all(h["loss_attention"] > 0 and h["loss_kl"] >= 0 for h in logged)
