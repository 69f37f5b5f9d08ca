"""Soft labels from a file: a teacher that is not a model of the run (an LLM or an API that labelled the texts, or
another run's teacher), read as the students read any teacher, one row of logits per training row.

The file (csv, jsonl or parquet) has a key column, `text` (the row's text, as the data holds it), and one column
per class in the data's label order: either `logit:<label>` (logits, any scale) or `prob:<label>` (probabilities
that sum to 1 within 1e-3). `kd teacher-logits --out FILE` writes the same format from a teacher of a run, so that
the file round-trips bit for bit (logits are written exactly: float32 in parquet, their exact decimal in csv and
jsonl). Rows beyond the students' are ignored; every student row must have one. Every problem is one KdError
naming the file, the row (1-based, after a csv's header) and the column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from kd.atomic import write_bytes
from kd.errors import KdError

KEY = "text"
KINDS = ("logit", "prob")  # the value columns: <kind>:<label>
SUM_TOLERANCE = 1e-3  # probabilities of a row must sum to 1 within this
FORMATS = (".csv", ".jsonl", ".parquet")


def _suffix(path: Path) -> str:
    if path.suffix not in FORMATS:
        raise KdError(f"{path}: a teacher-logits file is {', '.join(FORMATS)}; got {path.suffix or 'no suffix'!r}")
    return path.suffix


def _columns(path: Path, names: list[str], label_names: list[str]) -> tuple[str, list[str]]:
    """The kind (logit or prob) and its columns in the data's label order, or one error saying what is wrong."""
    if KEY not in names:
        raise KdError(f"{path}: no key column {KEY!r} (columns: {', '.join(names)}); expected {KEY} and one "
                      f"logit:<label> or prob:<label> column per class")
    kinds = {n.partition(":")[0] for n in names if n != KEY and ":" in n}
    if len(kinds & set(KINDS)) != 1:
        raise KdError(f"{path}: expected one column per class named logit:<label> or prob:<label> (not both), got "
                      f"columns {', '.join(n for n in names if n != KEY) or 'none'}")
    kind = (kinds & set(KINDS)).pop()
    given = [n.removeprefix(f"{kind}:") for n in names if n.startswith(f"{kind}:")]
    expected = [f"{kind}:{label}" for label in label_names]
    if len(given) != len(label_names):
        raise KdError(f"{path}: {len(given)} {kind} columns ({', '.join(given)}), expected {len(label_names)}: one "
                      f"per class ({', '.join(label_names)})")
    unknown = [g for g in given if g not in label_names]
    if unknown:
        raise KdError(f"{path}: column {kind}:{unknown[0]}: not a class of the data ({', '.join(label_names)})")
    if given != list(label_names):
        raise KdError(f"{path}: the {kind} columns name the classes in the order {', '.join(given)}, but the data's "
                      f"order is {', '.join(label_names)}: write the columns in the data's order")
    return kind, expected


def _read(path: Path) -> tuple[list[str], dict[str, list]]:
    """The file's column names and columns (text as strings, values as float64)."""
    from kd.datafile import _load_file, _read_error

    suffix = _suffix(path)
    if not path.is_file():
        raise KdError(f"{path}: no such teacher-logits file")
    if path.stat().st_size == 0:
        raise KdError(f"{path}: the file is empty")
    builder = {".csv": "csv", ".jsonl": "json", ".parquet": "parquet"}[suffix]
    options = {}
    if builder == "csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        from datasets import Features, Value

        # every value stays the literal text of the file: texts as they are, numbers parsed below by float(),
        # which rounds correctly, so that written logits read back bit for bit
        features = Features({n: Value("string") for n in header})
        options = dict(features=features, na_filter=False, keep_default_na=False, index_col=False)
    try:
        ds = _load_file(builder, path, options)
    except Exception as exc:  # the builders raise many types; the user needs the file and the cause
        raise _read_error(path, builder, exc.__cause__ or exc) from None
    return list(ds.column_names), {n: ds[n][:] for n in ds.column_names}


def read_teacher_file(path: Path, texts: list[str], label_names: list[str]) -> np.ndarray:
    """The file's logits for each of `texts` (the students' rows, in order), float32: logits as written, or the log
    of the probabilities. Raises KdError on a missing row, a duplicate key, a wrong or reordered class column, a
    value that is not finite, or probabilities that do not sum to 1."""
    path = Path(path)
    names, columns = _read(path)
    kind, wanted = _columns(path, names, label_names)
    keys = columns[KEY]
    values = np.empty((len(keys), len(wanted)), dtype=np.float64)
    for j, name in enumerate(wanted):
        for i, v in enumerate(columns[name]):
            values[i, j] = _number(v, path, i, name)
    if kind == "prob":
        if (values < 0).any():
            i, j = np.argwhere(values < 0)[0]
            raise KdError(f"{path}: row {i + 1}, column {wanted[j]}: {values[i, j]!r}; a probability is >= 0")
        off = np.flatnonzero(np.abs(values.sum(1) - 1) > SUM_TOLERANCE)
        if off.size:
            i = off[0]
            raise KdError(f"{path}: row {i + 1}: the prob columns sum to {values[i].sum():.6g}, expected 1 (within "
                          f"{SUM_TOLERANCE:g})")
    where: dict[str, int] = {}
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise KdError(f"{path}: row {i + 1}, column {KEY}: {key!r}; expected the row's text")
        if key in where:
            raise KdError(f"{path}: rows {where[key] + 1} and {i + 1} have the same {KEY} {_short(key)}; expected "
                          "one row per text")
        where[key] = i
    order = []
    for n, text in enumerate(texts):
        if text not in where:
            raise KdError(f"{path}: no row for the students' train row {n + 1} ({KEY} {_short(text)}); every "
                          f"student row needs one ({len(texts)} rows)")
        order.append(where[text])
    picked = values[order]
    if kind == "prob":  # logits whose softmax is the probabilities (a zero stays finite: far below any other)
        picked = np.log(np.maximum(picked, np.finfo(np.float32).tiny))
    return picked.astype(np.float32)


def write_teacher_file(path: Path, texts: list[str], logits: np.ndarray, label_names: list[str]) -> int:
    """`logits` (one row per text) written as a teacher-logits file, whole or not at all; a text that repeats is
    written once (its first row). Returns the rows written."""
    path = Path(path)
    suffix = _suffix(path)
    seen: set[str] = set()
    first = [i for i in range(len(texts)) if not (texts[i] in seen or seen.add(texts[i]))]
    names = [f"logit:{label}" for label in label_names]
    values = np.asarray(logits, dtype=np.float32)[first]
    keys = [texts[i] for i in first]
    if suffix == ".parquet":
        import io

        from datasets import Dataset, Features, Value

        features = Features({KEY: Value("string"), **{n: Value("float32") for n in names}})
        buf = io.BytesIO()
        Dataset.from_dict({KEY: keys, **{n: values[:, j] for j, n in enumerate(names)}}, features=features) \
            .to_parquet(buf)
        data = buf.getvalue()
    elif suffix == ".csv":
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([KEY, *names])
        # repr of the float64 that holds each float32 exactly: read back correctly rounded, it is that float32
        writer.writerows([key, *map(repr, map(float, row))] for key, row in zip(keys, values))
        data = buf.getvalue().encode()
    else:
        lines = [json.dumps({KEY: key, **{n: float(v) for n, v in zip(names, row)}}, ensure_ascii=False)
                 for key, row in zip(keys, values)]
        data = ("\n".join(lines) + "\n").encode()
    write_bytes(path, data)
    return len(keys)


def _number(value, path: Path, row: int, column: str) -> float:
    """A finite number from a file's cell (a csv's text, or a number), or one error naming the row and column."""
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not np.isfinite(number):
        raise KdError(f"{path}: row {row + 1}, column {column}: {value!r}; expected a finite number")
    return number


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
