"""The Pareto view: accuracy against batch-1 latency and against batch-32 throughput, one point per row; the
rows no other row beats on both axes are joined (those are the ones worth shipping)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from bench.records import BenchSummary

COLORS = {"teacher": "tab:blue", "baseline": "tab:orange", "distilled": "tab:green"}
MARKERS = {("pytorch", "fp32"): "o", ("pytorch", "fp16"): "^", ("pytorch", "bf16"): "v",
           ("onnxruntime", "fp32"): "s", ("onnxruntime", "int8"): "D",
           ("openvino", "fp32"): "P", ("openvino", "bf16"): "X", ("openvino", "int8"): "*"}


def frontier(points: list[tuple[float, float]], lower_is_better: bool) -> list[tuple[float, float]]:
    """Points not beaten on both axes (x: speed measure, y: accuracy), in x order."""
    ordered = sorted(points, key=lambda p: (p[0], -p[1]) if lower_is_better else (-p[0], -p[1]))
    best, kept = float("-inf"), []
    for x, y in ordered:
        if y > best:
            kept.append((x, y))
            best = y
    return kept


def pareto_png(summary: BenchSummary) -> bytes:
    rows = [r for r in summary.rows if r.accuracy is not None]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    panels = ((axes[0], "p50_ms", "batch-1 latency p50 (ms, log scale) — lower is better", True),
              (axes[1], "samples_per_s", "batch-32 throughput (samples/s, log scale) — higher is better", False))
    for ax, key, label, lower in panels:
        points = {}
        for r in rows:
            if getattr(r, key) is None:
                continue
            x, y = getattr(r, key), 100 * r.accuracy
            points[(x, y)] = r
            ax.scatter(x, y, color=COLORS.get(r.model, "gray"), s=60, edgecolor="black", linewidth=0.5,
                       marker=MARKERS.get((r.backend, r.precision), "x"))
        front = frontier(list(points), lower)
        if len(front) > 1:
            ax.plot(*zip(*front), "--", color="gray", linewidth=1)
        for x, y in front:  # only the front is labelled: the rest are beaten on both axes
            r = points[(x, y)]
            ax.annotate(f"{r.model} {r.backend} {r.precision}" + ("" if r.device == "cpu" else
                        f" ({r.device})"), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, c in COLORS.items()]
    handles += [plt.Line2D([], [], color="gray", marker=mk, linestyle="", label=f"{b} {p}")
                for (b, p), mk in MARKERS.items() if any((r.backend, r.precision) == (b, p) for r in rows)]
    handles.append(plt.Line2D([], [], color="gray", linestyle="--", label="Pareto front (labelled)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    fig.suptitle(f"{summary.config.get('run_dir')}: which model and backend to ship")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
