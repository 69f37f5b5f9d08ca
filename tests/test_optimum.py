"""`make optimum-check`: the comparison logic of scripts/optimum_check.py (run here in kd's environment, with
stand-in runners instead of optimum), kd's reference writer, and (slow) the whole verb on the smoke export."""

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from conftest import ENV, REPO

from export.optimum_reference import ModelReference, Reference
from export.optimum_reference import main as reference_main

spec = importlib.util.spec_from_file_location("optimum_check", REPO / "scripts" / "optimum_check.py")
oc = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = oc  # dataclasses look their module up there
spec.loader.exec_module(oc)  # no optimum needed: it is imported inside the runners only

MODELS = ("teacher", "distilled")
ROWS, LABELS, MAX_LENGTH = 10, 4, 8


class FakeTokenizer:
    """Row i of the texts ("text 3") -> [CLS] 1000+i [SEP]; `shift` tokenizes otherwise than kd did."""

    model_max_length = MAX_LENGTH

    def __init__(self, shift: int = 0):
        self.shift = shift

    def __call__(self, texts, truncation=True, max_length=None):
        return {"input_ids": [[101, 1000 + int(t.split()[1]) + self.shift, 102] for t in texts]}


def fake_reference(tmp_path) -> tuple:
    """A reference folder as export.optimum_reference writes it (its own dataclasses), with random logits."""
    rng = np.random.default_rng(0)
    ref_dir = tmp_path / "onnx" / "optimum-check"
    ref_dir.mkdir(parents=True)
    texts = [f"text {i}" for i in range(ROWS)]
    arrays = {"texts": np.asarray(texts), "labels": np.zeros(ROWS, dtype=np.int64)}
    ids = np.full((ROWS, MAX_LENGTH), -1, dtype=np.int32)
    ids[:, :3] = [[101, 1000 + i, 102] for i in range(ROWS)]
    models = {}
    for name in MODELS:
        (tmp_path / "onnx" / name).mkdir()
        models[name] = ModelReference(f"../{name}", {"fp32": "model.onnx", "int8": "model_int8.onnx"},
                                      f"{name}/order", f"{name}/input_ids",
                                      {"fp32": f"{name}/fp32", "int8": f"{name}/int8"})
        arrays[f"{name}/order"] = rng.permutation(ROWS)
        arrays[f"{name}/input_ids"] = ids
        for precision in ("fp32", "int8"):
            arrays[f"{name}/{precision}"] = rng.normal(size=(ROWS, LABELS)).astype(np.float32)
    np.savez(ref_dir / "reference.npz", **arrays)
    meta = Reference(str(tmp_path), ROWS, MAX_LENGTH, 4, "reference.npz", models)
    (ref_dir / "reference.json").write_text(json.dumps(asdict(meta)))
    return ref_dir, arrays


def replaying(arrays, tamper=None, seen=None):
    """A runner that gives kd's logits back (through `tamper(model, file_name, logits)` if given)."""
    def run(folder, file_name, tokenizer, texts, batches, max_length):
        precision = "int8" if "int8" in file_name else "fp32"
        if seen is not None:
            seen.append((folder.name, file_name, [list(b) for b in batches], max_length))
        logits = arrays[f"{folder.name}/{precision}"].copy()
        return tamper(folder.name, file_name, logits) if tamper else logits
    return run


def test_compare_counts_differing_argmax_and_the_largest_logit_gap():
    ref = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]], dtype=np.float32)
    same = oc.compare("m", "fp32", "ORTModel", "f", ref, ref + 1e-3)
    assert same.ok and same.differing == 0 and same.first_differing_row is None
    assert same.max_abs_diff == pytest.approx(1e-3, rel=1e-3) and oc.failure_of(same) is None
    flipped = ref.copy()
    flipped[2] = [0.0, 1.0]
    c = oc.compare("m", "int8", "pipeline", "runs/x/onnx/m", ref, flipped)
    assert (c.differing, c.first_differing_row, c.rows) == (1, 2, 3) and c.max_abs_diff == pytest.approx(1.0)
    line = oc.failure_of(c).line()
    assert line.startswith("optimum-check: FAILED runs/x/onnx/m: int8 via pipeline: 1 of 3 predictions differ")
    with pytest.raises(ValueError, match="shape"):
        oc.compare("m", "fp32", "ORTModel", "f", ref, ref[:2])


def test_identical_predictions_pass_in_kds_batches_and_write_the_result(tmp_path, capsys):
    ref_dir, arrays = fake_reference(tmp_path)
    seen = []
    code = oc.main([str(ref_dir)], {"ORTModel": replaying(arrays, seen=seen), "pipeline": replaying(arrays)},
                   lambda folder: FakeTokenizer())
    out = capsys.readouterr().out
    assert code == 0 and "every export loads in optimum" in out
    result = json.loads((ref_dir / "result.json").read_text())
    assert result["ok"] and not result["failures"] and len(result["comparisons"]) == 8
    # each runner is handed kd's batches (the saved order, cut at the saved batch size) and the tokenizer's max
    name, _, batches, max_length = seen[0]
    assert batches == [list(arrays[f"{name}/order"][s:s + 4]) for s in (0, 4, 8)] and max_length == MAX_LENGTH
    table = (ref_dir / "result.md").read_text().split("\n\n")[0].splitlines()
    assert len(table) == 2 + 4 and len({row.count("|") for row in table}) == 1, "one column count on every row"


def test_one_differing_prediction_fails_with_one_line_naming_the_folder(tmp_path, capsys):
    ref_dir, arrays = fake_reference(tmp_path)

    def flip_row_3(model, file_name, logits):
        if model == "distilled" and file_name == "model_int8.onnx":
            logits[3] = -logits[3]  # the argmax moves (4 random logits: the max becomes the min)
        return logits

    code = oc.main([str(ref_dir)], {"ORTModel": replaying(arrays), "pipeline": replaying(arrays, flip_row_3)},
                   lambda folder: FakeTokenizer())
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert code == 1 and len(failed) == 1
    assert failed[0].startswith("optimum-check: FAILED ")
    assert "onnx/distilled: int8 via pipeline: 1 of 10 predictions differ" in failed[0]
    assert "first: test row 3" in failed[0]
    assert not json.loads((ref_dir / "result.json").read_text())["ok"]


def test_a_folder_that_does_not_load_or_tokenizes_otherwise_fails_and_the_others_are_still_checked(tmp_path, capsys):
    ref_dir, arrays = fake_reference(tmp_path)

    def broken(folder, file_name, *args):
        if folder.name == "teacher" and file_name == "model_int8.onnx":
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed\nmore detail")
        return replaying(arrays)(folder, file_name, *args)

    code = oc.main([str(ref_dir)], {"ORTModel": broken},
                   lambda folder: FakeTokenizer(shift=1 if folder.name == "distilled" else 0))
    failed = [line for line in capsys.readouterr().err.splitlines() if "FAILED" in line]
    assert code == 1 and len(failed) == 2
    assert failed[0].endswith("onnx/teacher: int8 via ORTModel: model_int8.onnx does not load or run: "
                              "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : Load model failed")
    assert "onnx/distilled: tokenizer: 10 of 10 rows tokenize otherwise than in kd (first: test row 0" in failed[1]
    result = json.loads((ref_dir / "result.json").read_text())
    assert len(result["comparisons"]) == 3, "teacher fp32 and distilled fp32/int8 still ran"


def test_a_missing_folder_or_reference_is_one_clear_line(tmp_path, capsys):
    ref_dir, arrays = fake_reference(tmp_path)
    (tmp_path / "onnx" / "teacher").rmdir()
    assert oc.main([str(ref_dir)], {"ORTModel": replaying(arrays)}, lambda folder: FakeTokenizer()) == 1
    assert "onnx/teacher: folder: no such folder" in capsys.readouterr().err
    assert oc.main([str(tmp_path / "nowhere")]) == 2
    assert "FAILED " + str(tmp_path / "nowhere") + ": no reference.json" in capsys.readouterr().err


def test_the_reference_writer_needs_exports(tmp_path, capsys):
    assert reference_main(["--run-dir", str(tmp_path)]) == 2  # a KdError: exit 2, as kd exits
    err = capsys.readouterr().err
    assert err.strip() == f"kd: error: {tmp_path / 'onnx'}: no exported models; run `make export` first"


@pytest.mark.slow
def test_make_optimum_check_on_the_smoke_export(smoke_export, tmp_path):
    """The whole verb on a copy of the session's smoke export (it builds .venv/optimum/ when missing or stale)."""
    run = tmp_path / "smoke"
    shutil.copytree(smoke_export, run)
    proc = subprocess.run(["make", "optimum-check", f"RUN={run}"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # (under `make test-all` the inner make also prints its Entering/Leaving directory lines)
    assert ("predicts what kd's ONNX Runtime run predicts (1000 test rows, 12 model x precision x way)"
            in proc.stdout.splitlines()[-2 if "Leaving directory" in proc.stdout else -1])
    reference = json.loads((run / "onnx/optimum-check/reference.json").read_text())
    assert set(reference["models"]) == {"teacher", "baseline", "distilled"} and reference["batch_size"] == 32
    arrays = np.load(run / "onnx/optimum-check/reference.npz")
    assert arrays["distilled/int8"].shape == (reference["rows"], 4)
    assert sorted(arrays["teacher/order"]) == list(range(reference["rows"]))
    result = json.loads((run / "onnx/optimum-check/result.json").read_text())
    assert result["ok"] and len(result["comparisons"]) == 12  # 3 models x fp32/int8 x ORTModel/pipeline
    assert all(c["differing"] == 0 for c in result["comparisons"])
    assert result["versions"]["optimum-onnx"] == "0.1.0" and result["versions"]["transformers"].startswith("4.")
