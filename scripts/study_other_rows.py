"""A finished study's models scored again on the test rows its report did not use: does a gain hold on other data?

    python scripts/study_other_rows.py runs/study-methods

A study scores every cell on a stratified share of the test split (`data.test_rows`). This scores every model of
every finished cell, in PyTorch fp32, on the rest of the test split, which no cell was tuned or scored on, and
aggregates those scores exactly as the study's report does (kd.study.aggregate: paired by seed, Holm-adjusted,
the simultaneous interval). It writes <study>/other_rows.json and other_rows.md.

A cell scores once: a later pass (a study run in parts is scored at every stop) takes the scores an earlier pass
gave it in other_rows.json, as long as the cell's record is the one that pass scored (a cell made again, whose record
gives other seconds, is scored again). That is also how a cell whose weights are gone (a study kept as its records,
scripts/study_records.py) keeps its scores; a cell with neither is left out, and the line it prints says so."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np


def read_earlier(path: Path, rows: int) -> dict[str, dict]:
    """The cells an earlier pass scored on the same rows, as it wrote them, by cell name ({} where there was none)."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if earlier["rows"] != rows:
        raise SystemExit(f"{path}: scored on {earlier['rows']} rows, expected {rows}; move it aside to start anew")
    return {c["name"]: c for c in earlier["cells"]}


def scored_before(cell, earlier: dict[str, dict]) -> dict | None:
    """The other rows' scores an earlier pass gave this very cell: its record, but for the scores, is the one that
    pass wrote (a cell trained again differs at least in its seconds); None where it is not."""
    from kd.study.schema import Scores
    from kd.typed import to_data

    before = earlier.get(cell.name)
    if before is None or {**before, "scores": None} != {**to_data(cell), "scores": None}:
        return None
    return {n: Scores(**s) for n, s in before["scores"].items()}


def main(args: list[str]) -> int:
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    from engines.inference import length_sorted_batches, logits_of
    from engines.predict import load
    from kd.atomic import write_json, write_text
    from kd.config import RunConfig, build_dataclass
    from kd.data import load_splits, stratified_split
    from kd.metrics import classification_metrics
    from kd.procedures import pool_probabilities
    from kd.runfolder import RunFolder
    from kd.study.aggregate import aggregate
    from kd.study.record import read_record
    from kd.study.schema import METRICS, Scores
    from kd.study.tables import render_methods, render_teachers
    from kd.typed import to_data

    root = Path(args[0])
    record = read_record(root)
    cells = record.finished if record else []
    if not cells:
        print(f"{root}: no finished cells", file=sys.stderr)
        return 2
    cfg = build_dataclass(RunConfig, RunFolder(root / cells[0].run_dir).read_manifest()["config"])
    share = cfg.data.test_rows
    cfg.data.test_rows = None
    splits = load_splits(cfg.data)
    full = splits.test
    other = stratified_split(full, share, len(full) - share, cfg.data.seed)["test"]  # the complement of the share
    texts, labels = other["text"][:], np.asarray(other["label"][:])
    print(f"{len(texts)} test rows outside the study's {share}", flush=True)
    earlier = read_earlier(root / "other_rows.json", len(texts))
    rescored, batches = [], {}
    for cell in cells:
        run = RunFolder(root / cell.run_dir)
        before = scored_before(cell, earlier)
        if before is not None:
            rescored.append(replace(cell, scores=before))
            print(f"{cell.name}: scored by an earlier pass (other_rows.json)", flush=True)
            continue
        if not (run.model_dir(run.model_names(with_weights=True)[0]) / "model.safetensors").is_file():
            print(f"{cell.name}: no weights and no earlier scores: left out", flush=True)
            continue
        scores, logits_of_model = {}, {}
        for name in run.model_names():
            members = run.members(name)
            if members:  # an ensemble: its members' logits pooled (they come first in the run's order)
                logits = pool_probabilities([logits_of_model[m] for m in members])
                m = classification_metrics(logits, labels, splits.label_names)
                scores[name] = Scores(**{k: m[k] for k in METRICS})
                continue
            loaded = load(run.model_dir(name))
            # the rows tokenized once per tokenizer (a study's models usually share one), not once per model
            key = (loaded.tokenizer.backend_tokenizer.to_str(), loaded.max_length)
            if key not in batches:
                batches[key] = list(length_sorted_batches(loaded.tokenizer, texts, loaded.max_length, 64))
            logits = logits_of_model[name] = logits_of(batches[key], loaded.engine.run)
            m = classification_metrics(logits, labels, splits.label_names)
            scores[name] = Scores(**{k: m[k] for k in METRICS})
        rescored.append(replace(cell, scores=scores))
        print(f"{cell.name}: " + ", ".join(f"{n} {100 * s.accuracy:.2f}" for n, s in scores.items()), flush=True)
    groups = aggregate(rescored, record.config.primary_models())
    write_json(root / "other_rows.json", {"rows": len(texts), "share": share, "cells": to_data(rescored),
                                          "groups": to_data(groups)})
    text = "\n".join([f"# {record.study}: the same models on the {len(texts):,} other test rows", *render_methods(
        groups, cfg, always=True), *render_teachers(groups)]) + "\n"
    write_text(root / "other_rows.md", text)
    print(text)
    return 0

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
