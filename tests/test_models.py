import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from kd.config import load_config
from kd.errors import KdError
from kd.models import load_teacher, match_labels, reorder_head, resolve_source

AG = ["World", "Sports", "Business", "Sci/Tech"]


def test_label_matching_by_name_generic_and_mismatch():
    assert match_labels(AG, AG, "t") == ([0, 1, 2, 3], "matched by name, same order")
    perm, how = match_labels(["sports", "world", "sci_tech", "BUSINESS"], AG, "t")
    assert perm == [1, 0, 3, 2] and "World 1->0, Sports 0->1, Business 3->2, Sci/Tech 2->3" in how
    assert match_labels([f"LABEL_{i}" for i in range(4)], AG, "t")[0] == [0, 1, 2, 3]
    with pytest.raises(KdError, match="teacher t has 3 labels .*the data has 4"):
        match_labels(AG[:3], AG, "t")
    with pytest.raises(KdError, match="do not match the data's"):
        match_labels(["a", "b", "c", "d"], AG, "t")


def test_reordered_head_gives_logits_in_the_data_order():
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=4)).eval()
    ids = torch.tensor([[1, 5, 7, 2]])
    before = model(input_ids=ids).logits[0]
    reorder_head(model, [2, 0, 3, 1], AG)
    after = model(input_ids=ids).logits[0]
    assert torch.allclose(after, before[[2, 0, 3, 1]])
    assert model.config.id2label[0] == "World"


def test_pickle_only_folder_is_refused_unless_opted_in(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(KdError, match=r"only pickled weights \(pytorch_model.bin\).*allow_pickle=true"):
        resolve_source(str(tmp_path), "teacher.model")
    assert resolve_source(str(tmp_path), "teacher.model", allow_pickle=True) == str(tmp_path)


def test_missing_folder_and_file_are_clear(tmp_path):
    with pytest.raises(KdError, match="the folder does not exist"):
        resolve_source(str(tmp_path / "nope"), "teacher.model")
    (tmp_path / "f").write_text("x")
    with pytest.raises(KdError, match="expected a model folder"):
        resolve_source(str(tmp_path / "f"), "student.model")


def test_bundled_weights_are_checked(monkeypatch):
    import kd.models as models

    monkeypatch.setattr(models, "_verified", set())
    monkeypatch.setitem(models.BUNDLED, "all-MiniLM-L6-v2", (*models.BUNDLED["all-MiniLM-L6-v2"][:2], "0" * 64))
    with pytest.raises(KdError, match="has sha256 53aa51172d142c89.*expected 0000"):
        resolve_source("bundled:all-MiniLM-L6-v2", "teacher.model")


def test_teacher_with_other_label_count_is_refused(tmp_path):
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3))
    model.save_pretrained(tmp_path)
    cfg = load_config("cpu", [f"teacher.model={tmp_path}", "teacher.tokenizer=bundled:all-MiniLM-L6-v2"])
    with pytest.raises(KdError, match=r"has 3 labels \(LABEL_0, LABEL_1, LABEL_2\); the data has 4"):
        load_teacher(cfg, AG)
