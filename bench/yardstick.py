"""The yardstick for the bench's achieved GFLOP/s: the best large matrix-product rate any engine of the bench
reaches on this CPU, per precision (fp32, bf16, int8), and, where the OS lets it be read, the theoretical peak.

One engine's BLAS path is no yardstick: torch.mm runs well below ONNX Runtime's MatMul on some CPUs, so a student in
ONNX Runtime measured against it can come out above 100 %. A fraction above 100 % is a measurement fault, and this
module never prints one (`efficiency`). The theoretical peak comes from bench/cpu.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from bench.cpu import Theoretical, theoretical_text

PRECISIONS = ("fp32", "bf16", "int8")  # the bench's CPU row precisions, each with its own yardstick


@dataclass(frozen=True)
class Stick:
    """One engine's n x n matrix product in one precision: what is timed."""

    engine: str  # pytorch, onnxruntime, openvino
    precision: str  # fp32, int8, bf16
    matrix: int

    @property
    def op(self) -> str:
        return OPS[(self.engine, self.precision)]

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.precision}-{self.matrix}"

    @property
    def ops_per_call(self) -> int:
        return 2 * self.matrix**3  # a multiply-add is two operations, in floats and in ints alike


# The bench times each engine on one size: 1024² gave the best rate of each precision on the AMD CPUs measured
# (docs/bench.md), and larger products take many times as long per call without a higher rate.
BENCH_SIZES = (1024,)
OPS = {
    ("pytorch", "fp32"): "torch.mm",
    ("onnxruntime", "fp32"): "MatMul",
    ("onnxruntime", "int8"): "MatMulInteger u8 x s8",
    ("openvino", "fp32"): "MatMul, INFERENCE_PRECISION_HINT f32",
    ("openvino", "bf16"): "MatMul, INFERENCE_PRECISION_HINT bf16",
    ("openvino", "int8"): "MatMul between FakeQuantize u8 x s8",
}
BENCH_STICKS = tuple(Stick(e, p, n) for e, p in OPS if p in PRECISIONS for n in BENCH_SIZES)


@dataclass(frozen=True)
class Peak:
    """A measured matrix-product rate: GFLOP/s (GOP/s for int8) of the fastest call."""

    engine: str
    precision: str
    op: str
    matrix: int
    threads: int
    gflops_per_s: float

    @classmethod
    def of(cls, stick: Stick, threads: int, best_seconds: float) -> Peak:
        return cls(stick.engine, stick.precision, stick.op, stick.matrix, threads,
                   stick.ops_per_call / best_seconds / 1e9)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Peak:
        """From to_json's dict (a bench record may carry other keys beside them)."""
        return cls(**{f: data[f] for f in ("engine", "precision", "op", "matrix", "threads", "gflops_per_s")})

    @property
    def name(self) -> str:
        op = self.op.split(",")[0]
        return f"{op if op.startswith('torch.') else f'{self.engine} {op}'} {self.matrix}²"


def unavailable(stick: Stick) -> str | None:
    """Why this machine cannot run the stick (its engine not installed, no bf16 on this CPU), else None."""
    from engines import engine

    return engine(stick.engine).unavailable("cpu", stick.precision)


def prepare(stick: Stick, threads: int) -> Callable[[], object]:
    """A no-argument call that runs the product once, inputs made and the engine warmed up beforehand. The
    second operand is a constant, as the models' weights are (ONNX Runtime and OpenVINO pre-pack it)."""
    rng = np.random.default_rng(0)
    n = stick.matrix
    if stick.precision == "int8":
        a, b = rng.integers(0, 256, (n, n), dtype=np.uint8), rng.integers(-128, 128, (n, n), dtype=np.int8)
    else:
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    call = {"pytorch": _torch, "onnxruntime": _onnxruntime, "openvino": _openvino}[stick.engine](stick, threads, a, b)
    call()
    return call


def _torch(stick: Stick, threads: int, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)  # the bench's conftest sets the same; a standalone caller gets it too
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: torch.mm(ta, tb)


def _onnxruntime(stick: Stick, threads: int, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from engines.sessions.onnxruntime import session_options

    kind = TensorProto.UINT8 if stick.precision == "int8" else TensorProto.FLOAT
    out = TensorProto.INT32 if stick.precision == "int8" else TensorProto.FLOAT
    node = helper.make_node("MatMulInteger" if stick.precision == "int8" else "MatMul", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], "yardstick", [helper.make_tensor_value_info("A", kind, a.shape)],
                              [helper.make_tensor_value_info("Y", out, a.shape)], [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # as torch.onnx writes
    # the bench's session options (graph optimizations, one inter-op thread), threads as asked; whether idle
    # threads spin does not matter to calls this long
    opts = session_options()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a})


def _openvino(stick: Stick, threads: int, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    request = _openvino_compiled(stick, threads, b).create_infer_request()
    a = a.astype(np.float32)  # int8: the model's input is float; its FakeQuantize makes it u8
    return lambda: request.infer({0: a})


def _openvino_compiled(stick: Stick, threads: int, b: np.ndarray):
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([stick.matrix] * 2, ov.Type.f32, name="A")
    if stick.precision == "int8":
        # FakeQuantize on both operands: OpenVINO's low-precision pass turns the MatMul into a u8 x s8 product
        left = ops.fake_quantize(x, 0.0, 255.0, 0.0, 255.0, 256)
        right = ops.fake_quantize(ops.constant(b.astype(np.float32)), -128.0, 127.0, -128.0, 127.0, 256)
    else:
        left, right = x, ops.constant(b)
    model = ov.Model([ops.matmul(left, right, False, False)], [x], "yardstick")
    # On a CPU with bf16, OpenVINO's default runs an "fp32" model in bf16: the fp32 yardstick says f32 outright
    hint = "bf16" if stick.precision == "bf16" else "f32"
    # LATENCY: one stream with every thread on the one request (THROUGHPUT would split the threads over streams)
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                                  "PERFORMANCE_HINT": "LATENCY"})


def runtime_precisions(stick: Stick, threads: int = 1) -> set[str]:
    """OpenVINO only: the precisions its compiled matrix product runs in (to check that the hint or the
    FakeQuantize took effect)."""
    b = np.ones([stick.matrix] * 2, np.int8 if stick.precision == "int8" else np.float32)
    runtime = _openvino_compiled(stick, threads, b).get_runtime_model()
    return {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()
            if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")}


def measure(stick: Stick, threads: int, seconds: float = 1.0, max_calls: int = 10) -> Peak:
    """Outside pytest-benchmark (the bench times the prepared call itself): the fastest of up to `max_calls`
    calls within about `seconds`, after one warm-up call."""
    call = prepare(stick, threads)
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < max_calls and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return Peak.of(stick, threads, min(times))  # timeit's rule: interference only ever slows a call down


def best(peaks: list[Peak], precision: str) -> Peak | None:
    """The yardstick of a precision: the fastest engine's rate."""
    return max((p for p in peaks if p.precision == precision), key=lambda p: p.gflops_per_s, default=None)


# --- the fastest student path against the yardstick ------------------------------------------------------------

UNIT = {"int8": "GOP/s"}  # int8 rows: the same operation count as fp32, their matrix products done in int8


@dataclass(frozen=True)
class Efficiency:
    """The fastest student row of a precision on the CPU: its achieved rate, and its share of the yardstick.

    `fraction_of_peak` is never above 1. A row faster than every matrix product measured in the same bench means
    the yardstick was measured low (a slow spell on a busy host, or a faster engine not measured): then no
    fraction is given and `fault` says why. Raising the yardstick to the row's rate would print 100 %, which
    is no more true."""

    precision: str
    row: str
    gflops_per_s: float
    useful_token_share: float
    yardstick: Peak | None
    fraction_of_peak: float | None
    fault: str | None = None
    theoretical: Theoretical | None = None

    def __post_init__(self):
        if self.fraction_of_peak is not None and not 0 < self.fraction_of_peak <= 1:
            raise ValueError(f"{self.row}: a fraction of the yardstick of {self.fraction_of_peak:.0%} is a fault")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Efficiency:
        """Made again under the rule above, never trusted as stored."""
        yardstick = Peak.from_json(data["yardstick"]) if data["yardstick"] else None
        return efficiency(data["precision"], data["row"], data["gflops_per_s"], data["useful_token_share"],
                          yardstick, Theoretical.from_json(data["theoretical"]))


def efficiency(precision: str, row: str, rate: float, useful: float, yardstick: Peak | None,
               theoretical: Theoretical | None = None) -> Efficiency:
    """The one place a fraction of the yardstick is made (see Efficiency for the rule above 100 %)."""
    if yardstick is None:
        return Efficiency(precision, row, rate, useful, None, None, None, theoretical)
    if rate > yardstick.gflops_per_s:
        fault = (f"it ran faster than the best {precision} matrix product measured in the same bench, so that "
                 "yardstick was measured low (a slow spell on a busy host?) and no fraction is given")
        return Efficiency(precision, row, rate, useful, yardstick, None, fault, theoretical)
    return Efficiency(precision, row, rate, useful, yardstick, rate / yardstick.gflops_per_s, None, theoretical)


def compute_efficiency(rows: list, peaks: list[Peak], theoretical: Theoretical | None = None
                       ) -> dict[str, Efficiency]:
    """Per precision of PRECISIONS: the fastest (batch-32 samples/s) student row on the CPU with a GFLOP/s,
    against the best measured matrix-product rate of that precision. The theoretical peak is fp32's only: the
    int8 dot-product throughput per core is not readable from the OS."""
    out = {}
    for precision in PRECISIONS:
        candidates = [r for r in rows if r.device == "cpu" and r.precision == precision
                      and r.model != "teacher" and r.gflops_per_s]
        if candidates:
            top = max(candidates, key=lambda r: r.samples_per_s)
            out[precision] = efficiency(precision, top.row, top.gflops_per_s,
                                        top.real_tokens / top.padded_tokens, best(peaks, precision),
                                        theoretical if precision == "fp32" else None)
    return out


def sentence(e: Efficiency) -> str:
    """The summary's line for one precision."""
    unit = UNIT.get(e.precision, "GFLOP/s")
    text = (f"Fastest {e.precision} student path: {e.row} at {e.gflops_per_s:.0f} {unit} (FLOPs counted from the "
            f"model shape and the padded batches; {e.useful_token_share:.0%} of the tokens are real, the rest padding")
    text += ")" if e.precision == "fp32" else f"; its matrix products run in {e.precision})"
    y = e.yardstick
    if y is None:
        return text + f"; no {e.precision} matrix-product rate was measured in this bench."
    stick = f"{y.name}, {y.gflops_per_s:.0f} {unit}, {y.threads} threads"
    if e.theoretical:
        stick += f"; {theoretical_text(e.theoretical, max(y.gflops_per_s, e.gflops_per_s))}"
    if e.fraction_of_peak is None:  # (Efficiency refuses one above 1)
        return text + f": {e.fault} ({stick})."
    return text + (f" = {e.fraction_of_peak:.0%} of the best {e.precision} matrix-product rate measured on this "
                   f"CPU ({stick}).")


def summary_sentences(found: dict[str, Efficiency]) -> list[str]:
    """The efficiency lines of a bench summary, one per precision it has, each made again under Efficiency's rule
    (never trusted as stored)."""
    return [sentence(efficiency(e.precision, e.row, e.gflops_per_s, e.useful_token_share, e.yardstick, e.theoretical))
            for e in found.values()]
