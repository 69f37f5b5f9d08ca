"""Read one data file (csv, jsonl, parquet) into a checked Dataset of text and label ids.

CSV values stay the literal text of the file; every problem with a file or a row is one KdError naming the
file, the row and what was expected.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from pathlib import Path

import datasets
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Value

from kd.config import DataConfig
from kd.errors import KdError, first_line
from kd.typed import is_integer

FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def read_file(path: Path, cfg: DataConfig) -> Dataset:
    if path.stat().st_size == 0:
        raise KdError(f"{path}: the file is empty; expected a header with {cfg.label_column},{cfg.text_column}")
    builder = FORMATS[path.suffix]
    options = {}
    if builder == "csv":
        # Every value stays the literal text of the file: no NA conversion ("NA", "null", "None" are news
        # texts too) and no number guessing ("007" stays "007"); labels arrive as strings for _label_id.
        # index_col=False: a row with more fields than the header is an error, never a silent index column.
        columns = dict.fromkeys((cfg.text_column, cfg.label_column), Value("string"))
        options = dict(features=Features(columns), na_filter=False, keep_default_na=False, index_col=False)
    try:
        ds = _load_file(builder, path, options)
    except Exception as exc:  # the builders raise many types; the user needs the file and the cause
        cause = exc.__cause__ or exc
        if isinstance(cause, KeyError) and "does not exist in schema" in str(cause):
            # The text or label column is missing: read the file as it is to name the columns it has.
            try:
                as_is = _load_file(builder, path, {**options, "features": None})
            except Exception as again:
                raise _read_error(path, builder, again.__cause__ or again) from None
            normalise(as_is, path, cfg)
        raise _read_error(path, builder, cause) from None
    return normalise(ds, path, cfg)


def _load_file(builder: str, path: Path, options: dict) -> Dataset:
    # The datasets cache would land beside the user's data or in ~/.cache; a scratch folder keeps both clean.
    with tempfile.TemporaryDirectory(prefix="kd-data-") as scratch, warnings.catch_warnings(), _quiet_builder():
        # pandas only warns when a row has more fields than the header, and drops the extra ones: an error here.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=scratch, keep_in_memory=True, **options
        )


@contextlib.contextmanager
def _quiet_builder():
    """The builders log their own 'Failed to read file' line before raising; the user gets ours instead."""
    logger = logging.getLogger("datasets.packaged_modules")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_error(path: Path, builder: str, cause: BaseException) -> KdError:
    detail = first_line(cause)
    detail = detail.removeprefix("Error tokenizing data. C error: ")
    if isinstance(cause, UnicodeDecodeError):
        detail = "it is not UTF-8 text"
    if isinstance(cause, pd.errors.ParserWarning):
        detail = "a row has more fields than the header (quote texts that hold commas)"
    if "corresponds to no data" in detail:
        return KdError(f"{path}: has a header but no rows")
    return KdError(f"{path}: could not be read as {builder}: {detail}")


def normalise(ds: Dataset, where: Path | str, cfg: DataConfig) -> Dataset:
    for role, column in (("text", cfg.text_column), ("label", cfg.label_column)):
        if column not in ds.column_names:
            raise KdError(
                f"{where}: no column {column!r} (columns: {', '.join(map(_printable, ds.column_names))}); "
                f"name the {role} column with --set data.{role}_column=NAME"
            )
    if len(ds) == 0:
        raise KdError(f"{where}: has a header but no rows")
    texts = ds[cfg.text_column][:]  # a list: iterating a Column formats row by row
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            kind = "a null text" if text is None else f"a text of type {type(text).__name__}"
            raise KdError(f"{where}: row {i + 1} has {kind} in column {cfg.text_column!r}: expected a string")
        if not text.strip():
            raise KdError(f"{where}: row {i + 1} has an empty text in column {cfg.text_column!r}")
    labels = [_label_id(v, i, where, cfg) for i, v in enumerate(ds[cfg.label_column][:])]
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(cfg.label_names))})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _printable(name) -> str:
    """A column name as is, or quoted with escapes when it holds line breaks or other unprintable characters."""
    return str(name) if str(name).isprintable() else repr(str(name))


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _label_id(value, row: int, where, cfg: DataConfig) -> int:
    names = cfg.label_names
    if isinstance(value, str):
        stripped = value.strip()
        if stripped in names:
            return names.index(stripped)
        if not stripped:
            raise KdError(
                f"{where}: row {row + 1} has no label in column {cfg.label_column!r}: "
                f"expected an id 0-{len(names) - 1} or one of the names {names}"
            )
        if not _INTEGER.fullmatch(stripped):  # ASCII digits only: int() would take "٣" and "0_1" too
            raise KdError(
                f"{where}: row {row + 1} has label {value!r}: expected an id 0-{len(names) - 1} "
                f"or one of the names {names}; to name labels otherwise, declare all names in id order "
                f"with --set data.label_names=[NAME0,NAME1,...]"
            )
        value = int(stripped)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_integer(value) or not 0 <= value < len(names):
        raise KdError(
            f"{where}: row {row + 1} has label {value!r}: expected an integer 0-{len(names) - 1} "
            f"({len(names)} labels: {', '.join(names)})"
        )
    return value
