"""Export: stand-in BERT and DistilBERT models through the parity gates, planted broken exports, the run-level
`kd export` / `export-check` on the smoke run, and `kd predict` agreeing across backends."""

import json
import os
import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import sample_rows, tree_state
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

import export.exporter as exporter
from export.config import ExportConfig, Gates, export_config
from export.parity import ExportGateError
from export.records import REPORT, ExportReport, RunExportReport
from kd.errors import KdError
from kd.models import resolve_source
from kd.runfolder import sha256_file

TEXTS_LABELS = sample_rows("test", 24)  # 96 real AG News texts
TEXTS = [t for _, t in TEXTS_LABELS]
LABELS = np.array([int(label) for label, _ in TEXTS_LABELS])
CALIBRATION = [t for _, t in sample_rows("train", 4)]  # training rows for the static int8 variants
# stand-ins are untrained: their logits sit close together, so int8 may flip argmaxes; int8 gates are tested on
# the trained smoke models below
LOOSE_INT8 = Gates(int8_min_agreement=0.0, int8_max_accuracy_drop=1.0)


def stand_in(kind: str, folder):
    tok = AutoTokenizer.from_pretrained(resolve_source("bundled:all-MiniLM-L6-v2", "tok"))
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=128, num_labels=4))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                                     num_labels=4))
        tok.model_input_names = ["input_ids", "attention_mask"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def small_cfg(**kw) -> ExportConfig:
    """Two int8 variants, no OpenVINO IRs (one stand-in test writes them: NNCF takes seconds per model)."""
    return ExportConfig(int8_candidates=kw.pop("int8_candidates", ["qint8", "quint8"]), probe_rows=16,
                        gates=kw.pop("gates", LOOSE_INT8), openvino=kw.pop("openvino", False), **kw)


@pytest.mark.parametrize("kind,optimize", [("bert", "auto"), ("distilbert", "auto"), ("distilbert", "never")])
def test_stand_in_exports_pass_the_fp32_gate_and_load_in_plain_onnxruntime(kind, optimize, tmp_path):
    src = stand_in(kind, tmp_path / kind)
    out = tmp_path / "onnx" / kind
    with_openvino = kind == "distilbert" and optimize == "auto"  # static int8 and the IRs, on one stand-in
    cfg = small_cfg(optimize=optimize, openvino=with_openvino,
                    int8_candidates=["qint8", "qdq-static"] if with_openvino else ["qint8", "quint8"])
    report = exporter.export_model(kind, src, out, TEXTS, LABELS, cfg, max_length=128, log=lambda m: None,
                                   calibration_texts=CALIBRATION)
    if with_openvino:  # the IRs are gated like the ONNX graphs, each folder loads on its own
        assert report.openvino.fp32.max_abs_diff <= 1e-4
        static = report.int8_candidates["qdq-static"]
        assert static.accuracy is not None and static.validation_seconds > 0, "every variant runs the whole split"
        assert static.size_mb < 0.5 * report.fp32.size_mb, "its embeddings and projections are int8"
        for sub in ("openvino", "openvino_int8"):
            assert {p.name for p in (out / sub).iterdir()} >= {"model.xml", "model.bin", "config.json",
                                                                "tokenizer.json"}, sub
    else:
        assert report.openvino is None and not (out / "openvino").exists()
    if optimize == "never":  # nothing fused: the plain graph ships and is the one quantized
        assert report.fp32.graph == "plain" and report.int8.source == "plain"
        assert report.int8.agreement == report.int8_candidates[report.int8.variant].agreement
    assert report.fp32.max_abs_diff <= 1e-4 and report.fp32.agreement == 1.0
    assert {p["batch_size"] for p in report.fp32.probes} == {1, 8, 16}
    # the int8 gates read the validation split only: no probes run for the int8 files, ONNX or OpenVINO
    assert report.int8.probes == [] and report.int8.probe_agreement is None
    if with_openvino:
        assert report.openvino.int8.probes == [] and len(report.openvino.fp32.probes) == 6
    assert report.int8.variant in cfg.int8_candidates  # on a random stand-in any may win
    for record in report.int8_candidates.values():  # the validation pass's time is recorded, not compared
        assert record.validation_seconds > 0
    assert report.int8.size_mb < report.fp32.size_mb / 2.5, "int8 weights are a quarter of fp32's"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer.json", "export_report.json"} <= names
    assert not any(n.startswith("int8-") or n == "model_fused.onnx" for n in names), "candidates are cleaned up"
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = ["input_ids", "token_type_ids", "attention_mask"] if kind == "bert" else ["input_ids", "attention_mask"]
    assert [i.name for i in sess.get_inputs()] == expected
    # dynamic batch and sequence: a batch of 3 padded to 40 tokens runs
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(TEXTS[:3], padding="max_length", max_length=40, truncation=True, return_tensors="np")
    logits = sess.run(None, {n: enc[n].astype(np.int64) for n in expected})[0]
    assert logits.shape == (3, 4)


def test_an_export_report_is_read_back_whole_and_an_old_or_malformed_one_is_one_line(tmp_path):
    src = stand_in("distilbert", tmp_path / "m")
    out = tmp_path / "onnx"
    report = exporter.export_model("m", src, out, TEXTS, LABELS, small_cfg(int8_candidates=["qint8"]),
                                   max_length=128, log=lambda m: None, calibration_texts=CALIBRATION)
    assert ExportReport.read(out / REPORT) == report and report.version == ExportReport.VERSION
    assert exporter.is_current(out, report.key)
    data = json.loads((out / REPORT).read_text())
    data["int8"]["size_mb"] = "small"
    (out / REPORT).write_text(json.dumps(data))
    with pytest.raises(KdError, match=r"export_report.json: int8.size_mb='small': expected a number; "
                                      r"export the run again"):
        ExportReport.read(out / REPORT)
    del data["version"]  # an export made before the record had a schema: refused on reading, redone by export
    (out / REPORT).write_text(json.dumps(data))
    with pytest.raises(KdError, match=r"export_report.json: version=None: expected 1, the format this kd-bench writes"):
        ExportReport.read(out / REPORT)
    assert not exporter.is_current(out, report.key)


@pytest.mark.parametrize("plain, fused, graph", [
    (1.0, 0.97, "plain"),  # 3 % apart: noise, the default (the plain graph) stays
    (1.0, 0.80, "fused"),  # the fused graph clearly faster: it ships as fp32
])
def test_the_fused_graph_ships_only_when_clearly_faster_and_int8_comes_from_the_plain_graph(plain, fused, graph,
                                                                                           tmp_path, monkeypatch):
    import export.choose as choose

    monkeypatch.setattr(choose, "faster", lambda runners, batches: {"plain": plain, "fused": fused, "qint8": 1.0,
                                                                     "quint8": 1.0})
    src = stand_in("bert", tmp_path / "bert")
    report = exporter.export_model("bert", src, tmp_path / "onnx", TEXTS, LABELS, small_cfg(), max_length=128,
                                   log=lambda m: None, calibration_texts=CALIBRATION)
    assert report.fp32.graph == graph, report.graph_choice
    assert report.int8.source == "plain", report.int8_choice
    # the shipped int8 file is the chosen candidate, quantized from the plain graph: its own check ships with it
    int8 = onnx.load(str(tmp_path / "onnx" / "model_int8.onnx"))
    assert not {n.op_type for n in int8.graph.node} & {"QAttention", "Attention", "SkipLayerNormalization"}


def test_graphs_of_one_structure_are_timed_once_per_run(tmp_path, monkeypatch):
    """The two students share an architecture: the second takes the first's timings (and so the same choice);
    another architecture is timed afresh."""
    import export.choose as choose

    timed = []

    def faster(runners, batches):
        timed.append(sorted(runners))
        return {name: 1.0 if name == "plain" else 0.8 for name in runners}  # the fused graph clearly faster

    monkeypatch.setattr(choose, "faster", faster)
    timings: dict = {}
    reports = {}
    for name, kind in [("baseline", "distilbert"), ("distilled", "distilbert"), ("teacher", "bert")]:
        src = stand_in(kind, tmp_path / name)
        reports[name] = exporter.export_model(name, src, tmp_path / "onnx" / name, TEXTS, LABELS,
                                              small_cfg(int8_candidates=["qint8"]), max_length=128,
                                              log=lambda m: None, calibration_texts=CALIBRATION, timings=timings)
    assert timed == [["fused", "plain"], ["fused", "plain"]], "one timing per structure: baseline's, teacher's"
    assert "timed on baseline's graphs" in reports["distilled"].graph_choice
    assert "timed on" not in reports["baseline"].graph_choice + reports["teacher"].graph_choice
    assert {r.fp32.graph for r in reports.values()} == {"fused"}


@pytest.mark.parametrize("seconds, chosen", [
    ({"qint8": 1.0, "quint8": 0.97}, "qint8"),  # within the margin: the most accurate (listed first) stays
    ({"qint8": 1.0, "quint8": 0.90}, "quint8"),
    ({"qint8": 0.90, "quint8": 1.0}, "qint8"),
])
def test_equally_accurate_int8_variants_go_to_the_first_unless_another_is_clearly_faster(seconds, chosen):
    from export.choose import pick_int8

    records = {name: {"timed_seconds": s} for name, s in seconds.items()}
    assert pick_int8(["qint8", "quint8"], records, ExportConfig().speed_margin) == chosen


def planted_checks(right: dict[str, int], rows: int = 1600):
    """Int8Checks of variants that passed the gates, each right on its first `right[v]` of `rows` rows (all of label
    0): the more accurate variant is right wherever the less accurate one is, so every discordant row favours it."""
    from export.choose import Int8Checks
    from export.parity import Check

    preds = {v: np.where(np.arange(rows) < n, 0, 1) for v, n in right.items()}
    checks = {v: Check(0.0, 0.0, 1.0, None, n / rows, []) for v, n in right.items()}
    return Int8Checks({v: {} for v in right}, checks, preds, list(right)), np.zeros(rows, dtype=int)


@pytest.mark.parametrize("right, seconds, chosen, unequal", [
    # 3 rows apart: McNemar p = 0.25, equal; qint8, 30 rows behind (p ~ 2e-9), is left out although fastest
    ({"qint8-per-channel": 1500, "quint8-per-channel": 1497, "qint8": 1470},
     {"qint8-per-channel": 1.0, "quint8-per-channel": 0.8, "qint8": 0.5}, "quint8-per-channel", ["qint8"]),
    # equal, and the second not over 5 % faster: the first listed ships, though a hundredth less accurate
    ({"qint8-per-channel": 1497, "quint8-per-channel": 1500}, {"qint8-per-channel": 1.0, "quint8-per-channel": 0.97},
     "qint8-per-channel", []),
    # the fastest is clearly less accurate: the first ships
    ({"qint8-per-channel": 1500, "quint8-per-channel": 1480}, {"qint8-per-channel": 1.0, "quint8-per-channel": 0.5},
     "qint8-per-channel", ["quint8-per-channel"]),
])
def test_int8_ships_the_fastest_of_the_variants_equal_in_accuracy_on_the_validation_split(right, seconds, chosen,
                                                                                          unequal, monkeypatch,
                                                                                          tmp_path):
    from types import SimpleNamespace

    from export.choose import ChoiceContext, choose_int8

    checked, labels = planted_checks(right)
    timed = []

    def timings(self, graphs):
        timed.append(sorted(graphs))
        return {v: seconds[v] for v in graphs}, ""

    monkeypatch.setattr(ChoiceContext, "timed", timings)
    ctx = ChoiceContext(SimpleNamespace(labels=labels, texts=[""] * len(labels)), None, [],
                        ExportConfig(int8_candidates=list(right)), "m", lambda m: None, tmp_path, [], tmp_path, {})
    choice = choose_int8(ctx, checked)
    assert choice.chosen == chosen, choice.why
    same = sorted(set(right) - set(unequal))
    assert timed == ([same] if len(same) > 1 else []), "only variants equal in accuracy are timed, and only 2+"
    for variant in unequal:
        assert checked.records[variant]["mcnemar_vs_most_accurate"]["p_value"] < 0.05
        assert f"{variant} (p = " in choice.why
    best = max(right, key=right.get)
    assert all(r["mcnemar_vs_most_accurate"]["most_accurate"] == best for r in checked.records.values())
    if len(same) == 1:
        assert "the others measurably less so" in choice.why, "nothing was timed, and the reason says so"


def tampered(tamper):
    """export_onnx followed by a planted fault in the written graph."""
    real = exporter.export_onnx

    def export_then_tamper(model, tokenizer, texts, path, opset, kind):
        names = real(model, tokenizer, texts, path, opset, kind)
        graph = onnx.load(str(path))
        tamper(graph)
        onnx.save(graph, str(path))
        return names

    return export_then_tamper


def bump_largest_weight(graph):
    init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[::97] += 0.05
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))


def swap_input_names(graph):
    a, b = graph.graph.input[0], graph.graph.input[-1]  # input_ids <-> attention_mask
    for node in graph.graph.node:
        node.input[:] = [{a.name: b.name, b.name: a.name}.get(i, i) for i in node.input]
    a.name, b.name = b.name, a.name


def rename_input(graph):
    old = graph.graph.input[-1].name
    for node in graph.graph.node:
        node.input[:] = ["mask" if i == old else i for i in node.input]
    graph.graph.input[-1].name = "mask"


@pytest.mark.parametrize("tamper, message", [
    (bump_largest_weight, r"fp32 ONNX \(\w+\) does not match PyTorch: max \|Δlogits\|"),
    (swap_input_names, r"does not match PyTorch"),
    (rename_input, r"does not run on the tokenizer's inputs: the ONNX graph wants input 'mask'"),
])
def test_planted_broken_export_is_caught_and_leaves_the_old_export_alone(tamper, message, tmp_path, monkeypatch):
    src = stand_in("distilbert", tmp_path / "distilbert")
    out = tmp_path / "onnx" / "distilbert"
    exporter.export_model("distilbert", src, out, TEXTS, LABELS, small_cfg(), 128, log=lambda m: None,
                          calibration_texts=CALIBRATION)
    before = tree_state(out)
    monkeypatch.setattr(exporter, "export_onnx", tampered(tamper))
    with pytest.raises(ExportGateError, match=message):
        exporter.export_model("distilbert", src, out, TEXTS, LABELS, small_cfg(optimize="never"), 128,
                              log=lambda m: None, calibration_texts=CALIBRATION)
    assert tree_state(out) == before, "the good export is untouched"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no scratch folder left behind"


def test_int8_gate_failure_names_the_numbers_and_writes_nothing(tmp_path):
    src = stand_in("bert", tmp_path / "bert")
    out = tmp_path / "onnx" / "bert"
    impossible = Gates(int8_min_agreement=1.01)
    with pytest.raises(ExportGateError, match=r"no int8 variant passes the gates \(") as raised:
        exporter.export_model("bert", src, out, TEXTS, LABELS, small_cfg(gates=impossible), 128, log=lambda m: None,
                              calibration_texts=CALIBRATION)
    for candidate in ("qint8", "quint8"):  # each with its number
        assert re.search(rf"(\(|; ){candidate}: argmax agreement \d+\.\d\d% < 101\.00%", str(raised.value))
    assert not out.exists()
    failed = json.loads((out.parent / "bert.failed.json").read_text())
    assert "no int8 variant" in failed["error"] and set(failed["int8_candidates"]) == {"qint8", "quint8"}
    assert failed["graph_choice"] and "plain" in failed["fp32_candidates"], "the fp32 choice made before is kept"


@pytest.mark.slow
def test_kd_export_on_the_smoke_run(smoke_export, tmp_path, kd_here):
    """The session's export of the smoke run (which the bench tests bench too), then in a copy of it: re-export,
    forced re-export, export-check and predict."""
    summary = RunExportReport.read(smoke_export / "onnx/report.json")  # written from the record, read back whole
    assert summary.models == {m: ExportReport.read(smoke_export / "onnx" / m / REPORT) for m in summary.models}
    assert set(summary.models) == {"teacher", "baseline", "distilled"}
    gates = export_config(smoke_export).gates  # the smoke preset's own (a looser int8 agreement for tiny models)
    assert gates.int8_min_agreement == 0.98 and gates.int8_max_accuracy_drop == 0.005
    for name, r in summary.models.items():
        assert r.fp32.max_abs_diff <= 1e-4 and r.fp32.agreement == 1.0, name
        assert r.int8.agreement >= gates.int8_min_agreement and r.fp32.accuracy - r.int8.accuracy <= 0.005 + 1e-9, name
        assert set(r.int8_candidates) == {"qint8-per-channel", "quint8-per-channel"}
        assert r.validation_rows == 400
        ov = r.openvino
        assert ov.fp32.max_abs_diff <= 1e-4 and ov.fp32.agreement == 1.0, name
        assert ov.int8.agreement >= gates.int8_min_agreement and not ov.int8.failures, name
        assert ov.int8.calibration_rows == 300 and ov.int8.size_mb < 0.5 * ov.fp32.size_mb, name
        # every int8 variant that passed is kept for the per-CPU choice; model_int8.onnx is the export's own, one
        # file on disk with its variant
        passing = [c for c, rec in r.int8_candidates.items() if not rec.failures]
        folder = smoke_export / "onnx" / name
        if len(passing) > 1:
            assert set(r.int8_variants) == set(passing)
            assert {p.stem for p in (folder / "int8_variants").glob("*.onnx")} == set(passing)
            assert (folder / "model_int8.onnx").stat().st_ino == \
                (folder / "int8_variants" / f"{r.int8.variant}.onnx").stat().st_ino
        else:
            assert not (folder / "int8_variants").exists()
    report_md = (smoke_export / "onnx/report.md").read_text()
    assert "| distilled | ONNX | int8 |" in report_md and "| distilled | OpenVINO | int8 | NNCF" in report_md
    smoke_copy = tmp_path / "smoke"
    shutil.copytree(smoke_export, smoke_copy)
    again = kd_here("export", "--run-dir", smoke_copy, "--preset", "smoke")
    assert again.stdout.count("already exported with these weights and settings, skipped") == 3
    # the smoke preset makes no choice on speed (its `export` section): a forced re-export ships the same bytes
    shipped = {p: sha256_file(p) for p in sorted((smoke_copy / "onnx").glob("*/model*.onnx"))}
    assert len(shipped) == 6
    assert len(list((smoke_copy / "onnx").glob("*/openvino*/model.xml"))) == 6
    redone = kd_here("export", "--run-dir", smoke_copy, "--preset", "smoke", "--force")
    assert redone.returncode == 0, redone.stderr[-2000:]
    assert {p: sha256_file(p) for p in shipped} == shipped

    check = kd_here("export-check", "--run-dir", smoke_copy, "--preset", "smoke")
    assert check.returncode == 0, check.stderr[-2000:]
    rows = json.loads((smoke_copy / "onnx/test_check.json").read_text())
    for name, r in rows.items():
        assert r["fp32_identical"] and r["fp32"]["max_abs_diff"] <= 1e-4, name
        assert abs(r["int8_accuracy_drop_pt"]) <= 1.0, name
        assert r["openvino"]["fp32"]["differing_predictions"] == 0, name
        assert abs(r["openvino"]["int8"]["accuracy"] - r["pytorch_accuracy"]) <= 0.01, name
    assert "| distilled | OpenVINO int8 |" in (smoke_copy / "onnx/test_check.md").read_text()

    texts = smoke_copy / "texts.txt"
    texts.write_text("\n".join(TEXTS[:20]) + "\n\n")
    outputs = {}
    for target in ("models/distilled", "onnx/distilled", "onnx/distilled/model_int8.onnx", "onnx/distilled/openvino",
                   "onnx/distilled/openvino_int8/model.xml"):
        proc = kd_here("predict", "--model", smoke_copy / target, "--file", texts, "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[target] = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(outputs[target]) == 20, "the blank line is skipped"
    torch_rows, fp32_rows, int8_rows, ov_rows, ov_int8_rows = outputs.values()
    for rows in (fp32_rows, ov_rows):
        assert [r["label"] for r in torch_rows] == [r["label"] for r in rows]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(torch_rows, rows)) < 1e-4
    for rows in (int8_rows, ov_int8_rows):
        assert sum(a["label"] == b["label"] for a, b in zip(torch_rows, rows)) >= 19
    plain = kd_here("predict", "--model", smoke_copy / "onnx/distilled", TEXTS[0])
    label, prob, _ = plain.stdout.split("\t")
    assert label in {"World", "Sports", "Business", "Sci/Tech"} and 0.25 <= float(prob) <= 1.0


# kd with OpenVINO and NNCF unimportable, as on a machine where they are not installed
WITHOUT_OPENVINO = ("import sys; sys.modules.update(openvino=None, nncf=None); from cli.main import main; "
                    "sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
def test_without_openvino_export_and_bench_run_the_other_engines_and_name_the_missing_package(smoke_run, tmp_path):
    import subprocess
    import sys

    from conftest import ENV, QUICK_BENCH, REPO

    run = tmp_path / "smoke"
    shutil.copytree(smoke_run, run)
    for verb in (["export", "--models", "distilled"], ["bench", "--models", "distilled", *QUICK_BENCH]):
        proc = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO, *verb, "--run-dir", str(run)], cwd=REPO,
                              env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = ExportReport.read(run / "onnx/distilled/export_report.json")
    assert report.openvino_skipped.startswith("no OpenVINO IRs written: openvino is not installed")
    assert (run / "onnx/distilled/model_int8.onnx").is_file() and not (run / "onnx/distilled/openvino").exists()
    summary = json.loads((run / "bench/summary.json").read_text())
    assert {r["row"] for r in summary["rows"]} - {"distilled-pytorch-cpu-bf16"} == {
        "distilled-pytorch-cpu-fp32", "distilled-onnxruntime-cpu-fp32", "distilled-onnxruntime-cpu-int8"}
    assert set(summary["floors_ms"]) == {"pytorch", "onnxruntime"}  # no floor for the missing engine either
    skipped = {row: reason for row, reason in summary["skipped"].items() if row.startswith("distilled-openvino")}
    assert set(skipped) == {f"distilled-openvino-cpu-{p}" for p in ("fp32", "bf16", "int8")}
    assert all(reason.startswith("openvino is not installed") for reason in skipped.values()), skipped
    assert "openvino is not installed" in (run / "bench/summary.md").read_text()


def test_export_and_predict_errors_are_one_line(tmp_path, kd_here):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    proc = kd_here("export", "--run-dir", empty_run, "--preset", "smoke")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no trained models" in proc.stderr and "make train-all" in proc.stderr
    proc = kd_here("predict", "--model", tmp_path / "nowhere", "some text")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    proc = kd_here("predict", "--model", stand_in("distilbert", tmp_path / "m"), "  ")
    assert proc.returncode == 2 and "text 1 is empty" in proc.stderr


def test_engines_describe_themselves_fail_clearly_and_predict_the_same_labels(tmp_path):
    import shutil

    from bench.backends import COMBOS
    from engines import engine, engines, load
    from engines.predict import load as load_target
    from engines.predict import predict
    from kd.errors import KdError
    from kd.runfolder import RunFolder

    assert [cls.name for cls in engines()] == ["pytorch", "onnxruntime", "openvino"]
    assert COMBOS == (("pytorch", "cpu", "fp32"), ("pytorch", "cpu", "bf16"), ("onnxruntime", "cpu", "fp32"),
                      ("onnxruntime", "cpu", "int8"), ("openvino", "cpu", "fp32"), ("openvino", "cpu", "bf16"),
                      ("openvino", "cpu", "int8"),
                      ("pytorch", "cuda", "fp32"), ("pytorch", "cuda", "fp16"), ("pytorch", "cuda", "bf16"),
                      ("onnxruntime", "cuda", "fp32"), ("onnxruntime", "cuda", "int8"),
                      ("pytorch", "mps", "fp32"), ("pytorch", "mps", "fp16"))
    with pytest.raises(KdError, match=r"^engine 'tensorrt': unknown; expected one of pytorch, onnxruntime, openvino$"):
        engine("tensorrt")
    with pytest.raises(KdError, match=r"nowhere.onnx: no such model file for onnxruntime$"):
        load("onnxruntime", tmp_path / "nowhere.onnx")
    assert engine("pytorch").unavailable("tpu", "fp32") == "pytorch offers no fp32 on tpu"
    assert "no CUDA kernels" in engine("onnxruntime").unavailable("cuda", "int8")
    run = RunFolder(tmp_path / "run")
    assert engine("onnxruntime").missing(run, "distilled", "cpu", "int8") == (
        f"{run.onnx_dir('distilled') / 'model_int8.onnx'} is missing: run `make export` for {run.root}")
    assert engine("openvino").missing(run, "distilled", "cpu", "int8") == (
        f"{run.onnx_dir('distilled') / 'openvino_int8/model.xml'} is missing: run `make export` for {run.root}")
    assert engine("openvino").unavailable("cuda", "fp32") == "openvino offers no fp32 on cuda"

    torch_dir = stand_in("distilbert", tmp_path / "torch")
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(torch_dir, onnx_dir)
    (onnx_dir / "model.safetensors").unlink()
    traced = DistilBertForSequenceClassification.from_pretrained(torch_dir, attn_implementation="eager").eval()
    exporter.export_onnx(traced, AutoTokenizer.from_pretrained(torch_dir), TEXTS, onnx_dir / "model.onnx", 17,
                         "legacy")
    ov_dir = tmp_path / "openvino"
    from export.openvino_export import save
    save(__import__("openvino").convert_model(onnx_dir / "model.onnx"), ov_dir,
         (AutoTokenizer.from_pretrained(torch_dir), traced.config))
    rows = {}
    for target, name, file in ((torch_dir, "pytorch", torch_dir / "model.safetensors"),
                               (onnx_dir, "onnxruntime", onnx_dir / "model.onnx"),
                               (onnx_dir / "model.onnx", "onnxruntime", onnx_dir / "model.onnx"),
                               (ov_dir, "openvino", ov_dir / "model.xml")):
        loaded = load_target(target)
        described = loaded.engine.describe()
        size = file.stat().st_size + (file.with_suffix(".bin").stat().st_size if name == "openvino" else 0)
        assert {k: described[k] for k in ("engine", "device", "precision", "file", "size_mb")} == {
            "engine": name, "device": "cpu", "precision": "fp32", "file": str(file), "size_mb": size / 2**20}, target
        rows[target] = predict(loaded, TEXTS[:16])
    # PyTorch bf16 on the CPU: autocast over the fp32 weights, where the CPU has bf16
    import torch
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        bf16 = load("pytorch", torch_dir, "cpu", "bf16")
        assert bf16.describe()["precision"] == "bf16" and next(bf16.model.parameters()).dtype == torch.float32
        batch = {k: v for k, v in AutoTokenizer.from_pretrained(torch_dir)(TEXTS[:4], padding=True,
                                                                           return_tensors="np").items()}
        fp32 = load("pytorch", torch_dir, "cpu", "fp32")
        np.testing.assert_allclose(bf16.run(batch), fp32.run(batch), atol=0.05)
    else:
        assert "this CPU has no bf16" in engine("pytorch").unavailable("cpu", "bf16")
    # OpenVINO's asynchronous queue gives the synchronous requests' logits, batch for batch
    ov = load_target(ov_dir).engine
    batches = [dict(AutoTokenizer.from_pretrained(ov_dir)(TEXTS[i:i + 4], padding=True, return_tensors="np"))
               for i in range(0, 16, 4)]
    for sync, queued in zip(ov.run_many(batches, "sync"), ov.run_many(batches, "async")):
        np.testing.assert_allclose(sync, queued, atol=1e-5)
    with pytest.raises(ValueError, match="onnxruntime has no bulk mode 'async'"):
        load("onnxruntime", onnx_dir / "model.onnx").run_many(batches, "async")
    torch_rows, *onnx_rows = rows.values()
    for other in onnx_rows:
        assert [r["label"] for r in torch_rows] == [r["label"] for r in other]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(torch_rows, other)) < 1e-4
    # export-check's plain session (ONNX Runtime's defaults) computes the same logits
    batch = dict(AutoTokenizer.from_pretrained(onnx_dir)(TEXTS[:4], padding=True, return_tensors="np"))
    tuned, plain = load("onnxruntime", onnx_dir / "model.onnx"), load("onnxruntime", onnx_dir / "model.onnx",
                                                                       plain=True)
    np.testing.assert_allclose(tuned.run(batch), plain.run(batch), atol=1e-5)
    with pytest.raises(KdError, match=r"expected a model folder or an \.onnx or \.xml file"):
        load_target(torch_dir / "config.json")


def test_the_int8_variant_is_chosen_per_cpu_measured_once_and_again_on_another_cpu(tmp_path):
    """Two int8 variants of one graph, one planted slower (two extra matrix products per row): the engine runs
    the faster, records it with this CPU, reuses the record, and measures again when the record names another
    CPU."""
    from conftest import add_slow_branch

    from bench.floor import floor_onnx
    from engines import load
    from engines.cpu import this_cpu_identity
    from engines.int8_host import RECORD, VARIANTS

    folder = tmp_path / "distilled"
    (folder / VARIANTS).mkdir(parents=True)
    fast, slow = floor_onnx(folder / VARIANTS / "fast.onnx"), floor_onnx(folder / VARIANTS / "slow.onnx")
    add_slow_branch(slow)
    os.link(slow, folder / "model_int8.onnx")  # the export host chose the other one
    opened = load("onnxruntime", folder / "model_int8.onnx", "cpu", "int8")
    assert opened.file == fast and opened.describe()["int8_variant"] == "fast" and opened.host_choice.measured
    record_path = folder / VARIANTS / RECORD
    record = json.loads(record_path.read_text())
    assert record["cpu"] == this_cpu_identity().key and record["variant"] == "fast"
    assert record["seconds"]["slow"]["b1"] > record["seconds"]["fast"]["b1"]
    assert record["seconds"]["slow"]["b32"] > record["seconds"]["fast"]["b32"]
    before = record_path.stat().st_mtime_ns
    # a plain session (export-check, optimum-check) runs model_int8.onnx itself, as a user's own session would
    plain = load("onnxruntime", folder / "model_int8.onnx", "cpu", "int8", plain=True)
    assert plain.host_choice is None and plain.file == folder / "model_int8.onnx"
    again = load("onnxruntime", folder / "model_int8.onnx", "cpu", "int8")
    assert again.file == fast and not again.host_choice.measured and record_path.stat().st_mtime_ns == before
    # a record from another CPU (which chose the slow one there) is not reused
    record_path.write_text(json.dumps({**record, "cpu": "Another CPU, cpu family 6, model 143", "variant": "slow"}))
    moved = load("onnxruntime", folder / "model_int8.onnx", "cpu", "int8")
    assert moved.host_choice.measured and moved.file == fast
    assert json.loads(record_path.read_text())["cpu"] == this_cpu_identity().key
    # a model_int8.onnx that is none of the variants (replaced by hand, or planted) is run as it is
    (folder / "model_int8.onnx").unlink()
    add_slow_branch(shutil.copy(fast, folder / "model_int8.onnx"), n=256)  # none of the two
    replaced = load("onnxruntime", folder / "model_int8.onnx", "cpu", "int8")
    assert replaced.host_choice is None and replaced.file == folder / "model_int8.onnx"
    # an int8 file without variants beside it is run as it is
    alone = tmp_path / "alone" / "model_int8.onnx"
    alone.parent.mkdir()
    floor_onnx(alone)
    assert load("onnxruntime", alone, "cpu", "int8").host_choice is None
