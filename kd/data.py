"""Load a text-classification data set, check it, and carve the seeded, stratified validation split.

Search order for the data when none is given: --data, $KD_DATA, <repo>/data/ag_news/,
<repo>/../shared/data/ag_news/, then the hub dataset id of the preset (data.hub_id).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, Features, Value

from kd.config import DataConfig
from kd.errors import KdError

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class Splits:
    train: Dataset  # columns: text, label (ClassLabel)
    validation: Dataset
    test: Dataset
    label_names: list[str]
    source: str

    def fingerprints(self) -> dict[str, str]:
        return {name: fingerprint(getattr(self, name)) for name in ("train", "validation", "test")}


def fingerprint(ds: Dataset) -> str:
    """A content hash of the rows (text and label), stable across machines and library versions."""
    h = hashlib.sha256()
    for batch in ds.select_columns(["text", "label"]).iter(batch_size=4096):
        for text, label in zip(batch["text"], batch["label"]):
            h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:16]


def locate_data(cfg: DataConfig) -> str:
    """The first place in the search order that holds data; a hub id when none does."""
    if cfg.source:
        return cfg.source
    if os.environ.get("KD_DATA"):
        return os.environ["KD_DATA"]
    for folder in (REPO_ROOT / "data" / "ag_news", REPO_ROOT.parent / "shared" / "data" / "ag_news"):
        if _find_split_file(folder, "train"):
            return str(folder)
    return cfg.hub_id


def load_splits(cfg: DataConfig) -> Splits:
    source = locate_data(cfg)
    if _looks_local(source):
        train, test, label_names = _load_local(Path(source), cfg)
    else:
        train, test, label_names = _load_hub(source, cfg)
    train = stratified_take(train, cfg.train_rows, cfg.seed)
    test = stratified_take(test, cfg.test_rows, cfg.seed)
    if cfg.validation_rows < len(label_names) or cfg.validation_rows >= len(train):
        raise KdError(
            f"data.validation_rows={cfg.validation_rows}: expected at least one row per label "
            f"({len(label_names)}) and fewer than the {len(train)} train rows"
        )
    carved = train.train_test_split(
        test_size=cfg.validation_rows, stratify_by_column="label", seed=cfg.seed, shuffle=True
    )
    return Splits(carved["train"], carved["test"], test, label_names, source)


def _looks_local(source: str) -> bool:
    # A hub id is "name" or "owner/name"; anything that exists or looks like a path is local.
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in FORMATS:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load_local(folder: Path, cfg: DataConfig) -> tuple[Dataset, Dataset, list[str]]:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise KdError(f"data folder {folder} does not exist: expected a folder with train.csv and test.csv")
    loaded = []
    for split in ("train", "test"):
        path = _find_split_file(folder, split)
        if path is None:
            raise KdError(f"{folder}: no {split}.csv, {split}.jsonl or {split}.parquet found")
        loaded.append(_read_file(path, cfg))
    return loaded[0], loaded[1], list(cfg.label_names)


def _read_file(path: Path, cfg: DataConfig) -> Dataset:
    if path.stat().st_size == 0:
        raise KdError(f"{path}: the file is empty; expected a header with {cfg.label_column},{cfg.text_column}")
    builder = FORMATS[path.suffix]
    # The datasets cache would land beside the user's data or in ~/.cache; a scratch folder keeps both clean.
    with tempfile.TemporaryDirectory(prefix="kd-data-") as scratch:
        try:
            ds = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=scratch, keep_in_memory=True
            )
        except Exception as exc:  # the builders raise many types; the user needs the file and the cause
            cause = exc.__cause__ or exc
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            if isinstance(cause, UnicodeDecodeError):
                detail = "it is not UTF-8 text"
            if "corresponds to no data" in detail:
                raise KdError(f"{path}: has a header but no rows") from None
            raise KdError(f"{path}: could not be read as {builder}: {detail}") from None
    return _normalise(ds, path, cfg)


def _normalise(ds: Dataset, where: Path | str, cfg: DataConfig) -> Dataset:
    for role, column in (("text", cfg.text_column), ("label", cfg.label_column)):
        if column not in ds.column_names:
            raise KdError(
                f"{where}: no column {column!r} (columns: {', '.join(map(str, ds.column_names))}); "
                f"name the {role} column with --set data.{role}_column=NAME"
            )
    if len(ds) == 0:
        raise KdError(f"{where}: has a header but no rows")
    texts = ds[cfg.text_column]
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise KdError(f"{where}: row {i + 1} has an empty text in column {cfg.text_column!r}")
    labels = [_label_id(v, i, where, cfg) for i, v in enumerate(ds[cfg.label_column])]
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(cfg.label_names))})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _label_id(value, row: int, where, cfg: DataConfig) -> int:
    names = cfg.label_names
    if isinstance(value, str):
        stripped = value.strip()
        if stripped in names:
            return names.index(stripped)
        try:
            value = int(stripped)
        except ValueError:
            raise KdError(
                f"{where}: row {row + 1} has label {value!r}: expected an id 0-{len(names) - 1} "
                f"or one of the names {names}"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(names):
        raise KdError(
            f"{where}: row {row + 1} has label {value!r}: expected an integer 0-{len(names) - 1} "
            f"({len(names)} labels: {', '.join(names)})"
        )
    return value


def _load_hub(dataset_id: str, cfg: DataConfig) -> tuple[Dataset, Dataset, list[str]]:
    try:
        dsd = datasets.load_dataset(dataset_id)
    except Exception as exc:
        raise KdError(
            f"data {dataset_id!r}: not a local folder, and loading it from the hub failed "
            f"({type(exc).__name__}); pass --data FOLDER for local files"
        ) from None
    for split in ("train", "test"):
        if split not in dsd:
            raise KdError(f"hub dataset {dataset_id}: has no {split!r} split (it has {list(dsd)})")
    feature = dsd["train"].features.get(cfg.label_column)
    names = list(feature.names) if isinstance(feature, ClassLabel) else list(cfg.label_names)
    cfg = DataConfig(**{**cfg.__dict__, "label_names": names})
    return (
        _normalise(dsd["train"], f"{dataset_id}[train]", cfg),
        _normalise(dsd["test"], f"{dataset_id}[test]", cfg),
        names,
    )


def stratified_take(ds: Dataset, rows: int | None, seed: int) -> Dataset:
    if rows is None or rows >= len(ds):
        return ds
    return ds.train_test_split(train_size=rows, stratify_by_column="label", seed=seed)["train"]
