import csv
import json
import re
from collections import Counter

import pytest
from conftest import AG_NEWS, sample_rows, write_csv
from datasets import Dataset
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kd import data as data_module
from kd.config import DataConfig, load_config
from kd.data import AG_NEWS_HUB_ID, fingerprint, load_splits, locate_data, stratified_split
from kd.datafile import read_file
from kd.errors import KdError

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


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


def test_stratified_split_draws_the_rows_train_test_split_draws(small_data):
    """Runs carved before this helper existed must keep their validation rows: the same rows as datasets' own."""
    train = load_splits(cfg(small_data)).train
    for n_train, n_test, seed in [(400, 120, 42), (130, 390, 7)]:
        theirs = train.train_test_split(train_size=n_train, test_size=n_test, stratify_by_column="label", seed=seed)
        ours = stratified_split(train, n_train, n_test, seed)
        for part in ("train", "test"):
            assert ours[part]["text"][:] == theirs[part]["text"][:]


def test_the_data_is_the_source_as_given_else_kd_data_else_data_folder_else_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(data_module, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("KD_DATA", raising=False)
    assert locate_data(DataConfig()) == AG_NEWS_HUB_ID  # nothing local: AG News from the hub
    write_csv(tmp_path / "data" / "ag_news" / "train.csv", sample_rows("train", 2))
    assert locate_data(DataConfig()) == str(tmp_path / "data" / "ag_news")
    monkeypatch.setenv("KD_DATA", str(AG_NEWS))
    assert locate_data(DataConfig()) == str(AG_NEWS)
    for source in ("/given", "someone/their_dataset", "2024", "/data/my #set", "news: v2"):
        assert locate_data(DataConfig(source=source)) == source  # ahead of $KD_DATA and data/, verbatim


def test_a_presets_hub_id_is_honoured_and_the_old_hub_id_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA", str(AG_NEWS))
    preset = tmp_path / "mine.yaml"
    preset.write_text("data: {source: someone/their_dataset}\n")
    assert locate_data(load_config(str(preset)).data) == "someone/their_dataset"
    preset.write_text("data: {hub_id: someone/their_dataset}\n")
    with pytest.raises(KdError, match="unknown key data.hub_id"):
        load_config(str(preset))


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
    # With one field more than the header in every row, pandas made the first field an index and shifted
    # the rest, so "1,2,hello" loaded as label 2, text "hello" without a word.
    (lambda p: good(p, train_rows=[("1", "2", "hello"), ("0", "3", "world")]),
     r"train.csv: could not be read as csv: a row has more fields than the header"),
    (lambda p: good(p, train_rows=[("1", "a"), ("2", "b", "c")]), r"train.csv: could not be read as csv: Expected 2"),
    # Found by fuzzing: a label with one row made the stratified validation split raise a bare ValueError.
    (lambda p: good(p, train_rows=[(str(i % 3), f"t{i}") for i in range(12)] + [("3", "lonely")]),
     r"data.validation_rows=8: label 3 \(Sci/Tech\) has only 1 row in .*train.csv; a stratified split needs"),
    (lambda p: (good(p), (p / "train.csv").write_text('"lab\nel",text\n1,a\n'), p)[-1],
     r"train.csv: no column 'label' \(columns: 'lab\\nel', text\)"),
])
def test_bad_data_gives_one_clear_error(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(KdError, match=message) as err:
        load_splits(cfg(folder, validation_rows=8))
    assert len(str(err.value).splitlines()) == 1


def test_too_many_validation_rows(tmp_path):
    with pytest.raises(KdError, match="data.validation_rows=500"):
        load_splits(cfg(good(tmp_path), validation_rows=500))


def one_line_error(call, *args) -> str:
    with pytest.raises(KdError) as err:
        call(*args)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_csv_values_stay_literal_text(tmp_path):
    rows = [("1", "NA"), ("2", "null"), (" 3 ", "None"), ("Sports", "123"), ("0", "007"), ("World", "1.50"),
            ("3", "#N/A"), ("1", "nan"), ("+2", " padded "), ("Sci/Tech", "True")]
    ds = read_file(write_csv(tmp_path / "train.csv", rows), DataConfig())
    assert ds["text"] == [text for _, text in rows]
    assert ds["label"] == [1, 2, 3, 1, 0, 0, 3, 1, 2, 3]


@pytest.mark.parametrize("value,kind", [(5, "a text of type int"), (None, "a null text"),
                                        (["a"], "a text of type list"), (1.5, "a text of type float")])
def test_json_text_must_be_a_string(tmp_path, value, kind):
    rows = [{"label": 0, "text": "a"}, {"label": 1, "text": "b"}, {"label": 2, "text": value}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_csv(tmp_path / "test.csv", [("0", "x")])
    message = one_line_error(load_splits, cfg(tmp_path, validation_rows=4))
    assert message == f"{tmp_path / 'train.jsonl'}: row 3 has {kind} in column 'text': expected a string"
    rows[2]["text"] = "  "
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert "row 3 has an empty text in column 'text'" in one_line_error(load_splits, cfg(tmp_path, validation_rows=4))


def test_undeclared_label_names_say_how_to_declare_them(tmp_path):
    good(tmp_path, train_rows=[("Sports", "a"), ("Weather", "b")])
    message = one_line_error(load_splits, cfg(tmp_path))
    assert message == (
        f"{tmp_path / 'train.csv'}: row 2 has label 'Weather': expected an id 0-3 or one of the names {NAMES}; "
        "to name labels otherwise, declare all names in id order with --set data.label_names=[NAME0,NAME1,...]"
    )
    # Declared names map to their ids, in the files' own order.
    write_csv(tmp_path / "train.csv", [(n, f"{n} {i}") for i in range(3) for n in ("Rain", "Sun", "Weather")])
    write_csv(tmp_path / "test.csv", [("Sun", "x"), (" Weather ", "y"), ("0", "z")])
    s = load_splits(cfg(tmp_path, label_names=["Rain", "Sun", "Weather"], validation_rows=3))
    assert list(s.test["label"]) == [1, 2, 0] and s.label_names == ["Rain", "Sun", "Weather"]
    assert Counter(list(s.train["label"]) + list(s.validation["label"])) == {0: 3, 1: 3, 2: 3}


def test_a_declared_label_without_training_rows_is_refused(tmp_path):
    rows = [(str(i % 3), f"text {i}") for i in range(12)]
    good(tmp_path, train_rows=rows, test_rows=[("0", "x"), ("2", "y")])
    message = one_line_error(load_splits, cfg(tmp_path, validation_rows=4))
    assert message == (
        f"{tmp_path / 'train.csv'}: label 3 (Sci/Tech) never occurs; every label in data.label_names needs "
        "training rows (set data.label_names to the labels the data has)"
    )
    s = load_splits(cfg(tmp_path, validation_rows=4, label_names=NAMES[:3]))
    assert s.label_names == NAMES[:3] and len(s.train) == 8
    write_csv(tmp_path / "train.csv", [("0", f"text {i}") for i in range(6)])
    write_csv(tmp_path / "test.csv", [("0", "x")])
    assert "labels 1 (Sports), 2 (Business) never occur;" in one_line_error(
        load_splits, cfg(tmp_path, validation_rows=4, label_names=NAMES[:3]))


def test_a_test_label_missing_from_train_is_refused(tmp_path):
    rows = [(str(i % 3), f"text {i}") for i in range(12)]
    good(tmp_path, train_rows=rows, test_rows=[("0", "x"), ("3", "y"), ("Sci/Tech", "z")])
    message = one_line_error(load_splits, cfg(tmp_path, validation_rows=4))
    assert message == (
        f"{tmp_path / 'test.csv'}: label 3 (Sci/Tech) occurs in the test rows but never in "
        f"{tmp_path / 'train.csv'}; every test label needs training rows"
    )


@pytest.mark.parametrize("kw,message", [
    ({"train_rows": 3}, r"data.train_rows=3: expected at least one row per label \(4\) and at most 8 of the 12 rows"),
    ({"test_rows": 1}, r"data.test_rows=1: expected at least one row per label \(2\)"),
    ({"test_rows": 2}, r"data.test_rows=2: label 1 \(Sports\) has only 1 row in .*test.csv; a stratified split"),
    ({"validation_rows": 9}, r"data.validation_rows=9: expected at least one row per label \(4\) and at most 8 of"),
    ({"label_names": ["A", "A", "B", "C"]}, r"data.label_names=\['A', 'A', 'B', 'C'\]: expected a list of distinct"),
])
def test_impossible_samples_and_splits_are_config_errors(tmp_path, kw, message):
    good(tmp_path, train_rows=[(str(i % 4), f"text {i}") for i in range(12)],
         test_rows=[("0", "a"), ("0", "b"), ("0", "c"), ("0", "d"), ("1", "e")])
    with pytest.raises(KdError, match=message) as err:
        load_splits(cfg(tmp_path, **{"validation_rows": 4, **kw}))
    assert len(str(err.value).splitlines()) == 1


# --- property-based: whatever CSV lands in the data folder, the loader loads it right or says why in one line ---

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ODD_TEXTS = ["NA", "null", "None", "nan", "NaN", "N/A", "#N/A", "", "123", "007", "1.50", "-0", "1e5", "True", " ",
             "\t", "a,b", '"quoted"', 'say "hi", ok', "line\nbreak", "cr\rlf\r\n", "\x00nul", "\ufeffbom", "\u2028",
             "\x85", "  padded  ", "#comment", "\\", "'", "é ünï 中文 🙂"]
texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    st.sampled_from(ODD_TEXTS),
    st.text(st.sampled_from(',"\n\r \t#\\\'aZ0\x00é'), max_size=10),
)
labels = st.one_of(
    st.integers(0, 3).map(str),
    st.integers(-3, 12).map(str),
    st.sampled_from(NAMES),
    st.sampled_from(["Weather", "world", "", " ", "\t", "1.0", "٣", "0_1", "+2", " 2 ", "02", "NA", "None", '"1"']),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=6),
)


def expected_error(rows: list[tuple[str, str]]) -> str | None:
    """The start of the message the first invalid row must give (texts are checked before labels); None: all valid."""
    for i, (_, text) in enumerate(rows):
        if not text.strip():
            return f"row {i + 1} has an empty text in column 'text'"
    for i, (label, _) in enumerate(rows):
        stripped = label.strip()
        if stripped in NAMES:
            continue
        if not stripped:
            return f"row {i + 1} has no label in column 'label'"
        if not re.fullmatch(r"[+-]?[0-9]+", stripped):
            return f"row {i + 1} has label {label!r}: expected an id 0-3 or one of the names {NAMES}; to name labels"
        if not 0 <= int(stripped) < 4:
            return f"row {i + 1} has label {int(stripped)}: expected an integer 0-3"
    return None


@FUZZ
@given(rows=st.lists(st.tuples(labels, texts), min_size=1, max_size=8), text_first=st.booleans())
@example(rows=[("1", "NA"), ("2", "123"), ("3", "None")], text_first=False)
@example(rows=[("1", "a,b"), ("0", 'x"y'), ("2", "line\r\nbreak")], text_first=True)
@example(rows=[("٣", "a")], text_first=False)  # int() reads Arabic-Indic digits; a label id is ASCII digits
def test_written_csv_loads_exactly_or_names_the_first_bad_row(tmp_path, rows, text_first):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("text", "label") if text_first else ("label", "text"))
        writer.writerows([(text, label) if text_first else (label, text) for label, text in rows])
    wanted = expected_error(rows)
    if wanted is None:
        ds = read_file(path, DataConfig())
        assert ds["text"] == [text for _, text in rows]
        assert ds["label"] == [NAMES.index(lb.strip()) if lb.strip() in NAMES else int(lb) for lb, _ in rows]
    else:
        message = one_line_error(read_file, path, DataConfig())
        assert message.startswith(f"{path}: {wanted}"), message


csv_ish = st.lists(st.sampled_from(["label", "text", ",", '"', "\n", "\r", "\r\n", " ", "\x00", "NA", "1", "7", "a",
                                    "World", "\ufeff", "é", "#", "\\"]), max_size=30).map("".join)


@settings(FUZZ, max_examples=100)
@given(content=st.one_of(
    st.binary(max_size=120),
    csv_ish.map(str.encode),
    csv_ish.map(lambda body: ("label,text\n" + body).encode()),
    st.tuples(csv_ish, st.binary(max_size=8)).map(lambda t: b"label,text\n" + t[0].encode() + t[1]),
))
@example(content=b'"lab\nel",text\n1,a\n')  # a column name with a line break in the one-line error
@example(content=b"label,text\n1,\x00\n2,\xff\xfe\n")
@example(content=b'label,text\n1,"never closed\n')
def test_any_csv_bytes_load_or_give_one_kd_error(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    try:
        ds = read_file(path, DataConfig())
    except KdError as err:
        assert len(str(err).splitlines()) == 1, str(err)
    else:
        assert isinstance(ds, Dataset) and ds.column_names == ["text", "label"] and len(ds) > 0
        assert all(isinstance(t, str) and t.strip() for t in ds["text"])


@settings(FUZZ, max_examples=60)  # each example reads two files and splits twice: ~0.1 s
@given(train=st.lists(st.integers(0, 5), min_size=4, max_size=4), test=st.lists(st.integers(0, 3), min_size=4,
       max_size=4), train_rows=st.none() | st.integers(0, 24), test_rows=st.none() | st.integers(0, 14),
       validation_rows=st.integers(0, 12))
@example(train=[2, 2, 2, 1], test=[1, 1, 1, 1], train_rows=None, test_rows=None, validation_rows=4)
@example(train=[5, 5, 5, 2], test=[1, 1, 1, 1], train_rows=8, test_rows=None, validation_rows=4)
def test_any_label_counts_and_row_settings_split_or_give_one_kd_error(tmp_path, train, test, train_rows,
                                                                      test_rows, validation_rows):
    write_csv(tmp_path / "train.csv", [(str(k), f"train {k} {i}") for k, n in enumerate(train) for i in range(n)])
    write_csv(tmp_path / "test.csv", [(str(k), f"test {k} {i}") for k, n in enumerate(test) for i in range(n)])
    config = cfg(tmp_path, train_rows=train_rows, test_rows=test_rows, validation_rows=validation_rows)
    try:
        s = load_splits(config)
    except KdError as err:
        assert len(str(err).splitlines()) == 1, str(err)
    else:
        assert len(s.validation) == validation_rows
        assert len(s.train) + validation_rows == (sum(train) if train_rows is None else min(sum(train), train_rows))
        assert len(s.test) == (sum(test) if test_rows is None else min(sum(test), test_rows))
        assert set(s.train["label"]) == {0, 1, 2, 3}
        assert not set(s.train["text"]) & set(s.validation["text"])


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
