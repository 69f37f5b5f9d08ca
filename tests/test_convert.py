import pytest
import torch
from conftest import sample_rows
from transformers import AutoTokenizer, BertModel

from kd.convert import distilbert_from_bert, parse_layers
from kd.errors import KdError
from kd.models import resolve_source


@pytest.fixture(scope="module")
def minilm():
    folder = resolve_source("bundled:all-MiniLM-L6-v2", "teacher.model")
    return BertModel.from_pretrained(folder, use_safetensors=True).eval(), AutoTokenizer.from_pretrained(folder)


def test_all_six_layers_reproduce_bert_hidden_states(minilm):
    bert, tok = minilm
    student = distilbert_from_bert(bert, list(range(6)), num_labels=4).eval()
    texts = [text for _, text in sample_rows("test", 4)]  # real texts, different lengths: a padded batch
    batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        want = bert(**batch).last_hidden_state
        got = student.distilbert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (got[real] - want[real]).abs().max().item() < 1e-4


def test_chosen_layers_are_copied_and_token_type_folded(minilm):
    bert, _ = minilm
    student = distilbert_from_bert(bert, [0, 2, 4], num_labels=4)
    assert student.config.n_layers == 3 and student.config.dim == 384
    for block, index in zip(student.distilbert.transformer.layer, [0, 2, 4]):
        assert torch.equal(block.ffn.lin1.weight, bert.encoder.layer[index].intermediate.dense.weight)
        assert torch.equal(block.attention.q_lin.weight, bert.encoder.layer[index].attention.self.query.weight)
    emb = bert.embeddings
    assert torch.allclose(student.distilbert.embeddings.position_embeddings.weight,
                          emb.position_embeddings.weight + emb.token_type_embeddings.weight[0])


def test_without_folding_the_hidden_states_differ(minilm):
    """Guards the fold: dropping the token-type row moves the output far beyond the tolerance."""
    bert, tok = minilm
    student = distilbert_from_bert(bert, list(range(6)), num_labels=4).eval()
    with torch.no_grad():
        student.distilbert.embeddings.position_embeddings.weight -= bert.embeddings.token_type_embeddings.weight[0]
        batch = tok(["A short news text."], return_tensors="pt")
        diff = student.distilbert(input_ids=batch["input_ids"]).last_hidden_state - bert(**batch).last_hidden_state
    assert diff.abs().max().item() > 1e-2


@pytest.mark.parametrize("spec,message", [("from-teacher:", "expected from-teacher:<layer>"),
                                          ("from-teacher:a,b", "expected from-teacher:<layer>")])
def test_bad_layer_specs(spec, message):
    with pytest.raises(KdError, match=message):
        parse_layers(spec)


def test_layer_out_of_range(minilm):
    with pytest.raises(KdError, match=r"layers \[7\]: the teacher has layers 0-5"):
        distilbert_from_bert(minilm[0], [0, 7], num_labels=4)
