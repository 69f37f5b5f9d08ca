"""kd study: the grid, skipping and resuming finished cells, shared teachers, and the aggregates against what
the cells' own test logits say."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import ENV, REPO, tree_state
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cli.main import SECTIONS
from kd.errors import KdError
from kd.study import ALL, cell_config, cells, load_study


def test_the_grid_runs_each_budget_and_seed_with_its_own_labelled_rows():
    study = load_study("study-cpu")
    grid = cells(study)
    assert len(grid) == len(study.seeds) * len(study.budgets) * max(1, len(study.depths))
    assert len({c.name for c in grid}) == len(grid)
    # smallest budget first, every seed of a budget together, the full budget last
    assert [c.budget for c in grid] == sorted((c.budget for c in grid), key=lambda b: b or float("inf"))
    for cell in grid:
        cfg = cell_config(study, cell, None, SECTIONS)
        assert cfg.student.train.seed == cell.seed
        assert cfg.student.init == cell.depth
        # the full budget labels every student row, so that its teacher too trains on the students' rows only
        assert cfg.data.labelled_rows == (cell.budget or study.set["student.train_rows"])
        # the seed picks the labelled rows; the full budget has none to pick, so its teacher is the same for
        # every seed (the same config sections) and is trained once
        assert cfg.data.labelled_seed == (cell.seed if cell.budget else None)
        assert cfg.student.train.select == cfg.teacher.train.select == "last"  # no validation label chooses
        assert cfg.student.train_rows == study.set["student.train_rows"]
    full = [cell_config(study, c, None, SECTIONS) for c in grid if c.budget is None]
    assert len({f.section_hash("data", "teacher") for f in full}) == 1
    small = [cell_config(study, c, None, SECTIONS) for c in grid if c.budget == min(b for b in study.budgets
                                                                                   if b != ALL)]
    assert len({f.section_hash("data", "teacher") for f in small}) == len(study.seeds)


def test_the_full_study_is_gpu_sized_and_never_uses_the_teacher_that_saw_every_label():
    study = load_study("study-full")
    grid = cells(study)
    assert len(study.seeds) == 5 and len(grid) == 15
    cfg = cell_config(study, grid[0], None, SECTIONS)
    assert cfg.teacher.finetune == "always" and cfg.teacher.model == "bert-base-uncased"
    assert cfg.data.labelled_rows == 1200  # 1 % of AG News's 120,000 train rows


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """`make study STUDY=study-smoke`, killed with SIGKILL as its second cell starts, then the same command
    again; returns the study folder, the second command's output, and the first cell as the kill left it."""
    root = tmp_path_factory.mktemp("study") / "study-smoke"
    cmd = ["make", "study", "STUDY=study-smoke", f"RUN={root}"]
    first = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 600
    for line in first.stdout:
        assert time.monotonic() < deadline
        if "cell 2 of 4" in line:
            break
    else:
        pytest.fail("the study ended before it could be killed")
    time.sleep(3)  # into the second cell's teacher
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    first_cell = tree_state(root / "cells" / "labels100-seed1")
    record = json.loads((root / "study.json").read_text())
    assert [c["state"] for c in record["cells"]] == ["finished", "planned", "planned", "planned"]
    again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return root, again.stdout, first_cell


@pytest.mark.slow
def test_a_killed_study_resumes_without_redoing_finished_cells(smoke_study):
    root, out, first_cell = smoke_study
    assert "cell 1 of 4 (labels100-seed1) already finished, skipped" in out
    assert tree_state(root / "cells" / "labels100-seed1") == first_cell  # not a byte written again
    record = json.loads((root / "study.json").read_text())
    assert [c["state"] for c in record["cells"]] == ["finished"] * 4
    for name in ("study.md", "study.png", "study_calibration.png"):
        assert (root / name).stat().st_size > 1000, name
    assert (root / "study.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_every_seed_at_the_full_budget_shares_one_teacher_and_its_logits(smoke_study):
    root, out, _ = smoke_study
    one, two = (root / "cells" / f"labelsall-seed{s}" for s in (1, 2))
    assert "teacher and its logits taken from cell labelsall-seed1" in out
    weights = [(c / "models/teacher/model.safetensors").stat() for c in (one, two)]
    assert weights[0].st_ino == weights[1].st_ino  # a hard link, not a second training
    record = {c["name"]: c for c in json.loads((root / "study.json").read_text())["cells"]}
    assert record["labelsall-seed2"]["teacher_from"] == "labelsall-seed1"
    # at a budget the seeds choose other labelled rows, so each trains its own teacher
    a, b = ((root / "cells" / f"labels100-seed{s}" / "models/teacher/metrics.json") for s in (1, 2))
    assert json.loads(a.read_text())["weights_sha256"] != json.loads(b.read_text())["weights_sha256"]


@pytest.mark.slow
def test_the_aggregates_are_what_the_cells_test_logits_say(smoke_study):
    """Means, t-intervals and paired differences recomputed here from every cell's saved test logits."""
    root, _, _ = smoke_study
    record = json.loads((root / "study.json").read_text())
    for group in record["groups"]:
        names = [f"labels{group['budget']}-seed{s}" for s in group["seeds"]]
        acc = {m: [] for m in ("baseline", "distilled")}
        for name in names:
            cell = root / "cells" / name
            labels = np.load(cell / "test_labels.npy")
            for m in acc:
                acc[m].append(float(np.mean(np.load(cell / "models" / m / "test_logits.npy").argmax(-1) == labels)))
        for m, values in acc.items():
            interval = group["means"][m]["accuracy"]
            assert interval["mean"] == pytest.approx(np.mean(values))
            if np.std(values) > 0:
                low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
                assert (interval["low"], interval["high"]) == pytest.approx((low, high))
        diff = np.subtract(acc["distilled"], acc["baseline"])
        assert group["differences"]["accuracy"]["difference"]["mean"] == pytest.approx(diff.mean())
        if np.std(diff) > 0:
            assert group["differences"]["accuracy"]["p_value"] == pytest.approx(
                stats.ttest_rel(acc["distilled"], acc["baseline"]).pvalue)
        # the method axis: each method against the baseline (Holm over the methods) and against kd
        pseudo = []
        for name in names:
            cell = root / "cells" / name
            labels = np.load(cell / "test_labels.npy")
            pseudo.append(float(np.mean(np.load(cell / "models/pseudo-label/test_logits.npy").argmax(-1) == labels)))
        comp = group["comparisons"]
        assert set(comp) == {"distilled", "pseudo-label"} and set(comp["pseudo-label"]) == {"baseline", "distilled"}
        assert comp["pseudo-label"]["distilled"]["differences"]["accuracy"]["difference"]["mean"] == \
            pytest.approx(np.mean(np.subtract(pseudo, acc["distilled"])))
        if np.std(diff) > 0 and np.std(np.subtract(pseudo, acc["baseline"])) > 0:
            raw = [stats.ttest_rel(acc["distilled"], acc["baseline"]).pvalue,
                   stats.ttest_rel(pseudo, acc["baseline"]).pvalue]
            holm = multipletests(raw, method="holm")[1]
            assert [comp[m]["baseline"]["p_holm"] for m in ("distilled", "pseudo-label")] == pytest.approx(list(holm))
            # the simultaneous interval of 2 comparisons is the 97.5 % one, wider than the plain 95 %
            wide, plain = comp["pseudo-label"]["baseline"]["adjusted"], \
                comp["pseudo-label"]["baseline"]["differences"]["accuracy"]["difference"]
            assert wide["confidence"] == pytest.approx(0.975)
            assert wide["low"] < plain["low"] < plain["high"] < wide["high"]
        assert set(group["cost"]) == {"baseline", "distilled", "pseudo-label"}
        assert group["cost"]["baseline"]["alone"]["mean"] == pytest.approx(1.0)
    text = (root / "study.md").read_text()
    assert "## In words" in text and text.count("labelled rows (") == len(record["groups"])
    assert "## Methods" in text and "### The best method per budget" in text


@pytest.mark.slow
def test_other_rows_scores_every_cell_on_the_test_rows_the_study_did_not_use(smoke_study, tmp_path):
    """scripts/study_other_rows.py: the complement of the study's test share, aggregated as the study is."""
    import shutil
    import sys

    root = tmp_path / "study"
    shutil.copytree(smoke_study[0], root, symlinks=True)
    sys.path.insert(0, str(REPO / "scripts"))
    from study_other_rows import main

    assert main([str(root)]) == 0
    other = json.loads((root / "other_rows.json").read_text())
    study = json.loads((root / "study.json").read_text())
    assert other["share"] == 500 and other["rows"] == 7600 - 500  # the smoke preset's whole test split is 7,600
    for cell, scored in zip(study["cells"], other["cells"]):
        assert scored["name"] == cell["name"] and set(scored["scores"]) == set(cell["scores"])
    assert len(other["groups"]) == len(study["groups"])
    assert "## Methods" in (root / "other_rows.md").read_text()


def test_a_study_without_finished_cells_has_no_report(kd_here, tmp_path):
    proc = kd_here("study", "study-smoke", "--run-dir", tmp_path / "empty", "--report")
    assert proc.returncode == 2 and "no study.json with cells" in proc.stderr
    with pytest.raises(KdError):
        load_study(str(tmp_path / "missing.yaml"))
