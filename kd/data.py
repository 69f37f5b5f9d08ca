"""Load a text-classification data set, check it, and carve the seeded, stratified validation split.

Where the data comes from: `data.source` as written (the preset's, or `--data` verbatim), a folder or a hub dataset
id; when none is given, $KD_DATA, then <repo>/data/ag_news/, then AG News from the hub (AG_NEWS_HUB_ID).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from kd.config import DataConfig
from kd.datafile import FORMATS, normalise, read_file
from kd.errors import KdError

REPO_ROOT = Path(__file__).resolve().parents[1]
AG_NEWS_HUB_ID = "fancyzhx/ag_news"


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
    """The source as given, else the first place in the search order that holds data; AG News's hub id when none
    does."""
    if cfg.source:
        return cfg.source
    if os.environ.get("KD_DATA"):
        return os.environ["KD_DATA"]
    folder = REPO_ROOT / "data" / "ag_news"
    return str(folder) if _find_split_file(folder, "train") else AG_NEWS_HUB_ID


def load_splits(cfg: DataConfig) -> Splits:
    source = locate_data(cfg)
    if _looks_local(source):
        train, test, label_names, wheres = _load_local(Path(source), cfg)
    else:
        train, test, label_names, wheres = _load_hub(source, cfg)
    _check_label_sets(train, test, label_names, wheres, declared=_looks_local(source))
    train = stratified_take(train, cfg.train_rows, cfg.seed, what=f"data.train_rows={cfg.train_rows}", where=wheres[0])
    _check_every_label(train, f"data.train_rows={cfg.train_rows}: the stratified sample", "raise data.train_rows")
    test = stratified_take(test, cfg.test_rows, cfg.seed, what=f"data.test_rows={cfg.test_rows}", where=wheres[1])
    what = f"data.validation_rows={cfg.validation_rows}"
    if cfg.validation_rows < len(label_names) or len(train) - cfg.validation_rows < len(label_names):
        raise KdError(
            f"{what}: expected at least one row per label ({len(label_names)}) and at most "
            f"{max(len(train) - len(label_names), 0)} of the {len(train)} train rows (the rest train the model)"
        )
    _check_two_per_label(train, what, wheres[0])
    carved = stratified_split(train, len(train) - cfg.validation_rows, cfg.validation_rows, cfg.seed)
    _check_every_label(carved["train"], f"{what}: the train rows left beside validation", "lower it")
    return Splits(carved["train"], carved["test"], test, label_names, source)


def _describe(ids, names: list[str]) -> str:
    """'label 3 (Sci/Tech)' or 'labels 2 (Business), 3 (Sci/Tech)'."""
    listed = ", ".join(f"{i} ({names[i]})" for i in ids)
    return f"label{'s' if len(ids) > 1 else ''} {listed}"


def _check_label_sets(train: Dataset, test: Dataset, names: list[str], wheres, declared: bool) -> None:
    """Every label needs training rows; a test label the model never trains on cannot be learnt."""
    train_where, test_where = wheres
    seen = set(train["label"][:])
    unseen = sorted(set(test["label"][:]) - seen)
    if unseen:
        raise KdError(
            f"{test_where}: {_describe(unseen, names)} {'occur' if len(unseen) > 1 else 'occurs'} in the test rows "
            f"but never in {train_where}; every test label needs training rows"
        )
    never = sorted(set(range(len(names))) - seen)
    if never:
        fix = (
            "every label in data.label_names needs training rows (set data.label_names to the labels the data has)"
            if declared
            else "every label of the dataset's ClassLabel needs training rows"
        )
        verb = "occur" if len(never) > 1 else "occurs"
        raise KdError(f"{train_where}: {_describe(never, names)} never {verb}; {fix}")


def _check_every_label(ds: Dataset, what: str, fix: str) -> None:
    names = ds.features["label"].names
    missing = sorted(set(range(len(names))) - set(ds["label"][:]))
    if missing:
        raise KdError(f"{what} has no rows of {_describe(missing, names)}; {fix}")


def _check_two_per_label(ds: Dataset, what: str, where) -> None:
    """A stratified split needs at least two rows of each label (one for each side)."""
    single = sorted(label for label, count in Counter(ds["label"][:]).items() if count < 2)
    if single:
        raise KdError(
            f"{what}: {_describe(single, ds.features['label'].names)} {'have' if len(single) > 1 else 'has'} "
            f"only 1 row in {where}; a stratified split needs at least 2 rows of every label"
        )


def _looks_local(source: str) -> bool:
    # A hub id is "name" or "owner/name"; anything that exists or looks like a path is local.
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in FORMATS:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load_local(folder: Path, cfg: DataConfig) -> tuple[Dataset, Dataset, list[str], tuple[str, str]]:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise KdError(f"data folder {folder} does not exist: expected a folder with train.csv and test.csv")
    names = cfg.label_names
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != len(names)
    ):
        raise KdError(
            f"data.label_names={names!r}: expected a list of distinct label names in id order, "
            f"e.g. --set data.label_names=[World,Sports,Business,Sci/Tech]"
        )
    loaded, wheres = [], []
    for split in ("train", "test"):
        path = _find_split_file(folder, split)
        if path is None:
            raise KdError(f"{folder}: no {split}.csv, {split}.jsonl or {split}.parquet found")
        loaded.append(read_file(path, cfg))
        wheres.append(str(path))
    return loaded[0], loaded[1], list(names), (wheres[0], wheres[1])


def _load_hub(dataset_id: str, cfg: DataConfig) -> tuple[Dataset, Dataset, list[str], tuple[str, str]]:
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
    wheres = (f"{dataset_id}[train]", f"{dataset_id}[test]")
    return normalise(dsd["train"], wheres[0], cfg), normalise(dsd["test"], wheres[1], cfg), names, wheres


def stratified_take(
    ds: Dataset, rows: int | None, seed: int, *, what: str | None = None, where: str = "the rows to sample from"
) -> Dataset:
    """A seeded sample of `rows` rows with the label proportions of `ds`; all of `ds` when rows is None or more."""
    if rows is None or rows >= len(ds):
        return ds
    what = what or f"a stratified sample of {rows} rows"
    n = len(set(ds["label"][:]))
    if rows < n or len(ds) - rows < n:
        raise KdError(
            f"{what}: expected at least one row per label ({n}) and at most {len(ds) - n} of the {len(ds)} rows "
            f"(or all of them)"
        )
    _check_two_per_label(ds, what, where)
    return stratified_split(ds, rows, len(ds) - rows, seed)["train"]


def stratified_split(ds: Dataset, n_train: int, n_test: int, seed: int) -> dict[str, Dataset]:
    """`ds.train_test_split(train_size=n_train, test_size=n_test, stratify_by_column="label", seed=seed)`: the same
    rows, drawn by the same datasets helper with the same generator. datasets 5 reads the label column for it one
    row at a time (6 s for 33,200 rows, in every command that loads the data); here it is read whole."""
    labels = np.asarray(ds["label"][:])
    train, test = next(stratified_shuffle_split_generate_indices(labels, n_train, n_test,
                                                                 rng=np.random.default_rng(seed)))
    return {"train": ds.select(train), "test": ds.select(test)}
