"""The bench's GFLOP/s yardstick (bench/yardstick.py): the rates' arithmetic, the best engine per precision, the
rule that no fraction above 100 % is ever printed, the summary's fields, and the theoretical peak read from sample
lscpu and /proc/cpuinfo texts (bench/cpu.py)."""

import re
from dataclasses import replace

import pytest

from bench.cpu import read_cpu, theoretical_peak
from bench.figures import PeakFigure, SuiteMeta
from bench.records import Machine, SummaryRow
from bench.summary import build_summary
from bench.yardstick import (
    BENCH_STICKS,
    Efficiency,
    Peak,
    Stick,
    compute_efficiency,
    efficiency,
    measure,
    runtime_precisions,
    summary_sentences,
    unavailable,
)
from engines.cpu import this_cpu_identity
from kd.typed import to_data


def lines(*found: Efficiency) -> list[str]:
    """The summary's efficiency lines for these efficiencies, as a summary stores them."""
    return summary_sentences({e.precision: e for e in found})


def peak(engine: str, precision: str, rate: float, n: int = 2048) -> Peak:
    return Peak(engine, precision, "MatMul", n, 2, rate)


def row(model: str, backend: str, precision: str, samples_per_s: float, gflops: float, device: str = "cpu"
        ) -> SummaryRow:
    return SummaryRow(f"{model}-{backend}-{device}-{precision}", model, backend, device, precision, 1, 1.0,
                      samples_per_s=samples_per_s, gflops_per_s=gflops, real_tokens=90, padded_tokens=100)


def percentages(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"(\d+) ?%", text)]


def test_a_peak_counts_two_operations_per_multiply_add():
    stick = Stick("onnxruntime", "int8", 1000)
    assert stick.ops_per_call == 2 * 1000**3
    assert Peak.of(stick, 2, 0.01).gflops_per_s == pytest.approx(2 * 1000**3 / 0.01 / 1e9)
    assert Peak.of(stick, 2, 0.01).op == "MatMulInteger u8 x s8"
    assert {(s.engine, s.precision) for s in BENCH_STICKS} >= {("pytorch", "fp32"), ("onnxruntime", "fp32"),
                                                              ("openvino", "fp32"), ("onnxruntime", "int8")}


def test_the_yardstick_is_the_fastest_engine_of_the_rows_precision():
    peaks = [peak("pytorch", "fp32", 100), peak("onnxruntime", "fp32", 160), peak("openvino", "fp32", 150),
             peak("onnxruntime", "int8", 500), peak("openvino", "int8", 640)]
    rows = [row("teacher", "onnxruntime", "fp32", 150, 155),  # the teacher is no student path
            row("distilled", "pytorch", "fp32", 250, 80), row("distilled", "onnxruntime", "fp32", 300, 120),
            row("baseline", "onnxruntime", "int8", 700, 290), row("distilled", "onnxruntime", "int8", 780, 320),
            row("distilled", "pytorch", "fp32", 900, 140, device="cuda")]  # not the CPU
    found = compute_efficiency(rows, peaks)
    assert set(found) == {"fp32", "int8"}  # no bf16 row, no bf16 line
    fp32, int8 = found["fp32"], found["int8"]
    assert (fp32.row, fp32.yardstick.engine) == ("distilled-onnxruntime-cpu-fp32", "onnxruntime")
    assert fp32.fraction_of_peak == pytest.approx(120 / 160) and fp32.useful_token_share == pytest.approx(0.9)
    assert (int8.row, int8.yardstick.engine, int8.fraction_of_peak) == ("distilled-onnxruntime-cpu-int8", "openvino",
                                                                       pytest.approx(0.5))
    text = lines(fp32, int8)
    assert text[0].startswith("Fastest fp32 student path: distilled-onnxruntime-cpu-fp32 at 120 GFLOP/s")
    assert "= 75% of the best fp32 matrix-product rate measured on this CPU (onnxruntime MatMul 2048², 160" in text[0]
    assert "320 GOP/s" in text[1] and "= 50% of the best int8" in text[1] and "(openvino MatMul 2048², 640" in text[1]


def test_no_fraction_above_100_percent_is_ever_printed():
    yardstick = peak("pytorch", "fp32", 100)
    faster = efficiency("fp32", "distilled-onnxruntime-cpu-fp32", 176, 0.99, yardstick)
    assert faster.fraction_of_peak is None and "measured low" in faster.fault
    assert efficiency("fp32", "r", 100, 1.0, yardstick).fraction_of_peak == 1.0  # equal is still a fraction
    with pytest.raises(ValueError, match="176%"):
        Efficiency("fp32", "r", 176, 0.99, yardstick, 1.76)
    line = lines(faster)[0]
    assert "no fraction is given" in line and all(p <= 100 for p in percentages(line)), line
    # a summary stored with a fraction above 1 (hand-edited) is judged again
    stored = replace(efficiency("fp32", "r", 100, 1.0, yardstick), gflops_per_s=176)  # fraction 1.0 kept
    assert all(p <= 100 for p in percentages(summary_sentences({"fp32": stored})[0]))


def test_the_summary_keeps_every_peak_and_one_efficiency_per_precision_it_has():
    rows = [row("distilled", "onnxruntime", "fp32", 300, 120), row("distilled", "openvino", "bf16", 400, 150)]
    found = compute_efficiency(rows, [peak("pytorch", "fp32", 110), peak("openvino", "fp32", 160),
                                      peak("openvino", "bf16", 300)])
    assert set(found) == {"fp32", "bf16"}  # no int8 row, no int8 line
    assert found["fp32"].fraction_of_peak == pytest.approx(0.75) and found["fp32"].yardstick.engine == "openvino"
    assert found["bf16"].fraction_of_peak == pytest.approx(0.5)
    # the peaks as the bench writes them (one figure per measurement) and as the summary keeps them
    meta = SuiteMeta({}, "smoke", [], Machine(this_cpu_identity(), 2, 2, {}, None, "Linux"), {})
    bench_json = {"kd_bench": to_data(meta), "benchmarks": [
        {"stats": {"data": [0.1]}, "extra_info": PeakFigure(p, None).info()}
        for p in (peak("pytorch", "fp32", 110), peak("openvino", "fp32", 160))]}
    summary = build_summary(bench_json)
    assert [p.engine for p in summary.cpu_peaks] == ["pytorch", "openvino"] and summary.cpu_theoretical_peak is None
    assert summary.efficiency == {} and summary.rows == [] and summary.version == 3


ZEN4_LSCPU = """Architecture:                            x86_64
CPU(s):                                  2
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC
CPU family:                              25
Model:                                   17
Thread(s) per core:                      1
Core(s) per socket:                      2
Flags:                                   fpu sse2 fma avx avx2 avx512f avx512_bf16 avx512_vnni
"""
ZEN4_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
cpu MHz\t\t: 2596.138
flags\t\t: fpu sse2 fma avx avx2 avx512f

processor\t: 1
cpu MHz\t\t: 9999.000
"""
XEON_LSCPU = """Vendor ID:               GenuineIntel
Model name:              Intel(R) Xeon(R) Platinum 8480+
CPU family:              6
Model:                   143
Thread(s) per core:      2
CPU max MHz:             3800.0000
CPU min MHz:             800.0000
Flags:                   fpu fma avx avx2 avx512f amx_tile
"""


def test_the_theoretical_peak_of_zen_4_counts_its_256_bit_fma_pipes():
    t = theoretical_peak(read_cpu(ZEN4_LSCPU, ZEN4_CPUINFO), cpus=2)
    # AVX-512 on Zen 4 runs as two 256-bit halves: 8 lanes x 2 (multiply-add) x 2 FMA units, not 16 lanes
    assert (t.flops_per_cycle, t.cores, t.ghz) == (32, 2, pytest.approx(2.596138))
    assert t.gflops_per_s == pytest.approx(32 * 2 * 2.596138)
    assert "Zen 3/Zen 4" in t.basis and "/proc/cpuinfo" in t.clock  # the first processor's clock, no max MHz
    # the measured rate above it: the line says the cores ran faster than the clock read
    e = efficiency("fp32", "r", 100, 1.0, peak("onnxruntime", "fp32", 187), t)
    assert "theoretical peak 166 GFLOP/s = 2 cores x 32 FLOP/cycle x 2.60 GHz" in lines(e)[0]
    assert "the cores ran at ≥ 2.92 GHz" in lines(e)[0]
    assert theoretical_peak(read_cpu("", ZEN4_CPUINFO), cpus=2).gflops_per_s == t.gflops_per_s  # no lscpu


def test_the_cpu_identity_is_read_from_proc_cpuinfo_and_names_the_baseline_file():
    """The identity the int8 choice and the bench gate key on (engines/cpu.py): model name, vendor, family, model,
    stepping; the instruction-set extensions beside it, for people."""
    from engines.cpu import identity_of
    from kd.manifest import colon_fields

    fields = colon_fields(ZEN4_CPUINFO.replace("model\t\t: 17", "model\t\t: 17\nstepping\t: 1")
                          .replace("avx512f", "avx512f avx512_vnni avx512_bf16"))
    zen4 = identity_of(fields, "AMD EPYC")
    assert zen4.key == "AMD EPYC, vendor_id AuthenticAMD, cpu family 25, model 17, stepping 1"
    assert zen4.isa == ("AVX2", "AVX-512", "AVX-512 VNNI", "AVX-512 BF16") and zen4.slug == "amd-epyc-f25m17s1"
    # a Zen 3 shows the same model name: another CPU all the same
    assert not zen4.same_cpu(identity_of({**fields, "model": "1"}, "AMD EPYC"))
    assert identity_of({}, "Apple M2").slug == "apple-m2" and identity_of({}, "Apple M2").key == "Apple M2"


def test_an_unknown_family_assumes_two_fma_units_and_says_so():
    t = theoretical_peak(read_cpu(XEON_LSCPU, ""), cpus=8)
    assert (t.cores, t.flops_per_cycle, t.ghz) == (4, 64, 3.8)  # SMT siblings share a core's FMA units
    assert t.gflops_per_s == pytest.approx(4 * 64 * 3.8) and "assumes 2 FMA units" in t.basis
    assert "max MHz" in t.clock


def test_no_theoretical_peak_is_claimed_without_a_clock_or_a_vector_width():
    no_clock = theoretical_peak(read_cpu(ZEN4_LSCPU, ""), cpus=2)
    assert no_clock.gflops_per_s is None and "not readable" in no_clock.clock
    line = lines(efficiency("fp32", "r", 50, 1.0, peak("pytorch", "fp32", 100), no_clock))[0]
    assert "no theoretical peak: the clock is not readable" in line
    no_fma = theoretical_peak(read_cpu(ZEN4_LSCPU.replace("fma avx avx2 avx512f", "avx"), ZEN4_CPUINFO), cpus=2)
    assert no_fma.gflops_per_s is None and "FMA width is unknown" in no_fma.basis


@pytest.mark.parametrize("engine,precision", [("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                              ("openvino", "fp32"), ("openvino", "int8")])
def test_a_small_real_measurement(engine, precision):
    stick = Stick(engine, precision, 256)
    if unavailable(stick):
        pytest.skip(unavailable(stick))
    measured = measure(stick, threads=1, seconds=0.1, max_calls=3)
    assert measured.gflops_per_s > 0 and (measured.matrix, measured.threads) == (256, 1)
    if engine == "openvino":  # the hint and the FakeQuantize did take: f32 is not run as bf16, int8 as u8 x s8
        assert runtime_precisions(stick) == {"f32" if precision == "fp32" else "u8"}
