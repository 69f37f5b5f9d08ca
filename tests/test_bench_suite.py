"""The bench suite on the smoke run: what it writes, that its accuracies are the models' own, that its FLOP
count is right, and that bench-check catches a run made slower or less accurate on purpose."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUICK_BENCH, add_slow_branch, kd

from bench.config import BenchConfig, add_arguments
from bench.figures import RowFields
from bench.flops import batch_flops
from bench.gate import GateConfig, check, compare, failures_of, table, under_latency_floor
from bench.plot import frontier
from bench.records import (
    LATENCY,
    THROUGHPUT,
    Baseline,
    BaselineRow,
    BenchSummary,
    Machine,
    Ratio,
    Settings,
    SummaryRow,
)
from bench.summary import build_summary
from engines.cpu import CpuIdentity, this_cpu_identity
from kd.errors import KdError
from kd.typed import to_data

CPU_COMBOS = [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
              ("openvino", "int8")]


@pytest.mark.slow
def test_bench_writes_the_summary_with_every_cpu_row(smoke_bench):
    out = smoke_bench / "bench"
    summary = json.loads((out / "summary.json").read_text())
    raw = json.loads((out / "pytest-benchmark.json").read_text())
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "| model | backend |" in md and "Fastest backend per workload:" in md
    assert "ONNX Runtime's threads spinning between calls" in md
    rows = {r["row"]: r for r in summary["rows"]}
    # written from the BenchSummary record and read back into it whole
    assert BenchSummary.read(out / "summary.json") == build_summary(raw)
    assert summary["version"] == BenchSummary.VERSION and summary["machine"]["cpu"] == to_data(this_cpu_identity())
    cfg = BenchConfig.from_dict(summary["config"])
    expected = {f"{m}-{b}-cpu-{p}" for m in ("teacher", "baseline", "distilled") for b, p in CPU_COMBOS}
    assert expected <= set(rows)
    for r in rows.values():
        assert r["samples"] == 256 and r["samples_per_s"] > 0 and r["params"] > 0 and r["size_mb"] > 0
        assert r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"]
        # b1 p50: the fastest part's median, each part having timed every latency text, parts until two agree
        parts = r["p50_parts_ms"]
        assert 2 <= len(parts) <= cfg.parts
        assert len(parts) == cfg.parts or sum(p <= min(parts) * (1 + cfg.latency_agreement) for p in parts) >= 2
        assert r["p50_ms"] == min(parts) <= r["p50_all_calls_ms"]
    for m in ("teacher", "baseline", "distilled"):
        assert rows[f"{m}-onnxruntime-cpu-int8"]["size_mb"] < rows[f"{m}-onnxruntime-cpu-fp32"]["size_mb"] / 2
        # ONNX Runtime int8 ran the export's variant that this CPU's timing chose (its record beside the model)
        kept = smoke_bench / "onnx" / m / "int8_variants"
        assert rows[f"{m}-onnxruntime-cpu-int8"]["int8_variant"] == (
            json.loads((kept / "host_choice.json").read_text())["variant"] if kept.is_dir() else None)
        # PyTorch bf16 on the CPU (autocast) where the CPU has bf16: the same model, a few rows of 256 apart at most
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            bf16, fp32 = rows[f"{m}-pytorch-cpu-bf16"], rows[f"{m}-pytorch-cpu-fp32"]
            assert abs(bf16["accuracy"] - fp32["accuracy"]) <= 0.02 and bf16["size_mb"] == fp32["size_mb"]
        else:
            assert "this CPU has no bf16" in summary["skipped"][f"{m}-pytorch-cpu-bf16"]
    assert rows["teacher-pytorch-cpu-fp32"]["throughput_speedup"] == pytest.approx(1.0)
    # every measurement is a pytest-benchmark record with its per-call times
    kinds = {b["extra_info"]["kind"] for b in raw["benchmarks"]}
    kept = {m for m in ("teacher", "baseline", "distilled") if (smoke_bench / "onnx" / m / "int8_variants").is_dir()}
    assert kinds == {"peak", "floor", "tokenize", "latency", "throughput"} | ({"int8_variants"} if kept else set())
    # every kept int8 variant timed side by side on the bench's texts, the engine's pick among them and its lag
    assert set(summary["int8_variants"]) == kept
    for m in kept:
        side = summary["int8_variants"][m]
        names = {p.stem for p in (smoke_bench / "onnx" / m / "int8_variants").glob("*.onnx")}
        assert set(side["seconds"]) == names and side["chosen"] == rows[f"{m}-onnxruntime-cpu-int8"]["int8_variant"]
        assert all(s["b1"] > 0 and s["b32"] > 0 for s in side["seconds"].values()), side
        for shape, lag in side["chosen_vs_fastest"].items():
            assert lag == pytest.approx(side["seconds"][side["chosen"]][shape]
                                        / min(s[shape] for s in side["seconds"].values())) and lag >= 1
    if kept:
        assert "int8 variants side by side" in md
    assert all(len(b["stats"]["data"]) == b["stats"]["rounds"] for b in raw["benchmarks"])
    assert {b["extra_info"]["texts"] for b in raw["benchmarks"] if b["extra_info"]["kind"] == "latency"} == {32}
    if not torch.cuda.is_available():
        assert "no CUDA device" in summary["skipped"]["distilled-pytorch-cuda-fp16"]
    fraction = summary["efficiency"]["fp32"]["fraction_of_peak"]
    assert fraction is None or 0 < fraction <= 1, "never above the best matrix-product rate measured"
    for m in ("teacher", "baseline", "distilled"):  # OpenVINO's batch-32 rows say which hint served them
        assert rows[f"{m}-openvino-cpu-int8"]["bulk_mode"] in ("sync", "async")
        assert rows[f"{m}-openvino-cpu-int8"]["size_mb"] < rows[f"{m}-openvino-cpu-fp32"]["size_mb"] / 2
    for b in raw["benchmarks"]:  # OpenVINO: both bulk modes in a row's first part, the faster alone afterwards
        info = b["extra_info"]
        if info["kind"] == "throughput" and info["of"]["backend"] == "openvino":
            assert len(info["mode_seconds"]) == (2 if info["part"] == 0 else 1), info["of"]["row"]
            assert info["bulk_mode"] == rows[info["of"]["row"]]["bulk_mode"], info["of"]["row"]
    # the ratios are stored with their rows; the settings are those kd bench handed to the suite
    keys = {(r["fast"], r["slow"], r["what"]) for r in summary["ratios"]}
    assert ("distilled-onnxruntime-cpu-int8", "distilled-onnxruntime-cpu-fp32", THROUGHPUT) in keys
    assert ("distilled-onnxruntime-cpu-int8", "teacher-pytorch-cpu-fp32", LATENCY) in keys
    assert (cfg.samples, cfg.latency_texts, cfg.min_seconds, cfg.parts, cfg.run_dir) == (256, 32, 0.2, 3, smoke_bench)
    # each engine's floor at batch 1 (the lower of its two measurements), printed beside every CPU row's p50
    floors = {b["extra_info"]["backend"]: [] for b in raw["benchmarks"] if b["extra_info"]["kind"] == "floor"}
    for b in raw["benchmarks"]:
        if b["extra_info"]["kind"] == "floor":
            floors[b["extra_info"]["backend"]].append(b["extra_info"]["p50_ms"])
    assert set(floors) == {"pytorch", "onnxruntime", "openvino"} and all(len(v) == 2 for v in floors.values())
    assert summary["floors_ms"] == {k: min(v) for k, v in floors.items()}
    for r in rows.values():
        assert r["floor_ms"] == summary["floors_ms"][r["backend"]] < r["p50_ms"], r["row"]
        assert 0 < r["arithmetic_ms"] < r["p50_ms"], r["row"]
    assert md.count("| teacher-onnxruntime-cpu-int8 |") == 1 and "engine floor ms" in md
    # the speed-ups against the teacher's fastest PyTorch row, per workload
    teachers = [r for r in rows.values() if r["model"] == "teacher" and r["backend"] == "pytorch"]
    fastest_b1 = min(teachers, key=lambda r: r["p50_ms"])
    fastest_b32 = max(teachers, key=lambda r: r["samples_per_s"])
    for r in rows.values():
        assert r["latency_speedup_vs_fastest"] == pytest.approx(fastest_b1["p50_ms"] / r["p50_ms"])
        assert r["throughput_speedup_vs_fastest"] == pytest.approx(r["samples_per_s"] / fastest_b32["samples_per_s"])


@pytest.mark.slow
def test_bench_accuracy_is_the_models_own(smoke_bench):
    """PyTorch rows score exactly what the training run saved for the same test rows; ONNX fp32 agrees."""
    summary = json.loads((smoke_bench / "bench" / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    labels = np.load(smoke_bench / "test_labels.npy")[:256]
    for m in ("teacher", "baseline", "distilled"):
        saved = np.load(smoke_bench / "models" / m / "test_logits.npy")[:256]
        expected = float((saved.argmax(-1) == labels).mean())
        assert rows[f"{m}-pytorch-cpu-fp32"]["accuracy"] == pytest.approx(expected, abs=1e-9)
        assert rows[f"{m}-onnxruntime-cpu-fp32"]["accuracy"] == pytest.approx(expected, abs=1e-9)


def permute_classifier(model_dir):
    """Shift the classifier's rows by one: the model now names the wrong class for nearly every text. Its
    metrics.json records the new weights, as a (worse) retraining would."""
    from safetensors.torch import load_file, save_file

    from kd.runfolder import sha256_file

    path = model_dir / "model.safetensors"
    weights = load_file(path)
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = torch.roll(weights[key], 1, dims=0).contiguous()
    save_file(weights, path, metadata={"format": "pt"})
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics["weights_sha256"] = sha256_file(path)
    (model_dir / "metrics.json").write_text(json.dumps(metrics))


# the planted slowdown's matrix size: large enough that the slowed model's batch-1 latency clears the gate's
# latency floor (2.5 ms) on a fast CPU too, where latency ratios are gated; at 512 a Zen 5 answered in 2.48 ms
SLOW_N = 768


def plant_slow_openvino_graph(export_dir):
    """The fp32 IR replaced by one converted from a slowed copy of the ONNX graph (same logits)."""
    import openvino as ov

    slowed = export_dir / "slowed.onnx"
    shutil.copy(export_dir / "model.onnx", slowed)
    add_slow_branch(slowed, n=SLOW_N)
    ov.save_model(ov.convert_model(slowed), export_dir / "openvino" / "model.xml", compress_to_fp16=False)
    slowed.unlink()


@pytest.mark.slow
def test_bench_check_passes_on_the_run_and_fails_on_a_slower_or_less_accurate_one(smoke_bench, tmp_path, kd_here):
    baseline = tmp_path / "baseline.json"
    assert kd_here("bench-baseline", "--run-dir", smoke_bench, "--baseline", baseline).returncode == 0
    passed = kd_here("bench-check", "--run-dir", smoke_bench, "--baseline", baseline)
    assert passed.returncode == 0, passed.stdout[-3000:]
    assert "bench-check passed" in passed.stdout

    # one copy made both slower (an extra matrix product in the distilled int8 graph) and less accurate (the
    # distilled classifier's rows shifted), benched once: an accuracy drop is no noise, so it is judged at
    # once, with the speed ratios it also broke (the confirming re-bench is tested on recorded summaries below)
    worse = tmp_path / "worse"
    shutil.copytree(smoke_bench, worse)
    add_slow_branch(worse / "onnx" / "distilled" / "model_int8.onnx", n=SLOW_N)
    plant_slow_openvino_graph(worse / "onnx" / "distilled")
    permute_classifier(worse / "models" / "distilled")
    assert kd("bench", "--run-dir", worse, *QUICK_BENCH).returncode == 0
    failed = kd_here("bench-check", "--run-dir", worse, "--baseline", baseline)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "benching again" not in failed.stdout
    report = failed.stdout.split("bench-check FAILED")[1]
    assert "- distilled-pytorch-cpu-fp32: accuracy (%)" in report
    assert "- distilled-onnxruntime-cpu-int8 vs distilled-onnxruntime-cpu-fp32: throughput (×)" in report
    assert "- distilled-onnxruntime-cpu-int8 vs teacher-pytorch-cpu-fp32: b1 p50 latency (×)" in report
    assert "- distilled-openvino-cpu-fp32 vs teacher-pytorch-cpu-fp32: throughput (×)" in report
    assert "teacher-pytorch-cpu-fp32: accuracy" not in report  # the untouched model passes


@pytest.mark.slow
def test_bench_errors_are_one_line(smoke_bench, tmp_path, kd_here):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("bench", "--run-dir", empty), "no trained models"),  # (errors come before pytest starts)
        (("bench", "--run-dir", smoke_bench, "--bench-samples", "999999"), "--bench-samples 999999"),
        (("bench-check", "--run-dir", empty), "run `make bench`"),
        (("bench-check", "--run-dir", smoke_bench, "--baseline", tmp_path / "none.json"), "no such baseline"),
    ]
    for args, message in cases:
        proc = kd_here(*args)
        assert proc.returncode == 2, (args, proc.stdout[-1000:], proc.stderr[-1000:])
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    # a baseline recorded with other settings is not compared with
    other = tmp_path / "other.json"
    assert kd_here("bench-baseline", "--run-dir", smoke_bench, "--baseline", other).returncode == 0
    data = json.loads(other.read_text())
    data["settings"]["samples"] = 7600
    other.write_text(json.dumps(data))
    proc = kd_here("bench-check", "--run-dir", smoke_bench, "--baseline", other)
    assert proc.returncode == 2 and "samples=7600" in proc.stderr


@pytest.mark.slow
def test_one_bench_measurement_runs_alone_and_records_its_figure(smoke_export, tmp_path):
    """A measurement that runs after the rows (the floor again) needs nothing from an earlier test: run alone by its
    id on the shared export, it records its typed figure."""
    import subprocess
    import sys

    from conftest import ENV, REPO

    from bench.figures import FloorFigure, read_figure

    out = tmp_path / "one.json"
    # a pytest session of its own, as a user starts it: pytest-benchmark disables every benchmark in a process that
    # has $PYTEST_XDIST_WORKER, which this test's own xdist worker would hand down
    env = {k: v for k, v in ENV.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/test_bench.py", "-q", "-p", "no:cacheprovider",
                           "-k", "test_floor_again and onnxruntime", "--run-dir", str(smoke_export),
                           f"--benchmark-json={out}", *QUICK_BENCH], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == "test_floor_again[onnxruntime]"
    figure = read_figure(bench["extra_info"], "extra_info:")
    assert isinstance(figure, FloorFigure) and figure.backend == "onnxruntime" and figure.p50_ms > 0
    assert figure.calls == len(bench["stats"]["data"])


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_flop_count_matches_pytorchs_counter(kind):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig

    if kind == "bert":
        config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                            num_labels=4, vocab_size=100)
    else:
        config = DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=96, num_labels=4, vocab_size=100)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    ids = torch.randint(0, 100, (3, 17))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids)
    assert batch_flops(config, 3, 17) == counter.get_total_flops()


ZEN4 = CpuIdentity("AMD EPYC", "AuthenticAMD", 25, 17, 1, ("AVX2", "AVX-512", "AVX-512 VNNI", "AVX-512 BF16"))
XEON = CpuIdentity("Intel(R) Xeon(R) Platinum 8480+", "GenuineIntel", 6, 143, 8,
                   ("AVX2", "AVX-512", "AVX-512 VNNI", "AVX-512 BF16", "AMX-INT8", "AMX-BF16"))
SETTINGS = Settings(100, 32, "length")


def ratios(*values: tuple[str, str, str, float]) -> list[Ratio]:
    return [Ratio(*v) for v in values]


def machine(cpu: CpuIdentity = ZEN4) -> Machine:
    return Machine(cpu, 2, 2, {"torch": 2}, None, "Linux")


def summary_with(rows: list[dict], found: list[Ratio], skipped: dict | None = None, cpu: CpuIdentity = ZEN4
                 ) -> BenchSummary:
    """A bench summary of these rows (row id, accuracy, f1_macro, ... as SummaryRow's fields) and ratios."""
    return BenchSummary(
        preset="smoke", config={"batch_size": 32, "order": "length"}, settings=SETTINGS, machine=machine(cpu),
        versions={}, datetime=None, skipped=skipped or {}, tokenize={}, floors_ms={}, int8_variants={},
        rows=[SummaryRow(**{"model": "m", "backend": "b", "device": "cpu", "precision": "fp32", "params": 1,
                            "size_mb": 1.0, **r}) for r in rows],
        ratios=found, cpu_peaks=[], cpu_theoretical_peak=None, efficiency={})


def baseline_with(rows: dict[str, dict], found: list[Ratio], cpu: CpuIdentity = ZEN4,
                  gate: GateConfig | None = None) -> Baseline:
    return Baseline("smoke", "2026-12-06T00:00:00+00:00", 1, SETTINGS, machine(cpu), {},
                    {k: BaselineRow(**{"samples_per_s": None, "p50_ms": None, **v}) for k, v in rows.items()},
                    found, gate)


def test_gate_limits_are_inclusive_and_missing_rows_fail():
    row = {"row": "distilled-onnxruntime-cpu-int8", "accuracy": 0.90, "f1_macro": 0.90}
    baseline = baseline_with({row["row"]: {"accuracy": 0.91, "f1_macro": 0.91}, "gone-pytorch-cpu-fp32":
                              {"accuracy": 0.9, "f1_macro": 0.9}},
                             ratios(("a", "b", THROUGHPUT, 4.0), ("c", "d", THROUGHPUT, 4.0)))
    summary = summary_with([row], ratios(("a", "b", THROUGHPUT, 3.0), ("c", "d", THROUGHPUT, 2.99)),
                           {"gone-pytorch-cpu-fp32": "no such device"})
    checks = compare(summary, baseline, GateConfig(max_accuracy_drop_pt=1.0, max_ratio_drop=0.25))
    failures = failures_of(checks)
    assert [(f.kind, f.row, f.ratio and f.ratio.key) for f in failures] == [
        ("missing", "gone-pytorch-cpu-fp32", None), ("ratio", None, ("c", "d", THROUGHPUT))]
    assert failures[0].change == "no such device" and "no such device" in failures[0].message()
    # the numbers and the limit: a drop of exactly the limit passes
    accuracy = next(c for c in checks if c.kind == "accuracy")
    assert (accuracy.base, accuracy.now, accuracy.ok) == (pytest.approx(91), pytest.approx(90), True)
    assert failures[1].floor == pytest.approx(3.0) and failures[1].now == 2.99
    # what users read stays as it was
    assert failures[1].message() == "c vs d: throughput (×): 4 in the baseline, 2.99 now (-25%, limit -25%)"
    assert failures[0].message() == "gone-pytorch-cpu-fp32: accuracy: 90 in the baseline, missing now (no such device)"
    assert "| a vs b: throughput (×) | 4 | 3 | -25% | -25% | ok |" in table(checks)
    assert "| c vs d: throughput (×) | 4 | 2.99 | -25% | -25% | **FAIL** |" in table(checks)


def test_batch_1_latency_ratios_of_sub_millisecond_rows_are_shown_not_gated():
    baseline = baseline_with({"a": {"accuracy": 0.9, "f1_macro": 0.9, "p50_ms": 0.3},
                              "b": {"accuracy": 0.9, "f1_macro": 0.9, "p50_ms": 0.2}},
                             ratios(("a", "b", LATENCY, 0.95)))
    fast = summary_with([{"row": "a", "accuracy": 0.9, "f1_macro": 0.9, "p50_ms": 0.33},
                         {"row": "b", "accuracy": 0.9, "f1_macro": 0.9, "p50_ms": 0.2}],
                        ratios(("a", "b", LATENCY, 0.6)))
    checks = compare(fast, baseline, GateConfig())
    assert not failures_of(checks) and any("not gated: both rows under 2.5 ms" in line for line in table(checks))
    assert "| a vs b: b1 p50 latency (×) | 0.95 | 0.6 | -37% | not gated: both rows under 2.5 ms | |" in table(checks)
    fast.rows[0].p50_ms = 5.0  # a row that became slow is gated again
    failures = failures_of(compare(fast, baseline, GateConfig()))
    assert [f.ratio.key for f in failures] == [("a", "b", LATENCY)]


def test_the_latency_floor_reads_the_ratios_rows():
    """Both rows of the ratio, now and in the baseline, must be under the floor; a throughput ratio never is."""
    def at(**p50):
        return {r: BaselineRow(0.9, 0.9, None, ms) for r, ms in p50.items()}

    now, base = at(a=0.3, b=0.2, c=3.0), at(a=0.3, b=0.2, c=0.2)
    assert under_latency_floor(Ratio("a", "b", LATENCY, 1.0), now, base, 2.5)
    assert not under_latency_floor(Ratio("a", "b", THROUGHPUT, 1.0), now, base, 2.5)
    assert not under_latency_floor(Ratio("a", "c", LATENCY, 1.0), now, base, 2.5)  # c is slow now
    assert not under_latency_floor(Ratio("c", "b", LATENCY, 1.0), base, now, 2.5)  # c was slow in the baseline
    assert not under_latency_floor(Ratio("a", "gone", LATENCY, 1.0), now, base, 2.5)


def test_records_round_trip_and_an_old_or_malformed_file_is_one_line_naming_file_and_field(tmp_path):
    summary = summary_with([{"row": "a", "accuracy": 0.9, "f1_macro": 0.8, "p50_parts_ms": [1.0, 2.0]}],
                           ratios(("a", "b", LATENCY, 4.77)))
    summary.write(tmp_path / "summary.json")
    assert BenchSummary.read(tmp_path / "summary.json") == summary
    baseline = baseline_with({"a": {"accuracy": 0.9, "f1_macro": 0.8}}, summary.ratios, gate=GateConfig(why="x"))
    baseline.write(tmp_path / "baseline.json")
    assert Baseline.read(tmp_path / "baseline.json") == baseline
    assert summary.ratios[0].name == "a vs b: b1 p50 latency"
    with pytest.raises(ValueError, match="speed"):
        Ratio("a", "b", "speed", 1.0)
    # a summary of an older version (format 2: no version, untyped) is refused in one line that names the fix
    run = tmp_path / "run"
    (run / "bench").mkdir(parents=True)
    (run / "bench" / "summary.json").write_text(json.dumps({"format": 2, "rows": [], "ratios": []}))
    with pytest.raises(KdError, match=r"summary.json: version=None: expected 3, the format this kd-bench writes; "
                                      r"run `make bench`"):
        check(run)
    # a malformed field: the file and the field's path
    data = json.loads((tmp_path / "summary.json").read_text())
    data["rows"][0]["accuracy"] = "high"
    (run / "bench" / "summary.json").write_text(json.dumps(data))
    with pytest.raises(KdError, match=r"summary.json: rows\[0\]: accuracy='high': expected a number or null; "
                                      r"run `make bench`"):
        check(run)
    data = json.loads((tmp_path / "baseline.json").read_text())
    del data["machine"]["cpu"]
    (tmp_path / "baseline.json").write_text(json.dumps(data))
    with pytest.raises(KdError, match=r"baseline.json: machine.cpu: expected a mapping with model_name, .*; record it"):
        Baseline.read(tmp_path / "baseline.json")
    # the committed baselines: typed, with the CPU they were recorded on, the gate section of the smoke one kept
    from bench.baseline import BASELINES

    committed = {p.name: Baseline.read(p) for p in BASELINES.glob("*.json")}
    assert set(committed) == {"smoke-cpu-amd-epyc-f25m17s1.json", "cpu-cpu-amd-epyc-f25m17s1.json"}
    assert committed["smoke-cpu-amd-epyc-f25m17s1.json"].gate.max_ratio_drop == 0.4
    for name, base in committed.items():  # recorded with every CPU row: ratios between recorded rows
        assert base.machine.cpu.same_cpu(ZEN4) and name.endswith(f"-{ZEN4.slug}.json")
        keys = {r.key for r in base.ratios}
        assert all(fast in base.rows and slow in base.rows for fast, slow, _ in keys), name
        assert ("distilled-openvino-cpu-int8", "distilled-onnxruntime-cpu-int8", THROUGHPUT) in keys, name


def test_the_summary_merges_each_rows_typed_figures_and_renders_them():
    """pytest-benchmark's JSON as the suite writes it (one typed figure per measurement) to the typed summary and its
    table, without a bench: the parts of a row merged, speed-ups and ratios against the teacher's row."""
    from bench.figures import FloorFigure, LatencyFigure, SuiteMeta, ThroughputFigure
    from bench.render import render

    def of(model):  # the teacher in PyTorch: the reference of every speed-up
        backend = "pytorch" if model == "teacher" else "onnxruntime"
        return RowFields(f"{model}-{backend}-cpu-fp32", model, backend, "cpu", "fp32", 10, 1.0, "f", None)

    def latency(model, part, ms):
        return {"stats": {"data": [ms / 1e3] * 4}, "extra_info": LatencyFigure(
            of(model), part, 2, 4, 1, 20.0, 1e6, ms, ms, ms, ms, ms).info()}

    def throughput(model, part, seconds, right):
        return {"stats": {"data": [seconds]}, "extra_info": ThroughputFigure(
            of(model), part, 2, 32, "length", 50, 2, 1, seconds, "sync", {"sync": seconds}, seconds,
            [[right, 50 - right], [0, 0]], 1000, 800, 1e9).info()}

    meta = SuiteMeta({"run_dir": "runs/x", "batch_size": 32, "order": "length"}, "smoke", [], machine(), {})
    bench_json = {"kd_bench": to_data(meta), "benchmarks": [
        latency("teacher", 0, 4.0), latency("teacher", 1, 3.0), latency("distilled", 0, 1.0),
        throughput("teacher", 0, 1.0, 45), throughput("teacher", 1, 1.0, 45), throughput("distilled", 0, 0.25, 40),
        throughput("distilled", 1, 0.25, 40), {"stats": {"data": [0.1]}, "extra_info": {}},  # failed before its figure
        {"stats": {"data": [1e-4]}, "extra_info": FloorFigure("onnxruntime", 4, 0.1).info()}]}
    summary = build_summary(bench_json)
    teacher, distilled = summary.row("teacher-pytorch-cpu-fp32"), summary.row("distilled-onnxruntime-cpu-fp32")
    assert teacher.p50_parts_ms == [4.0, 3.0] and teacher.p50_ms == 3.0 and teacher.latency_calls == 8
    assert teacher.samples == 100 and teacher.samples_per_s == 50 and teacher.accuracy == 0.9
    assert distilled.samples_per_s == 200 and distilled.accuracy == 0.8 and distilled.floor_ms == 0.1
    assert distilled.throughput_speedup == 4.0 and distilled.vs_teacher == teacher.row
    assert summary.settings == Settings(100, 32, "length") and summary.floors_ms == {"onnxruntime": 0.1}
    assert {r.key: r.value for r in summary.ratios} == {
        ("distilled-onnxruntime-cpu-fp32", "teacher-pytorch-cpu-fp32", THROUGHPUT): 4.0,
        ("distilled-onnxruntime-cpu-fp32", "teacher-pytorch-cpu-fp32", LATENCY): 3.0}
    assert "| distilled | onnxruntime | cpu | fp32 | 80.00% |" in render(summary)
    bench_json["benchmarks"][0]["extra_info"]["p50_ms"] = "fast"
    with pytest.raises(KdError, match=r"pytest-benchmark.json: benchmarks\[0\]: extra_info.p50_ms='fast': expected a "
                                      r"number; written by another version of the bench suite"):
        build_summary(bench_json)


def test_a_baseline_of_another_cpu_gates_accuracy_only_and_says_so_in_one_line(tmp_path, capsys):
    """The Xeon-with-AMX user against a baseline recorded on a Zen 4: speed ratios that moved with the instruction
    set are shown, not gated, and nothing is benched again; accuracy is still gated. Baselines of both CPUs can sit
    side by side: the gate takes this CPU's."""
    from bench.baseline import baseline_file, find_baseline

    rows = {"a": {"accuracy": 0.9, "f1_macro": 0.9}, "b": {"accuracy": 0.9, "f1_macro": 0.9}}
    (tmp_path / "baselines").mkdir()
    zen4 = baseline_with(rows, ratios(("a", "b", THROUGHPUT, 4.0)), cpu=ZEN4)
    zen4.write(tmp_path / "baselines" / f"smoke-cpu-{ZEN4.slug}.json")
    run = tmp_path / "run"
    (run / "bench").mkdir(parents=True)
    # the baseline's bf16 row: this CPU skipped it with a reason (a CPU without bf16), which another CPU's baseline
    # does not gate; a row that went missing without a reason still fails
    zen4.rows["c-pytorch-cpu-bf16"] = BaselineRow(accuracy=0.9, f1_macro=0.9, samples_per_s=None, p50_ms=None)
    zen4.write(tmp_path / "baselines" / f"smoke-cpu-{ZEN4.slug}.json")
    on_xeon = summary_with([{"row": r, **v} for r, v in rows.items()], ratios(("a", "b", THROUGHPUT, 1.5)),
                           cpu=XEON, skipped={"c-pytorch-cpu-bf16": "this CPU has no bf16"})
    on_xeon.write(run / "bench" / "summary.json")
    found = find_baseline(on_xeon, folder=tmp_path / "baselines")
    assert found.path.name == "smoke-cpu-amd-epyc-f25m17s1.json" and not found.same_cpu

    def no_rebench(run_dir, summary):
        raise AssertionError("benched again for ratios that are not gated")

    capsys.readouterr()
    assert check(run, found.path, confirm=2, rebench=no_rebench) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "is the baseline of" in line]
    assert said == [f"kd: bench-check: {found.path} is the baseline of AMD EPYC (AuthenticAMD family 25 model 17 "
                    "stepping 1; AVX2, AVX-512, AVX-512 VNNI, AVX-512 BF16); this bench ran on Intel(R) Xeon(R) "
                    "Platinum 8480+ (GenuineIntel family 6 model 143 stepping 8; AVX2, AVX-512, AVX-512 VNNI, "
                    "AVX-512 BF16, AMX-INT8, AMX-BF16), so only accuracy and macro-F1 are gated (speed ratios depend "
                    "on the CPU); record this CPU's baseline with `make bench-baseline PRESET=smoke` (it writes "
                    f"{baseline_file(on_xeon)})"]
    assert out.index("is the baseline of") < out.index("| what |")  # said before anything else
    assert "| a vs b: throughput (×) | 4 | 1.5 | -62% | not gated: another CPU's baseline | |" in out
    assert "accuracy only: another CPU's baseline" in out
    assert ("| c-pytorch-cpu-bf16: accuracy | 90 | missing | this CPU has no bf16 | not gated: skipped on this CPU | |"
            in out)
    on_xeon.skipped = {}
    on_xeon.write(run / "bench" / "summary.json")
    assert check(run, found.path, rebench=no_rebench) == 1
    on_xeon.skipped = {"c-pytorch-cpu-bf16": "this CPU has no bf16"}
    # accuracy is gated all the same
    on_xeon.rows[0].accuracy = 0.8
    on_xeon.write(run / "bench" / "summary.json")
    assert check(run, found.path, rebench=no_rebench) == 1
    # this CPU's baseline beside the other: the gate takes it, and gates its ratios
    xeon = baseline_with(rows, ratios(("a", "b", THROUGHPUT, 1.6)), cpu=XEON)
    xeon.write(tmp_path / "baselines" / f"smoke-cpu-{XEON.slug}.json")
    assert XEON.slug == "intel-xeon-platinum-8480-f6m143s8"
    found = find_baseline(on_xeon, folder=tmp_path / "baselines")
    assert found.same_cpu and found.path.name == f"smoke-cpu-{XEON.slug}.json"
    assert [c.gated for c in compare(on_xeon, found.baseline, GateConfig()) if c.kind == "ratio"] == [True]
    # no baseline of any CPU: said at once, with the command that records one
    with pytest.raises(KdError, match=r"no smoke-cpu baseline of any CPU; record one with `make bench-baseline "
                                      r"PRESET=smoke` \(it writes .*smoke-cpu-intel-xeon-platinum-8480-f6m143s8"):
        find_baseline(on_xeon, folder=tmp_path / "none")


def test_bench_settings_have_one_declaration_for_every_command_line(tmp_path):
    """kd's bench options, pytest's and a summary's recorded settings all come from BenchConfig's fields."""
    import argparse

    from cli.main import parser

    given = ["--bench-samples", "5", "--order", "file", "--latency-texts", "7", "--devices", "cpu",
             "--models", "teacher,distilled", "--min-seconds", "0.5", "--parts", "2"]
    expected = BenchConfig(run_dir=Path("r"), samples=5, order="file", latency_texts=7, devices=["cpu"],
                           models=["teacher", "distilled"], min_seconds=0.5, parts=2)
    for verb in ("bench", "bench-baseline"):
        args = parser().parse_args([verb, "--run-dir", "r", *given])
        assert BenchConfig.from_args(args, run_dir=args.run_dir, data=args.data) == expected
    suite = argparse.ArgumentParser()  # as bench/conftest.py declares them to pytest
    add_arguments(suite.add_argument)
    assert BenchConfig.from_args(suite.parse_args(["--run-dir", "r", *given])) == expected
    assert BenchConfig.from_args(suite.parse_args([])) == BenchConfig()  # the defaults are the fields'
    # no --models: every model the run trained, in its order (the manifest's list, then any other folder)
    assert BenchConfig().models == []
    from kd.runfolder import FORMAT_VERSION

    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                        "models": ["teacher", "baseline", "kd-hidden"]}))
    for name in ("kd-hidden", "baseline", "teacher", "pseudo-label", ".teacher.x.tmp"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "metrics.json").write_text("{}")
    cfg = BenchConfig(run_dir=tmp_path)
    cfg.check()
    assert cfg.models == ["teacher", "baseline", "kd-hidden", "pseudo-label"]
    # a summary records the settings; bench-check benches again from them
    recorded = json.loads(json.dumps(expected.to_dict()))
    assert BenchConfig.from_dict({**recorded, "from_a_later_version": 1}) == expected
    for cfg, message in ((BenchConfig(order="random"), "--order 'random': expected length or file"),
                         (BenchConfig(devices=["tpu"]), "--devices 'tpu': expected some of cpu, cuda, mps"),
                         (BenchConfig(samples=0), "--bench-samples 0: expected a positive number"),
                         (BenchConfig(latency_texts=0), "--latency-texts 0: expected a positive number"),
                         (BenchConfig(parts=0), "--parts 0: expected a positive number")):
        with pytest.raises(KdError, match=f"^{message}$"):
            cfg.check()


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(10.0, 92.0), (5.0, 91.0), (6.0, 90.0), (2.0, 91.0), (1.0, 85.0)]
    assert frontier(points, lower_is_better=True) == [(1.0, 85.0), (2.0, 91.0), (10.0, 92.0)]
    assert frontier([(100, 90.0), (300, 91.0), (200, 92.0)], lower_is_better=False) == [(300, 91.0), (200, 92.0)]


def test_a_speed_failure_counts_only_when_it_repeats(tmp_path, capsys):
    """bench-check --confirm: a ratio low once (noise) passes when benched again; one low every time fails; an
    accuracy drop is judged at once."""
    name = ("a", "b", THROUGHPUT)
    rows = [{"row": r, "accuracy": 0.9, "f1_macro": 0.9, "samples": 100, "p50_ms": 5.0} for r in "ab"]
    baseline = tmp_path / "baseline.json"
    baseline_with({r["row"]: {"accuracy": 0.9, "f1_macro": 0.9, "p50_ms": 5.0} for r in rows},
                  ratios((*name, 2.0))).write(baseline)
    run = tmp_path / "run"
    (run / "bench").mkdir(parents=True)

    def bench_with(ratio, accuracy=0.9):
        summary = summary_with([{**r, "accuracy": accuracy} for r in rows], ratios((*name, ratio)))
        summary.write(run / "bench" / "summary.json")
        return summary

    def rebenches(*ratios):
        calls = iter(ratios)
        return lambda run_dir, summary: bench_with(next(calls))

    bench_with(1.2)
    capsys.readouterr()
    assert check(run, baseline, confirm=2, rebench=rebenches(1.9)) == 0  # low once, fine the next time
    out = capsys.readouterr().out
    assert "1 speed ratio(s) below the limit (a vs b: throughput); benching again to confirm (1 of 2)" in out
    assert "speed ratios: the best of 2 bench runs" in out and "bench-check passed" in out
    bench_with(1.2)
    assert check(run, baseline, confirm=2, rebench=rebenches(1.3, 1.4)) == 1  # low three times
    bench_with(1.2)
    assert check(run, baseline, confirm=0, rebench=rebenches()) == 1  # --confirm 0: the bench alone
    bench_with(2.0, accuracy=0.5)
    assert check(run, baseline, confirm=2, rebench=rebenches()) == 1  # no rebench asked for (next() would raise)


def test_a_baseline_may_set_its_own_limits_and_the_command_line_overrides_them(tmp_path):
    from bench.baseline import record_baseline
    from bench.gate import gate_for

    baseline = baseline_with({}, [], gate=GateConfig(max_ratio_drop=0.4, why="noisy rows"))
    assert gate_for(baseline).max_ratio_drop == 0.4
    assert gate_for(baseline).max_accuracy_drop_pt == GateConfig().max_accuracy_drop_pt
    assert gate_for(baseline, {"max_ratio_drop": 0.1, "max_accuracy_drop_pt": None}).max_ratio_drop == 0.1
    assert gate_for(baseline_with({}, [])).max_ratio_drop == GateConfig().max_ratio_drop
    path = tmp_path / "b.json"
    data = to_data(baseline)
    data["gate"]["max_ratio"] = 0.4
    path.write_text(json.dumps(data))
    with pytest.raises(KdError, match=r"b.json: unknown key gate.max_ratio \(known: "):
        Baseline.read(path)
    # re-recording keeps the limits chosen for the baseline
    baseline.write(path)
    summary = summary_with([{"row": "a", "accuracy": 0.9, "f1_macro": 0.9, "samples": 10, "samples_per_s": 1.0,
                             "p50_ms": 1.0}], ratios(("a", "b", THROUGHPUT, 2.0)))
    record_baseline([summary], path)
    assert Baseline.read(path).gate == baseline.gate


def batch_of(rows: int, length: int) -> dict:
    return {"input_ids": np.zeros((rows, length), np.int64), "attention_mask": np.ones((rows, length), np.int64)}


class Recorder:
    """A stand-in engine that records its calls' shapes."""

    bulk_modes = ("sync", "async")

    def __init__(self, compiles_per_shape: bool):
        self.compiles_per_shape, self.calls = compiles_per_shape, []

    def run(self, b):
        self.calls.append(("run", b["input_ids"].shape))

    def run_many(self, batches, mode):
        self.calls.append((mode, [b["input_ids"].shape for b in batches]))


def test_warm_up_runs_each_shape_once_per_mode_before_it_is_timed_and_only_where_it_builds_kernels():
    from types import SimpleNamespace

    from bench.workload import RowState

    engine = Recorder(compiles_per_shape=True)
    state = RowState(SimpleNamespace(engine=engine), engine.bulk_modes)
    part1 = [batch_of(2, n) for n in (8, 8, 5)]
    part2 = [batch_of(2, n) for n in (5, 3, 3)] + [batch_of(1, 3)]
    assert state.warm("sync", part1) == 2 and state.warm("async", part1) == 2
    assert state.warm("sync", part2) == 2 and state.warm("sync", part2) == 0  # only shapes it has not run
    assert state.warm("single", [batch_of(1, n) for n in (4, 2, 4)]) == 2
    assert engine.calls == [("sync", [(2, 8), (2, 5)]), ("async", [(2, 8), (2, 5)]), ("sync", [(2, 3), (1, 3)]),
                            ("run", (1, 4)), ("run", (1, 2))]
    plain = Recorder(compiles_per_shape=False)
    assert RowState(SimpleNamespace(engine=plain), plain.bulk_modes).warm("sync", part1) == 0 and plain.calls == []


def test_only_the_first_parts_fastest_bulk_mode_is_timed_again_and_latency_stops_when_two_parts_agree():
    from types import SimpleNamespace

    from bench.workload import RowState

    state = RowState(SimpleNamespace(engine=Recorder(True)), ("sync", "async"))
    state.keep_fastest_mode({"sync": 1.02, "async": 1.0})
    assert state.modes == ("async",)
    state = RowState(SimpleNamespace(engine=Recorder(True)), ("sync", "async"))
    state.keep_fastest_mode({"sync": 0.99, "async": 1.0})
    assert state.modes == ("sync",)
    assert not state.latency_settled(0.03)
    for median, settled in ((2.0, False), (2.5, False), (2.05, True)):
        state.latency_medians.append(median)
        assert state.latency_settled(0.03) == settled
    state.latency_medians[:] = [3.0, 2.0, 2.9, 2.2]  # the lowest is alone: a lucky part is not trusted alone
    assert not state.latency_settled(0.03)


def test_ratio_spread_gives_each_ratios_max_over_min_per_group_and_counts_the_narrower(tmp_path):
    """scripts/ratio_spread.py, which makes docs/bench.md's spread table from repeated benches."""
    import subprocess
    import sys

    def summary(name, values):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"ratios": [
            {"fast": "a", "slow": "t", "what": "throughput", "value": values[0]},
            {"fast": "a", "slow": "t", "what": "b1 p50 latency", "value": values[1]}]}))
        return str(path)

    new = ",".join(summary(f"n{i}", v) for i, v in enumerate([(2.0, 4.0), (2.2, 4.0), (2.1, 4.4)]))
    old = ",".join(summary(f"o{i}", v) for i, v in enumerate([(2.0, 4.0), (3.0, 4.0), (2.5, 4.2)]))
    script = Path(__file__).resolve().parents[1] / "scripts" / "ratio_spread.py"
    out = subprocess.run([sys.executable, script, f"new={new}", f"old={old}"], capture_output=True, text=True,
                         check=True).stdout
    assert "| a / t (throughput) | 2.00 2.20 2.10 | 1.100 | 2.00 3.00 2.50 | 1.500 |" in out
    assert "| a / t (b1 p50 latency) | 4.00 4.00 4.40 | 1.100 | 4.00 4.00 4.20 | 1.050 |" in out
    assert "| all | 2 | 1.100 | 1.100 | 1.275 | 1.500 | 1 of 2 |" in out
    bad = subprocess.run([sys.executable, script, "no-label"], capture_output=True, text=True)
    assert bad.returncode == 2 and "ratio_spread.py" in bad.stderr
