"""The two choices an export makes by measurement: which fp32 graph to ship (plain or fused) and which int8
variant (weight type, per-channel), each checked against the PyTorch reference.

Each choice works from one `ChoiceContext` and returns a typed result (what was chosen, why, its Check, the
candidates' records); export/exporter.py writes export_report.json from those results."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from export.config import ExportConfig
from export.engines import Runner, engine, load
from export.optimize import heads_and_hidden, optimize_graph
from export.parity import Check, ExportGateError, Outputs, ParitySet, fp32_failures, int8_failures
from export.quantize import is_static, quantize
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


@contextmanager
def evidence(**records: dict) -> Iterator[None]:
    """A gate failure inside carries these records, as they stand when it is raised, to <model>.failed.json."""
    try:
        yield
    except ExportGateError as exc:
        exc.evidence = {**records, **exc.evidence}
        raise


@dataclass
class ChoiceContext:
    """What every choice works from."""

    parity: ParitySet  # the validation texts and the probes
    reference: Outputs  # PyTorch's outputs on them
    speed_batches: list[dict]  # the timing batches
    cfg: ExportConfig
    name: str  # the model, for messages
    say: Callable[[str], None]  # progress lines
    folder: Path  # where the candidate graphs are written
    calibration: list[dict]  # tokenized training batches for the static int8 variants
    plain_graph: Path  # the unfused fp32 graph, which the static variants are quantized from

    @property
    def speed_matters(self) -> bool:
        """False when no contender could ever be faster by the margin (speed_margin >= 1): then nothing is
        timed."""
        return self.cfg.speed_margin < 1

    def checked(self, path: Path, what: str, full: bool = True) -> Check:
        """The graph against PyTorch: on the probes, and (full) on the whole validation split."""
        return self.parity.compare(run_graph(self.parity, path, f"{self.name}: {what}", full), self.reference)

    def timed(self, graphs: dict[str, Path]) -> dict[str, float]:
        """Seconds each graph takes over the timing batches (interleaved, best of several rounds)."""
        return faster({which: onnx_runner(path) for which, path in graphs.items()}, self.speed_batches)


@dataclass
class Choice:
    chosen: str
    why: str

    def __str__(self) -> str:
        return f"{self.chosen} ({self.why})"


@dataclass
class Fp32Choice(Choice):
    """`chosen`: the graph that ships as model.onnx, "plain" or "fused"."""

    check: Check  # the chosen graph's, on the probes and the whole validation split
    int8_source: Path  # the graph the int8 variants are quantized from
    candidates: dict[str, dict]  # each graph's check (and the fused one's operators and timings)


@dataclass
class Int8Choice(Choice):
    """`chosen`: the int8 variant (export/quantize.py's CANDIDATES)."""

    check: Check  # the chosen variant's, on the probes and the whole validation split
    file: Path  # its graph, quantized from Fp32Choice.int8_source
    candidates: dict[str, dict]  # every variant's record, also those screened out or failing the gates


@dataclass
class Int8SourceChoice(Choice):
    """`chosen`: the graph the shipped int8 file is quantized from, "fused" or "plain"."""

    file: Path  # the int8 file that ships
    check: Check | None  # the plain graph's int8, where it was tried
    record: dict | None  # its check, failures and the two timings (export_report.json's int8_from_plain)


def choose_fp32(ctx: ChoiceContext, plain_path: Path, fused_path: Path, config) -> Fp32Choice:
    """Both graphs are checked on the probes and timed (unless speed_margin >= 1); the whole validation split
    then checks the one kept (and the plain one when the fused one fails there)."""
    cfg = ctx.cfg
    records: dict[str, dict] = {}
    with evidence(fp32_candidates=records):
        plain = ctx.checked(plain_path, "fp32 ONNX", full=False)
        records["plain"] = plain.to_dict()
        graph, int8_source = "plain", plain_path
        if cfg.optimize == "never":
            why = "optimize=never"
        else:
            t0 = time.perf_counter()
            fused_ops = optimize_graph(plain_path, fused_path, *heads_and_hidden(config))
            optimize_seconds = time.perf_counter() - t0
            fused = ctx.checked(fused_path, "fused fp32 ONNX", full=False)
            records["fused"] = {**fused.to_dict(), "fused_ops": fused_ops, "optimize_seconds": optimize_seconds}
            timing, faster_fused = "", False
            if ctx.speed_matters:
                times = ctx.timed({"plain": plain_path, "fused": fused_path})
                for which in ("plain", "fused"):
                    records[which]["timed_seconds"] = times[which]
                timing = (f": fused {times['fused'] * 1e3:.0f} ms vs plain {times['plain'] * 1e3:.0f} ms on the "
                          "timing batches")
                faster_fused = clearly_faster(times["fused"], times["plain"], cfg.speed_margin)
            probes_pass = not fp32_failures(fused, cfg.gates)
            if probes_pass:
                int8_source = fused_path  # fused attention quantizes better and runs faster as int8
            why = ("optimize=always" if cfg.optimize == "always" else "fused graph fails the gates" if not probes_pass
                   else f"passes the gates and is over {cfg.speed_margin:.0%} faster" if faster_fused
                   else f"fused graph is not over {cfg.speed_margin:.0%} faster" if ctx.speed_matters
                   else "no choice on speed (speed_margin >= 1)")
            if cfg.optimize == "always" or (probes_pass and faster_fused):
                fused = ctx.checked(fused_path, "fused fp32 ONNX")
                records["fused"].update(fused.to_dict())
                if cfg.optimize == "always" or not fp32_failures(fused, cfg.gates):
                    graph = "fused"
                else:
                    why = "fused graph fails the gates on the validation split"
            why += timing
        if graph == "fused":
            return Fp32Choice(graph, why, fused, int8_source, records)
        plain = ctx.checked(plain_path, "fp32 ONNX")
        records["plain"].update(plain.to_dict())
    return Fp32Choice(graph, why, plain, int8_source, records)


def choose_int8(ctx: ChoiceContext, source: Path, fp32: Check) -> Int8Choice:
    """Every variant is screened on the first `int8_screen_rows` validation rows; the `int8_finalists` most
    accurate then run the rest of the split (more if none passes), and the most accurate finalist that passes
    the gates wins; of those within `int8_tie` of it, the fastest replaces it only when over `speed_margin`
    faster. Fails (with every candidate's record as evidence) when none passes."""
    cfg, parity, reference = ctx.cfg, ctx.parity, ctx.reference
    head, tail = parity.split(cfg.int8_screen_rows)
    head_ref = reference.head(cfg.int8_screen_rows)
    records: dict[str, dict] = {}
    screened: dict[str, Outputs] = {}
    checks: dict[str, Check] = {}
    path = {c: ctx.folder / f"int8-{c}.onnx" for c in cfg.int8_candidates}
    with evidence(int8_candidates=records):
        for candidate in cfg.int8_candidates:
            t0 = time.perf_counter()
            origin = ctx.plain_graph if is_static(candidate) else source
            quantize(origin, path[candidate], candidate, ctx.calibration)
            records[candidate] = {"quantize_seconds": time.perf_counter() - t0,
                                  "source": "plain" if origin == ctx.plain_graph else "fused",
                                  "size_mb": path[candidate].stat().st_size / 2**20}
            t0 = time.perf_counter()
            screened[candidate] = run_graph(head, path[candidate], f"{ctx.name}: int8 {candidate}")
            # its validation passes (sessions created, screen and rest of the split): recorded, not compared
            records[candidate]["validation_seconds"] = time.perf_counter() - t0
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
                outputs = outputs.join(run_graph(tail, path[candidate], f"{ctx.name}: int8 {candidate}"))
                records[candidate]["validation_seconds"] += time.perf_counter() - t0
            checks[candidate] = check = parity.compare(outputs, reference)
            failures = int8_failures(check, fp32, cfg.gates)
            records[candidate].update(check.to_dict(), failures=failures)
            ctx.say(f"int8 {candidate}: validation accuracy {check.accuracy:.2%}, agreement {check.agreement:.2%}"
                    + (f" (fails: {'; '.join(failures)})" if failures else ""))
            if not failures:
                passing.append(candidate)
        if not passing:
            worst = "; ".join(f"{c}: {', '.join(records[c]['failures'])}" for c in ranked
                              if "failures" in records[c])
            raise ExportGateError(f"{ctx.name}: no int8 variant passes the gates ({worst})")
    best = max(checks[c].accuracy for c in passing)
    tied = sorted((c for c in passing if checks[c].accuracy >= best - cfg.int8_tie),
                  key=lambda c: -checks[c].accuracy)  # stable: ranked order on equal accuracy
    if len(tied) > 1 and ctx.speed_matters:
        times = ctx.timed({c: path[c] for c in tied})
        for candidate in tied:
            records[candidate]["timed_seconds"] = times[candidate]
    chosen = pick_int8(tied, records, cfg.speed_margin)
    tie = ""
    if len(tied) > 1:
        tie = (f"; of {', '.join(tied)}, within {cfg.int8_tie * 100:.2g} pt, "
               + ("the fastest" if chosen != tied[0] else f"none is over {cfg.speed_margin:.0%} faster"
                  if ctx.speed_matters else "the most accurate (no choice on speed)"))
    why = (f"best validation accuracy of the finalists that pass the gates{tie}; screened on {len(head.texts)} "
           f"rows: {', '.join(ranked)}")
    return Int8Choice(chosen, why, checks[chosen], path[chosen], records)


def pick_int8(tied: list[str], records: dict[str, dict], margin: float) -> str:
    """Of variants equally accurate within the tie (most accurate first), the most accurate, unless the fastest
    beats it by over `margin` on the timing batches."""
    first = tied[0]
    if any("timed_seconds" not in records[c] for c in tied):  # one variant, or speed_margin >= 1: not timed
        return first
    fastest = min(tied, key=lambda c: records[c]["timed_seconds"])
    return fastest if clearly_faster(records[fastest]["timed_seconds"], records[first]["timed_seconds"],
                                     margin) else first


def choose_int8_source(ctx: ChoiceContext, plain_path: Path, int8: Int8Choice, fp32: Check) -> Int8SourceChoice:
    """The chosen int8 variant (quantized from the fused graph), quantized from the plain graph as well: the fused
    graph's QAttention and SkipLayerNormalization ran slower in int8 than the plain graph's separate ops on this
    project's CPU (3-layer student: 615 vs 791 samples/s at batch 32). The fused one ships unless the plain one
    passes the gates, is as accurate (within `int8_tie`) and is over `speed_margin` faster."""
    cfg = ctx.cfg
    if not ctx.speed_matters:  # the plain graph's int8 could only win on speed
        return Int8SourceChoice("fused", "no choice on speed: speed_margin >= 1", int8.file, None, None)
    plain_int8 = ctx.folder / f"int8-{int8.chosen}-plain.onnx"
    quantize(plain_path, plain_int8, int8.chosen, ctx.calibration)
    check = ctx.checked(plain_int8, f"int8 {int8.chosen} from the plain graph")
    failures = int8_failures(check, fp32, cfg.gates)
    times = ctx.timed({"fused": int8.file, "plain": plain_int8})
    record = {**check.to_dict(), "failures": failures, "timed_seconds": times}
    timing = f"fused {times['fused'] * 1e3:.0f} ms vs plain {times['plain'] * 1e3:.0f} ms on the timing batches"
    fused_accuracy = int8.check.accuracy
    if failures:
        why = f"the plain graph's int8 fails: {'; '.join(failures)}"
    elif check.accuracy < fused_accuracy - cfg.int8_tie:
        why = f"more accurate: {fused_accuracy:.2%} vs {check.accuracy:.2%}"
    elif not clearly_faster(times["plain"], times["fused"], cfg.speed_margin):
        why = f"the plain graph's is not over {cfg.speed_margin:.0%} faster: {timing}"
    else:
        return Int8SourceChoice("plain", f"as accurate and over {cfg.speed_margin:.0%} faster: {timing}", plain_int8,
                                check, record)
    return Int8SourceChoice("fused", why, int8.file, check, record)
