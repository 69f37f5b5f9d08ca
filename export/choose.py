"""The two choices an export makes by measurement: which fp32 graph to ship (plain or fused) and which int8
variant (weight type, per-channel), each checked against the PyTorch reference."""

from __future__ import annotations

import time
from pathlib import Path

from export.config import ExportConfig
from export.engines import Runner, engine, load
from export.optimize import heads_and_hidden, optimize_graph
from export.parity import Check, ExportGateError, Outputs, ParitySet, fp32_failures, int8_failures
from export.quantize import quantize
from export.timing import clearly_faster, faster

ONNX = engine("onnxruntime")


def onnx_runner(path: Path) -> Runner:
    """A graph in ONNX Runtime with the session options the bench and `kd predict` use."""
    return load(ONNX.name, path).run


def run_graph(parity: ParitySet, path: Path, what: str, full: bool = True) -> Outputs:
    """A graph's outputs on the parity set; one that cannot even run on the tokenizer's arrays fails the gate."""
    try:
        return parity.run(onnx_runner(path), full)
    except (KeyError, *ONNX.errors) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise ExportGateError(f"{what} does not run on the tokenizer's inputs: {message}") from None


def checked(parity: ParitySet, path: Path, reference: Outputs, what: str, full: bool = True) -> Check:
    return parity.compare(run_graph(parity, path, what, full), reference)


def speed_matters(cfg: ExportConfig) -> bool:
    """False when no contender could ever be faster by the margin (speed_margin >= 1): then nothing is timed."""
    return cfg.speed_margin < 1


def choose_fp32(plain_path: Path, fused_path: Path, config, parity: ParitySet, reference: Outputs,
                speed_batches: list[dict], cfg: ExportConfig, name: str, report: dict) -> tuple[str, Check, Path]:
    """(graph kept, its check, the graph to quantize). Both graphs are checked on the probes and timed (unless
    speed_margin >= 1); the whole validation split then checks the one kept (and the plain one when the fused
    one fails there)."""
    plain = checked(parity, plain_path, reference, f"{name}: fp32 ONNX", full=False)
    report["fp32_candidates"] = {"plain": plain.to_dict()}
    graph, int8_source = "plain", plain_path
    if cfg.optimize == "never":
        report["graph_choice"] = "plain (optimize=never)"
    else:
        t0 = time.perf_counter()
        fused_ops = optimize_graph(plain_path, fused_path, *heads_and_hidden(config))
        optimize_seconds = time.perf_counter() - t0
        fused = checked(parity, fused_path, reference, f"{name}: fused fp32 ONNX", full=False)
        report["fp32_candidates"]["fused"] = {**fused.to_dict(), "fused_ops": fused_ops,
                                              "optimize_seconds": optimize_seconds}
        timing, faster_fused = "", False
        if speed_matters(cfg):
            times = faster({"plain": onnx_runner(plain_path), "fused": onnx_runner(fused_path)},
                           speed_batches)
            for which in ("plain", "fused"):
                report["fp32_candidates"][which]["timed_seconds"] = times[which]
            timing = (f": fused {times['fused'] * 1e3:.0f} ms vs plain {times['plain'] * 1e3:.0f} ms on the timing "
                      "batches")
            faster_fused = clearly_faster(times["fused"], times["plain"], cfg.speed_margin)
        probes_pass = not fp32_failures(fused, cfg.gates)
        if probes_pass:
            int8_source = fused_path  # fused attention quantizes better and runs faster as int8
        why = ("optimize=always" if cfg.optimize == "always" else "fused graph fails the gates" if not probes_pass
               else f"passes the gates and is over {cfg.speed_margin:.0%} faster" if faster_fused
               else f"fused graph is not over {cfg.speed_margin:.0%} faster" if speed_matters(cfg)
               else "no choice on speed (speed_margin >= 1)")
        if cfg.optimize == "always" or (probes_pass and faster_fused):
            fused = checked(parity, fused_path, reference, f"{name}: fused fp32 ONNX")
            report["fp32_candidates"]["fused"].update(fused.to_dict())
            if cfg.optimize == "always" or not fp32_failures(fused, cfg.gates):
                graph = "fused"
            else:
                why = "fused graph fails the gates on the validation split"
        report["graph_choice"] = f"{graph} ({why}{timing})"
    if graph == "fused":
        return graph, fused, int8_source
    plain = checked(parity, plain_path, reference, f"{name}: fp32 ONNX")
    report["fp32_candidates"]["plain"].update(plain.to_dict())
    return graph, plain, int8_source


def choose_int8(source: Path, folder: Path, fp32: Check, parity: ParitySet, reference: Outputs,
                speed_batches: list[dict], cfg: ExportConfig, name: str, say, report: dict) -> tuple[str, str]:
    """(variant, why); each candidate's record goes into report["int8_candidates"], also when all fail.

    Every variant is screened on the first `int8_screen_rows` validation
    rows; the `int8_finalists` most accurate then run the rest of the split (more if none passes), and the
    most accurate finalist that passes the gates wins; of those within `int8_tie` of it, the fastest replaces
    it only when over `speed_margin` faster."""
    head, tail = parity.split(cfg.int8_screen_rows)
    head_ref = reference.head(cfg.int8_screen_rows)
    records, screened = report.setdefault("int8_candidates", {}), {}
    for candidate in cfg.int8_candidates:
        path = folder / f"int8-{candidate}.onnx"
        t0 = time.perf_counter()
        quantize(source, path, candidate)
        records[candidate] = {"quantize_seconds": time.perf_counter() - t0, "size_mb": path.stat().st_size / 2**20}
        t0 = time.perf_counter()
        screened[candidate] = run_graph(head, path, f"{name}: int8 {candidate}")
        records[candidate]["seconds"] = time.perf_counter() - t0
        screen = head.compare(screened[candidate], head_ref)
        records[candidate]["screen"] = {"rows": len(head.texts), "accuracy": screen.accuracy,
                                        "agreement": screen.agreement}
    ranked = sorted(cfg.int8_candidates, key=lambda c: (-records[c]["screen"]["accuracy"],
                                                        -records[c]["screen"]["agreement"]))
    passing = []
    for i, candidate in enumerate(ranked):
        if i >= cfg.int8_finalists and passing:
            break
        outputs = screened[candidate]
        if tail.texts:  # (a validation split no larger than the screen has no rest)
            t0 = time.perf_counter()
            outputs = outputs.join(run_graph(tail, folder / f"int8-{candidate}.onnx", f"{name}: int8 {candidate}"))
            records[candidate]["seconds"] += time.perf_counter() - t0
        check = parity.compare(outputs, reference)
        failures = int8_failures(check, fp32, cfg.gates)
        records[candidate].update(check.to_dict(), failures=failures)
        say(f"int8 {candidate}: validation accuracy {check.accuracy:.2%}, agreement {check.agreement:.2%}"
            + (f" (fails: {'; '.join(failures)})" if failures else ""))
        if not failures:
            passing.append(candidate)
    if not passing:
        worst = "; ".join(f"{c}: {', '.join(records[c]['failures'])}" for c in ranked if "failures" in records[c])
        raise ExportGateError(f"{name}: no int8 variant passes the gates ({worst})")
    best = max(records[c]["accuracy"] for c in passing)
    tied = sorted((c for c in passing if records[c]["accuracy"] >= best - cfg.int8_tie),
                  key=lambda c: -records[c]["accuracy"])  # stable: ranked order on equal accuracy
    if len(tied) > 1 and speed_matters(cfg):
        times = faster({c: onnx_runner(folder / f"int8-{c}.onnx") for c in tied}, speed_batches)
        for candidate in tied:
            records[candidate]["timed_seconds"] = times[candidate]
    chosen = pick_int8(tied, records, cfg.speed_margin)
    tie = ""
    if len(tied) > 1:
        tie = (f"; of {', '.join(tied)}, within {cfg.int8_tie * 100:.2g} pt, "
               + ("the fastest" if chosen != tied[0] else f"none is over {cfg.speed_margin:.0%} faster"
                  if speed_matters(cfg) else "the most accurate (no choice on speed)"))
    why = (f"{chosen} (best validation accuracy of the finalists that pass the gates{tie}; screened on "
           f"{len(head.texts)} rows: {', '.join(ranked)})")
    return chosen, why


def pick_int8(tied: list[str], records: dict[str, dict], margin: float) -> str:
    """Of variants equally accurate within the tie (most accurate first), the most accurate, unless the fastest
    beats it by over `margin` on the timing batches."""
    first = tied[0]
    if any("timed_seconds" not in records[c] for c in tied):  # one variant, or speed_margin >= 1: not timed
        return first
    fastest = min(tied, key=lambda c: records[c]["timed_seconds"])
    return fastest if clearly_faster(records[fastest]["timed_seconds"], records[first]["timed_seconds"],
                                     margin) else first


def choose_int8_source(plain_path: Path, fused_int8: Path, variant: str, folder: Path, fp32: Check,
                       parity: ParitySet, reference: Outputs, speed_batches: list[dict], cfg: ExportConfig,
                       name: str, report: dict) -> tuple[Path, str]:
    """The chosen int8 variant, quantized from the plain graph as well as from the fused one: the fused graph's
    QAttention and SkipLayerNormalization ran slower in int8 than the plain graph's separate ops on this
    project's CPU (3-layer student: 615 vs 791 samples/s at batch 32). (int8 file to ship, why): the fused one
    unless the plain one passes the gates, is as accurate (within `int8_tie`) and is over `speed_margin` faster."""
    if not speed_matters(cfg):  # the plain graph's int8 could only win on speed
        return fused_int8, "fused (no choice on speed: speed_margin >= 1)"
    plain_int8 = folder / f"int8-{variant}-plain.onnx"
    quantize(plain_path, plain_int8, variant)
    check = checked(parity, plain_int8, reference, f"{name}: int8 {variant} from the plain graph")
    failures = int8_failures(check, fp32, cfg.gates)
    fused_accuracy = report["int8_candidates"][variant]["accuracy"]
    times = faster({"fused": onnx_runner(fused_int8), "plain": onnx_runner(plain_int8)},
                   speed_batches)
    report["int8_from_plain"] = {**check.to_dict(), "failures": failures, "timed_seconds": times}
    timing = f"fused {times['fused'] * 1e3:.0f} ms vs plain {times['plain'] * 1e3:.0f} ms on the timing batches"
    if failures:
        return fused_int8, f"fused (the plain graph's int8 fails: {'; '.join(failures)})"
    if check.accuracy < fused_accuracy - cfg.int8_tie:
        return fused_int8, f"fused (more accurate: {fused_accuracy:.2%} vs {check.accuracy:.2%})"
    if not clearly_faster(times["plain"], times["fused"], cfg.speed_margin):
        return fused_int8, f"fused (the plain graph's is not over {cfg.speed_margin:.0%} faster: {timing})"
    return plain_int8, f"plain (as accurate and over {cfg.speed_margin:.0%} faster: {timing})"
