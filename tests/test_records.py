"""The records kd writes and reads back (results.json, study.json, cells/<cell>.json): each from its dataclass, read
back equal, and an older or malformed file one error line naming the file and the field."""

import json

import pytest

from kd.errors import KdError
from kd.results import DataSummary, Device, Distillation, McNemar, MethodTest, ModelRow, Results, Rows
from kd.runfolder import RunFolder
from kd.study.grid import Cell, StudyConfig
from kd.study.record import finish, finished_entries, read_record, settings, write_cell_record, write_record_file
from kd.study.schema import CellRecord, Scores, StudyRecord, Times
from kd.typed import to_data


def results(acc: dict[str, float]) -> Results:
    """A run's results with these test accuracies (teacher, baseline, distilled)."""
    models = {n: ModelRow(a, a - 0.01, a - 0.02, nll=1 - a, ece=0.05, brier=0.3, params=100, train_seconds=s,
                          f1_per_class={"World": a}, test_rows=500, method=None if n == "teacher" else n,
                          teacher="teacher" if n == "distilled" else None, procedure_seconds=0.5 if n == "distilled"
                          else None) for (n, a), s in zip(acc.items(), (10.0, 2.0, 4.0))}
    test = McNemar(3, 9, 0.146)
    return Results("smoke", Device("cpu", "AMD EPYC", {"cpus_usable": 2}),
                   DataSummary("/data", Rows(2000, 1000, 100, 400, 500), {"fingerprints": {"train": "ab"}}), models,
                   {"distilled": MethodTest("kd", "teacher", 1.2, test, 0.146, False, 1)},
                   Distillation(2.0, 0.5, 1.2, 0.4, 0.98, test, False), "new head, trained here")


def write_results(folder, res: Results):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(to_data(res)))
    return folder / "results.json"


def test_results_json_reads_back_equal_and_keeps_its_keys(tmp_path):
    res = results({"teacher": 0.9, "baseline": 0.8, "distilled": 0.82})
    path = write_results(tmp_path, res)
    assert Results.read(path) == res
    raw = json.loads(path.read_text())
    assert raw["version"] == 1 and raw["device"]["cpus_usable"] == 2 and raw["data"]["fingerprints"]
    assert raw["methods"]["distilled"]["significant_at_0.05"] is False  # the key results.json has always had
    assert raw["distillation"]["mcnemar_baseline_vs_distilled"]["only_b_right"] == 9


@pytest.mark.parametrize("change,message", [
    (lambda r: r.pop("version"), r"results.json: version=None: expected 1, the format this kd-bench writes; "
                                 r"`kd report --run-dir .*` rebuilds it from the models$"),
    (lambda r: r["models"]["baseline"].update(accuracy="high"),
     r"results.json: models.baseline.accuracy='high': expected a number; `kd report"),
    (lambda r: r["methods"]["distilled"].pop("mcnemar"),
     r"results.json: methods.distilled.mcnemar: expected a mapping"),
    (lambda r: r["data"]["rows"].update(test=None), r"results.json: data.rows.test=None: expected an integer"),
])
def test_an_older_or_malformed_results_json_names_the_file_and_field(tmp_path, change, message):
    path = write_results(tmp_path, results({"teacher": 0.9, "baseline": 0.8, "distilled": 0.82}))
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(KdError, match=message):
        Results.read(path)
    path.write_text('{"version": 1, "pre')
    with pytest.raises(KdError, match=r"results.json: not readable JSON; `kd report"):
        Results.read(path)


def finished_cell(root, seed: int, acc: dict[str, float]) -> CellRecord:
    """A cell of a study whose run folder's results.json has these accuracies, finished as run_cell finishes it."""
    cell = Cell(100, seed, "", (f"student.train.seed={seed}",))
    write_results(root / "cells" / cell.name, results(acc))
    entry = finish(settings(cell), RunFolder(root / "cells" / cell.name))
    write_cell_record(root, cell, entry)
    return entry


def test_a_cell_record_comes_from_its_results_and_study_json_reads_back_equal(tmp_path):
    from kd.study.aggregate import aggregate

    one = finished_cell(tmp_path, 1, {"teacher": 0.9, "baseline": 0.8, "distilled": 0.82})
    two = finished_cell(tmp_path, 2, {"teacher": 0.88, "baseline": 0.75, "distilled": 0.8})
    assert (one.state, one.labelled_rows, one.student_rows, one.test_rows, one.cpu) == ("finished", 100, 1000, 500,
                                                                                        "AMD EPYC")
    assert one.scores["distilled"] == Scores(0.82, pytest.approx(0.81), pytest.approx(0.18), 0.05, 0.3)
    # the teacher it learnt from and its own procedure count towards its time; the baseline has none
    assert one.times == {"baseline": Times(2.0, 0.0), "distilled": Times(4.0, 10.5)}
    assert one.mcnemar == McNemar(3, 9, 0.146) and one.tests["distilled"].method == "kd"
    grid = [Cell(100, s, "", (f"student.train.seed={s}",)) for s in (1, 2, 3)]
    assert list(finished_entries(tmp_path, grid)) == ["labels100-seed1", "labels100-seed2"]
    cells = [one, two, settings(grid[2])]
    record = StudyRecord("mine", StudyConfig(base="smoke", seeds=[1, 2, 3], budgets=[100]), "AMD EPYC", cells,
                         aggregate(cells))
    group = record.groups[0]
    assert group.seeds == [1, 2] and group.means["distilled"]["accuracy"].mean == pytest.approx(0.81)
    assert group.cost["distilled"].with_teacher.mean == pytest.approx((14.5 / 2.0 + 14.5 / 2.0) / 2)
    assert (group.cost["distilled"].seconds.mean, group.cost["distilled"].seconds_with_teacher.mean) == (4.0, 14.5)
    from kd.config import RunConfig
    from kd.study.tables import render_methods

    assert "| 2.00 (4 s) | 7.25 (14 s) |" in "\n".join(render_methods([group], RunConfig(), always=True))
    write_record_file(tmp_path, record)
    again = read_record(tmp_path)
    assert json.dumps(to_data(again)) == json.dumps(to_data(record))  # as text: a one-value spread is NaN, != itself
    assert again.cells == record.cells and again.groups[0].comparisons["distilled"]["baseline"].adjusted.n == 2
    assert [c.state for c in read_record(tmp_path).cells] == ["finished", "finished", "planned"]


def test_an_older_or_malformed_study_record_names_the_file_and_field(tmp_path):
    finished_cell(tmp_path, 1, {"teacher": 0.9, "baseline": 0.8, "distilled": 0.82})
    path = tmp_path / "cells" / "labels100-seed1.json"
    raw = json.loads(path.read_text())
    raw["scores"]["baseline"]["accuracy"] = "high"
    path.write_text(json.dumps(raw))
    grid = [Cell(100, 1, "", ())]
    with pytest.raises(KdError, match=r"labels100-seed1.json: scores.baseline.accuracy='high': expected a number; "
                                      r"delete it, and `kd study` writes it again"):
        finished_entries(tmp_path, grid)
    (tmp_path / "study.json").write_text(json.dumps({"study": "mine", "cells": []}))  # before study.json had a version
    with pytest.raises(KdError, match=r"study.json: version=None: expected 1, .*delete study.json and `kd study NAME "
                                      r"--run-dir .* --report` rebuilds it"):
        read_record(tmp_path)
