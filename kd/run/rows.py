"""The row sets of a label budget. Under `data.labelled_rows` only that many of the students' train rows keep their
labels (the labelled rows); the rest are the pool, whose labels no model ever reads. Without a budget every row is
labelled and the pool is empty.

Indices are positions in the students' train rows (kd.run.context.RunContext.student_train); the datasets these
functions take are those rows tokenized, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import concatenate_datasets

from kd.data import stratified_take
from kd.procedures import confident_rows


@dataclass(frozen=True)
class LabelBudget:
    students: int  # how many students' train rows there are
    budget: np.ndarray | None  # the labelled rows' indices, ascending; None: no budget, every row is labelled

    @classmethod
    def choose(cls, student_train, data_cfg) -> LabelBudget:
        """The labelled rows, stratified by label and seeded (data.labelled_seed, else data.seed)."""
        rows, n = data_cfg.labelled_rows, len(student_train)
        if rows is None or rows >= n:
            return cls(n, None)
        seed = data_cfg.seed if data_cfg.labelled_seed is None else data_cfg.labelled_seed
        chosen = stratified_take(student_train.add_column("row", range(n)), rows, seed,
                                 what=f"data.labelled_rows={rows}", where="the students' train rows")
        return cls(n, np.sort(chosen["row"]))

    @property
    def labelled_rows(self) -> np.ndarray:
        """The indices of the rows that carry labels (all of them without a budget)."""
        return np.arange(self.students) if self.budget is None else self.budget

    @property
    def pool_rows(self) -> np.ndarray:
        """The indices of the rows whose labels are withheld (none without a budget)."""
        return np.setdiff1d(np.arange(self.students), self.labelled_rows)

    def labelled(self, students):
        """The labelled rows of `students`."""
        return students if self.budget is None else students.select(self.budget)

    def all_rows_pool_unlabelled(self, students):
        """Every row of `students`, the pool's labels replaced by -100 (no cross-entropy term there)."""
        if self.budget is None:
            return students
        labels = np.full(len(students), -100, dtype=np.int64)
        labels[self.budget] = np.asarray(students["label"])[self.budget]
        return students.remove_columns("label").add_column("label", labels.tolist())

    def labelled_and_pseudo_labelled(self, base, students, logits: np.ndarray, per_class: int,
                                     min_confidence: float) -> tuple:
        """`base` (labelled rows) plus the pool rows of `students` that the teacher (`logits` over the students'
        rows) labels most confidently, at most `per_class` of each class, with its labels: the dataset and the
        chosen pool rows' indices. No pool label is read."""
        pool = self.pool_rows
        rows, labels = confident_rows(logits[pool], per_class, min_confidence)
        chosen = pool[rows]

        def relabel(ds, values):
            # in memory: flattening a selection of a cached dataset would write into the cache's folder
            ds = ds.flatten_indices(keep_in_memory=True) if ds._indices is not None else ds
            return ds.remove_columns("label").add_column("label", [int(v) for v in values])

        extra = relabel(students.select(chosen), labels)
        return concatenate_datasets([relabel(base, base["label"]), extra]), chosen


def teacher_rows(ctx, tokenizer):
    """The rows a teacher fine-tunes on, tokenized: under a label budget the labelled rows the students see (all the
    students' rows when the budget covers them: a study's full budget), else the whole train split."""
    if ctx.cfg.data.labelled_rows is None:
        return ctx.tokenized("train", tokenizer)
    return ctx.budget.labelled(ctx.tokenized("student_train", tokenizer))
