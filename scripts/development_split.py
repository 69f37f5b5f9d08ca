"""A development data folder for choosing a recipe without touching a study's test rows or its students' rows.

    python scripts/development_split.py STUDY OUT [--data SOURCE]

STUDY's cells draw their students' train rows (and, under a label budget, their labelled rows) from the train
split, and carve their validation rows from it; they are scored on the test split. OUT gets:
  train.csv  the train split less the study's validation rows and every one of its students' rows, so that
             labelled rows drawn from it are never rows the study trains on;
  test.csv   the study's validation rows, which no cell of it trains on or is scored on.
A study run on OUT (`kd study dev-recipe --data OUT`) is therefore scored on the study's validation split."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("out", type=Path)
    p.add_argument("--data", help="the study's data (default: as for a run)")
    args = p.parse_args(argv)
    from cli.main import SECTIONS
    from kd.errors import KdError
    from kd.run import RunContext
    from kd.study import cell_config, cells, load_study

    try:
        study = load_study(args.study)
        if args.out.exists() and any(args.out.iterdir()):
            raise KdError(f"{args.out}: not empty; give a new folder")
        # the students' rows and the validation split depend on data.seed and student.train_rows, not on the seed or
        # budget of a cell: every cell has the same
        cfg = cell_config(study, cells(study)[0], args.data, SECTIONS)
        ctx = RunContext(cfg, Path(tempfile.mkdtemp()))
        splits, students = ctx.splits, ctx.student_train
    except KdError as exc:
        print(f"kd: {exc}")
        return 2
    used = set(students["text"])
    train = splits.train.filter(lambda row: row["text"] not in used)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, ds in (("train", train), ("test", splits.validation)):  # label ids, in data.label_names' order
        ds.select_columns(["text", "label"]).to_csv(args.out / f"{name}.csv", index=False)
    print(f"{args.out}: train.csv {len(train):,} rows (the train split less {len(splits.validation):,} validation "
          f"and {len(students):,} student rows), test.csv {len(splits.validation):,} rows (the study's validation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
