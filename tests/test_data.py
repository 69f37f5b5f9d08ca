import json
from collections import Counter

import pytest
from conftest import AG_NEWS, sample_rows, write_csv

from kd.config import DataConfig
from kd.data import fingerprint, load_splits, locate_data
from kd.errors import KdError


def cfg(folder, **kw):
    return DataConfig(source=str(folder), **{"validation_rows": 80, **kw})


def test_validation_split_is_stratified_seeded_and_never_test(small_data):
    s = load_splits(cfg(small_data))
    assert (len(s.train), len(s.validation), len(s.test)) == (520, 80, 200)
    assert Counter(s.validation["label"]) == {0: 20, 1: 20, 2: 20, 3: 20}
    train_texts, val_texts, test_texts = set(s.train["text"]), set(s.validation["text"]), set(s.test["text"])
    assert not (val_texts & train_texts) and not (val_texts & test_texts) and not (train_texts & test_texts)
    again = load_splits(cfg(small_data))
    assert again.validation["text"] == s.validation["text"]
    other = load_splits(cfg(small_data, seed=7))
    assert set(other.validation["text"]) != val_texts
    assert fingerprint(again.train) == fingerprint(s.train) != fingerprint(other.train)


def test_real_ag_news_is_found_without_a_path(monkeypatch):
    monkeypatch.delenv("KD_DATA", raising=False)
    assert locate_data(DataConfig()) == str(AG_NEWS)
    monkeypatch.setenv("KD_DATA", "/somewhere/else")
    assert locate_data(DataConfig()) == "/somewhere/else"
    assert locate_data(DataConfig(source="/given")) == "/given"


def test_train_rows_subsample_is_stratified(small_data):
    s = load_splits(cfg(small_data, train_rows=200, validation_rows=40))
    assert len(s.train) == 160 and Counter(s.train["label"]) == {0: 40, 1: 40, 2: 40, 3: 40}


def test_jsonl_and_label_names_and_other_columns(tmp_path):
    rows = sample_rows("train", 30)
    names = ["World", "Sports", "Business", "Sci/Tech"]
    with open(tmp_path / "train.jsonl", "w") as fh:
        for label, text in rows:
            fh.write(json.dumps({"topic": names[int(label)], "body": text}) + "\n")
    write_csv(tmp_path / "test.csv", [(names[int(label)], text) for label, text in rows[:40]], ("topic", "body"))
    s = load_splits(cfg(tmp_path, text_column="body", label_column="topic", validation_rows=20))
    assert sorted(Counter(s.train["label"]).values()) == [25, 25, 25, 25]
    assert s.test["label"][0] == int(rows[0][0])


def good(tmp_path, train_rows=None, test_rows=None):
    write_csv(tmp_path / "train.csv", train_rows or sample_rows("train", 20))
    write_csv(tmp_path / "test.csv", test_rows or sample_rows("test", 5))
    return tmp_path


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", r"missing does not exist: expected a folder with train.csv"),
    (lambda p: (good(p), (p / "test.csv").unlink(), p)[-1], r"no test.csv, test.jsonl or test.parquet"),
    (lambda p: (good(p), (p / "train.csv").write_text(""), p)[-1], r"train.csv: the file is empty"),
    (lambda p: (good(p), (p / "train.csv").write_text("label,text\n"), p)[-1], r"train.csv: has a header but no rows"),
    (lambda p: (good(p), write_csv(p / "train.csv", [("1", "x")], ("label", "body")), p)[-1],
     r"train.csv: no column 'text' \(columns: label, body\); name the text column with --set data.text_column"),
    (lambda p: good(p, train_rows=[("1", "a"), ("7", "b")]), r"train.csv: row 2 has label 7: expected an integer 0-3"),
    (lambda p: good(p, train_rows=[("1", "a"), ("Weather", "b")]), r"row 2 has label 'Weather': expected an id 0-3"),
    (lambda p: good(p, train_rows=[("1", "a"), ("2", "   ")]), r"train.csv: row 2 has an empty text"),
    (lambda p: (good(p), (p / "test.csv").write_bytes(b"label,text\n1,caf\xe9 \xff\n"), p)[-1],
     r"test.csv: could not be read as csv: it is not UTF-8 text"),
])
def test_bad_data_gives_one_clear_error(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(KdError, match=message) as err:
        load_splits(cfg(folder, validation_rows=8))
    assert "\n" not in str(err.value)


def test_too_many_validation_rows(tmp_path):
    with pytest.raises(KdError, match="data.validation_rows=500"):
        load_splits(cfg(good(tmp_path), validation_rows=500))


def test_tokenizer_fingerprint_ignores_call_state_but_not_vocab():
    from transformers import AutoTokenizer

    from kd.features import tokenizer_fingerprint
    from kd.models import resolve_source

    tok = AutoTokenizer.from_pretrained(resolve_source("bundled:all-MiniLM-L6-v2", "t"))
    before = tokenizer_fingerprint(tok, 128)
    tok(["some text"], truncation=True, max_length=16)
    tok.pad({"input_ids": [[1, 2], [3]]})
    assert tokenizer_fingerprint(tok, 128) == before
    assert tokenizer_fingerprint(tok, 64) != before
    tok.add_tokens(["zzzunseen"])
    assert tokenizer_fingerprint(tok, 128) != before
