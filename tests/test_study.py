"""kd study: the grid, skipping and resuming finished cells, shared teachers, and the aggregates against what
the cells' own test logits say."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
def test_finished_cells_are_taken_as_recorded_without_building_their_runs(smoke_study, monkeypatch):
    """Planning a finished study builds no cell's run (no data, teacher or student loaded); a changed setting
    plans every cell in full again, and none of them counts as finished."""
    import kd.run
    from cli.main import SECTIONS
    from kd.study import load_study, with_settings
    from kd.study.run import plan

    root, _, _ = smoke_study
    study, data = load_study("study-smoke"), None  # as `make study` ran it: no --data

    def built(*args, **kwargs):
        raise AssertionError("a finished cell's run was built")

    with monkeypatch.context() as m:
        m.setattr(kd.run, "RunContext", built)
        jobs = plan(study, root, data, SECTIONS)
    assert [j.finished for j in jobs] == [True] * 4 and all(j.context is None for j in jobs)
    changed = plan(with_settings(study, ["student.train.learning_rate=0.002"]), root, data, SECTIONS)
    assert not any(j.finished for j in changed) and all(j.context is not None for j in changed)


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
    # kept as its records (no weights), a study keeps the other rows' scores that the pass above gave its cells
    from study_records import copy_records

    kept = tmp_path / "kept"
    copy_records(root, kept)
    (kept / "other_rows.md").unlink()
    assert main([str(kept)]) == 0
    again = json.loads((kept / "other_rows.json").read_text())
    assert again["cells"] == other["cells"] and again["groups"] == other["groups"]
    assert (kept / "other_rows.md").read_text() == (root / "other_rows.md").read_text()
    # a later pass scores a cell once: it keeps a planted score of a cell it scored before, and scores again a cell
    # whose record is not the one it scored (here: other seconds, as a cell trained again would have)
    planted = json.loads((root / "other_rows.json").read_text())
    first, second = planted["cells"][0], planted["cells"][1]
    model = next(iter(first["scores"]))
    first["scores"][model]["accuracy"] = 0.125
    second["seconds"] += 1.0
    second["scores"][model]["accuracy"] = 0.25
    (root / "other_rows.json").write_text(json.dumps(planted))
    assert main([str(root)]) == 0
    later = json.loads((root / "other_rows.json").read_text())["cells"]
    assert later[0]["scores"][model]["accuracy"] == 0.125
    assert later[1] == other["cells"][1]


@pytest.mark.slow
def test_a_study_kept_as_its_records_plans_reports_and_resumes_without_its_weights(smoke_study, kd_here, tmp_path):
    """scripts/study_records.py: the records alone (no weights, caches or work folders, a few hundred kB) are the
    finished study: every cell taken as recorded, the same report, nothing to run; and a bad folder is one line."""
    from cli.main import SECTIONS
    from kd.study.run import plan

    sys.path.insert(0, str(REPO / "scripts"))
    from study_records import copy_records

    root, kept = smoke_study[0], tmp_path / "kept"
    copied = copy_records(root, kept)
    assert Path("study.json") in copied and Path("cells/labels100-seed1.json") in copied
    for name in ("manifest.json", "results.json", "models/teacher/metrics.json"):
        assert (kept / "cells/labels100-seed1" / name).is_file(), name
    files = [p for p in kept.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".md", ".png"}
    assert sorted(p.name for p in files if p.suffix == ".png") == ["study.png", "study_calibration.png"]
    assert not any({"cache", "work"} & set(p.relative_to(kept).parts) for p in files)
    assert [p.name for p in files if "models" in p.parts and p.name != "metrics.json"] == []
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert [j.finished for j in plan(load_study("study-smoke"), kept, None, SECTIONS)] == [True] * 4
    (kept / "study.md").unlink()
    proc = kd_here("study", "study-smoke", "--run-dir", kept)  # the resume: nothing left to run, the report again
    assert proc.returncode == 0 and "4 of 4 cells already finished" in proc.stdout
    assert (kept / "study.md").read_text() == (root / "study.md").read_text()
    with pytest.raises(SystemExit, match="none: no study.json"):
        copy_records(tmp_path / "none", tmp_path / "dest")
    with pytest.raises(SystemExit, match="inside the study folder"):
        copy_records(kept, kept / "copy")
    assert not (tmp_path / "dest").exists() and not (kept / "copy").exists()


def test_a_study_without_finished_cells_has_no_report(kd_here, tmp_path):
    proc = kd_here("study", "study-smoke", "--run-dir", tmp_path / "empty", "--report")
    assert proc.returncode == 2 and "no study.json with cells" in proc.stderr
    with pytest.raises(KdError):
        load_study(str(tmp_path / "missing.yaml"))


# ---- the study across processes: Ray tasks on a real local Ray cluster, and shards ----------------------------

def part_of_study_smoke(tmp_path, budget) -> Path:
    """study-smoke at one of its budgets: the same cells as the sequential study's at that budget, half of them."""
    text = (REPO / "kd/studies/study-smoke.yaml").read_text()
    path = tmp_path / f"study-smoke-{budget}.yaml"
    path.write_text(text.replace("budgets: [100, all]", f"budgets: [{budget}]", 1))
    assert load_study(str(path)).budgets == [budget]
    return path


def same_cells(root, reference):
    """Every cell's test logits bit-identical to the same cell's in the reference study, and study.json's scores
    equal."""
    ours = {c["name"]: c for c in json.loads((root / "study.json").read_text())["cells"]}
    theirs = {c["name"]: c for c in json.loads((reference / "study.json").read_text())["cells"]}
    assert len(ours) == 2 and set(ours) < set(theirs) and all(c["state"] == "finished" for c in ours.values())
    for name in ours:
        cell = theirs[name]
        assert ours[name]["scores"] == cell["scores"], name
        assert ours[name]["tests"] == cell["tests"], name
        logits = sorted((reference / "cells" / name).glob("models/*/test_logits.npy"))
        assert len(logits) == 4  # the teacher and the three methods' students
        for path in logits:
            mine = np.load(root / path.relative_to(reference))
            assert np.array_equal(mine, np.load(path)), (name, path.parent.name)


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster on this machine: a head and a second node (`ray start`), one CPU each, so that two cells
    run at once in two worker processes, with Ray's token authentication (its default for `ray start`) on a
    token of its own. Returns (address, the environment that reaches it); stopped with its processes after."""
    import secrets
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    env = {**ENV, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_DEDUP_LOGS": "0"}
    # Ray's sockets live under its temp folder, whose path must stay short (a Unix socket path is <= 107 bytes)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray = str(REPO / ".venv/bin/ray") if (REPO / ".venv/bin/ray").exists() else "ray"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory",
              str(100 * 2**20), "--disable-usage-stats", "--block"]
    start = [[ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp],
             [ray, "start", "--address", address]]
    nodes = []
    try:
        for i, cmd in enumerate(start):
            nodes.append(subprocess.Popen([*cmd, *common], env=env, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            # the head answers, then the second node has joined it: two alive nodes
            wait = ("import ray, sys, time\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                    "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]): time.sleep(0.5)")
            if i == 0:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=2).close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline and nodes[0].poll() is None, "the Ray head did not start"
                        time.sleep(1)
            subprocess.run([sys.executable, "-c", wait, address, str(i + 1)], env=env, check=True, timeout=180,
                           capture_output=True)
        yield address, env
    finally:
        for node in reversed(nodes):  # `ray start --block` stops its node's processes on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=10)  # a graceful stop takes half a minute; the rest is killed
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def study_on_ray(study, root, cluster):
    address, env = cluster
    return subprocess.Popen([sys.executable, "-m", "cli", "study", str(study), "--run-dir", str(root),
                             "--executor", "ray", "--address", address], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_study_smoke_on_a_ray_cluster_with_a_worker_killed_gives_the_sequential_runs_bits(smoke_study, ray_cluster,
                                                                                          tmp_path):
    """The study's full budget (two seeds sharing one teacher) as Ray tasks on two nodes; the worker running the
    first cell is killed with SIGKILL in its training, Ray runs the task again elsewhere and the cell resumes. Both
    cells end with the sequential study's bits; a second run finds them finished and writes nothing."""
    study, root = part_of_study_smoke(tmp_path, "all"), tmp_path / "study-smoke"
    proc = study_on_ray(study, root, ray_cluster)
    lines, killed = [], None
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"cell 1 of 2 \(labelsall-seed1\) \[pid (\d+)\]", line)
        if m:
            killed = int(m[1])
            time.sleep(4)  # into the cell's training
            os.kill(killed, signal.SIGKILL)
            break
    assert killed, "".join(lines)[-3000:]
    out = "".join(lines) + proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-4000:]
    assert "2 cells as tasks on 2 node(s)" in out
    # the workers' lines in order of first sight: two nodes on one machine share Ray's log folder, and each
    # node's log monitor forwards every line, so each comes twice
    pids = list(dict.fromkeys(int(p) for p in re.findall(r"cell 1 of 2 \(labelsall-seed1\) \[pid (\d+)\]", out)))
    assert pids[0] == killed and len(pids) == 2 and pids[1] != killed  # Ray ran the task again, elsewhere
    same_cells(root, smoke_study[0])
    # the second seed at the full budget waited for the first's teacher instead of training its own
    weights = [(root / "cells" / f"labelsall-seed{s}/models/teacher/model.safetensors").stat() for s in (1, 2)]
    assert weights[0].st_ino == weights[1].st_ino
    # run again: every cell finished, none is redone, and nothing of theirs is written again
    before = {c.name: tree_state(c) for c in (root / "cells").iterdir() if c.is_dir()}
    again = study_on_ray(study, root, ray_cluster)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "2 of 2 cells already finished" in out and "[pid" not in out, out[-3000:]
    assert {c.name: tree_state(c) for c in (root / "cells").iterdir() if c.is_dir()} == before


@pytest.mark.slow
def test_two_shards_then_report_give_the_sequential_study(smoke_study, tmp_path):
    """The 100-label budget's two cells (a teacher each) in two shards at once, then the report: the sequential
    study's cells and aggregates. (Which cells a shard takes, cells sharing a teacher kept together, is the
    test below.)"""
    study, root = part_of_study_smoke(tmp_path, 100), tmp_path / "study-smoke"
    shards = [subprocess.Popen([sys.executable, "-m", "cli", "study", str(study), "--run-dir", str(root),
                                "--shard", f"{i}/2"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=900)[0] for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "(shard 1 of 2: 1 of 2 cells)" in outs[0] and "(shard 2 of 2: 1 of 2 cells)" in outs[1]
    report = subprocess.run([sys.executable, "-m", "cli", "study", str(study), "--run-dir", str(root), "--report"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    same_cells(root, smoke_study[0])
    ours, theirs = (json.loads((r / "study.json").read_text()) for r in (root, smoke_study[0]))
    (group,) = ours["groups"]
    (same,) = [g for g in theirs["groups"] if g["budget"] == 100]
    assert {k: v for k, v in group.items() if k != "cost"} == {k: v for k, v in same.items() if k != "cost"}


def test_shards_split_the_grid_and_keep_the_cells_that_share_a_teacher_together():
    from kd.study import Cell
    from kd.study.cell import CellJob
    from kd.study.run import shard

    # study-cpu's shape: budgets 100 and 500 (a teacher per seed) and the full budget (one teacher for all seeds)
    jobs = [CellJob("s", Cell(b, s, "", ()), None, Path("/"), "labelsall-seed1" if b is None and s > 1 else None,
                    None, i, 9, False) for i, (b, s) in enumerate(((b, s) for b in (100, 500, None)
                                                                    for s in (1, 2, 3)), 1)]
    for n in (1, 2, 3, 7, 12):
        parts = [shard(jobs, (i, n)) for i in range(1, n + 1)]
        names = [j.cell.name for part in parts for j in part]
        assert sorted(names) == sorted(j.cell.name for j in jobs)  # each cell in exactly one shard
        full = [i for i, part in enumerate(parts) for j in part if j.cell.budget is None]
        assert len(set(full)) == 1  # the full budget's three cells, and their one teacher, in one shard
    assert [len(shard(jobs, (i, 7))) for i in range(1, 8)] == [1, 1, 1, 1, 1, 1, 3]


def test_teachers_a_procedure_made_are_compared_with_the_fine_tuned_teacher_paired_by_seed():
    """An ensemble (and its members) in the cells' scores: the ensemble against the fine-tuned teacher, paired by
    seed (its members are no comparison of their own), and the report's Teachers table with the members' mean."""
    from kd.study.aggregate import aggregate
    from kd.study.schema import CellRecord, Scores
    from kd.study.tables import render_teachers

    rng = np.random.default_rng(0)
    cells, acc = [], {m: [] for m in ("teacher", "teacher-member2", "teacher-ensemble", "baseline", "distilled")}
    for seed in range(1, 6):
        scores = {}
        for m in acc:
            acc[m].append(float(0.8 + 0.05 * rng.random()))
            scores[m] = Scores(accuracy=acc[m][-1], f1_macro=acc[m][-1], nll=0.5, ece=0.05 + 0.01 * seed, brier=0.2)
        cells.append(CellRecord(name=f"labels100-seed{seed}", budget=100, seed=seed, depth=None, run_dir="x",
                                overrides=[], state="finished", labelled_rows=100, scores=scores))
    (group,) = aggregate(cells)
    assert set(group.comparisons["teacher-ensemble"]) == {"teacher"}
    assert "teacher-member2" not in group.comparisons and "teacher" not in group.comparisons
    diff = group.comparisons["teacher-ensemble"]["teacher"].differences["accuracy"]
    assert diff.difference.mean == pytest.approx(np.mean(np.subtract(acc["teacher-ensemble"], acc["teacher"])))
    assert diff.p_value == pytest.approx(stats.ttest_rel(acc["teacher-ensemble"], acc["teacher"]).pvalue)
    assert group.students == ["baseline", "distilled"]
    text = "\n".join(render_teachers([group]))
    assert "## Teachers" in text and "| teacher-ensemble |" in text and "| teacher-member2 |" in text
    members_mean = 100 * np.mean([np.mean(acc["teacher"]), np.mean(acc["teacher-member2"])])
    assert f"| members' mean (2) | {members_mean:.2f} |" in text


def test_study_set_adds_run_settings_and_methods_but_not_the_grids_own_keys():
    """`kd study NAME --set`: a run setting reaches every cell, `methods` replaces the study's methods (which its
    cells set after `set`, so a plain setting would be overridden), and a key the grid sets per cell is refused."""
    from kd.errors import KdError
    from kd.study import cells, load_study, with_settings

    study = with_settings(load_study("study-smoke"), ["student.train.learning_rate=0.001", "methods=[kd]"])
    for cell in cells(study):
        assert "student.train.learning_rate=0.001" in cell.overrides and 'methods=["kd"]' in cell.overrides
    assert study.methods == ["kd"] and load_study("study-smoke").methods != ["kd"]
    with pytest.raises(KdError, match=r"--set data.labelled_rows: set by the study's grid \(budgets\)"):
        with_settings(study, ["data.labelled_rows=50"])
    with pytest.raises(KdError, match="expected key=value"):
        with_settings(study, ["student.train.learning_rate"])
