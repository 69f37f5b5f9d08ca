"""The two choices an export makes by measurement: which fp32 graph to ship (plain or fused) and which int8
variant (weight type, per-channel, dynamic or static), each checked against the PyTorch reference.

Every int8 variant is quantized from the plain graph, whichever fp32 graph ships: quantized from the fused graph,
ONNX Runtime's QAttention and SkipLayerNormalization ran slower than the plain graph's separate ops whenever both
were timed (docs/export.md), and the static variant's QDQ cannot quantize inside those contrib ops at all.

Each choice works from one `ChoiceContext` and returns a typed result (what was chosen, why, its Check, the
candidates' records); export/exporter.py writes export_report.json from those results."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from engines import Engine, engine
from engines.timing import clearly_faster, faster
from export.config import ExportConfig
from export.optimize import heads_and_hidden, optimize_graph
from export.parity import Check, ExportGateError, Outputs, ParitySet, fp32_failures, int8_failures
from export.quantize import quantize
from kd.metrics import mcnemar

ONNX = engine("onnxruntime")


def run_graph(parity: ParitySet, path: Path, what: str, full: bool = True, kind: type[Engine] = ONNX,
              precision: str = "fp32") -> Outputs:
    """A model file's outputs on the parity set, opened by the engine `kind` (its validation pass in the engine's
    `check_mode`); one that cannot even run on the tokenizer's arrays fails the gate."""
    try:
        opened = kind.open(path, "cpu", precision)
        return parity.run(opened.run, full, many=lambda batches: opened.run_many(batches, opened.check_mode))
    except (KeyError, *kind.errors()) as exc:
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
    plain_graph: Path  # the unfused fp32 graph, which the int8 variants are quantized from
    # timings of contenders timed together, by their graphs' structures, reused by the run's later models (see timed)
    timings: dict

    @property
    def speed_matters(self) -> bool:
        """False when no contender could ever be faster by the margin (speed_margin >= 1): then nothing is
        timed."""
        return self.cfg.speed_margin < 1

    def checked(self, path: Path, what: str, probed: Outputs) -> Check:
        """The graph against PyTorch on the whole validation split and on the probes, whose outputs come from its
        probes-only check (`probed`) and are not run again."""
        outputs = run_graph(self.parity.without_probes(), path, f"{self.name}: {what}")
        return self.parity.compare(Outputs(probed.probes, outputs.validation), self.reference)

    def probed(self, path: Path, what: str) -> tuple[Check, Outputs]:
        """The graph on the probes only: their check, and the outputs a later full check reuses."""
        outputs = run_graph(self.parity, path, f"{self.name}: {what}", full=False)
        return self.parity.compare(outputs, self.reference), outputs

    def timed(self, graphs: dict[str, Path]) -> tuple[dict[str, float], str]:
        """Seconds each graph takes over the timing batches (interleaved, best of several rounds), and a note. Graphs
        that differ only in their weights run at the same speed: contenders of the same structures as ones timed
        together for an earlier model of the run (the two students) take those timings, so that both get the same
        choice and the export does not time them twice."""
        keys = {which: structure(path) for which, path in graphs.items()}
        together = frozenset(keys.values())
        if together in self.timings:
            measured, by = self.timings[together]
            return {which: measured[key] for which, key in keys.items()}, f" (timed on {by}'s graphs, the same " \
                "structure)"
        # opened as run_graph opens them: the session options of the bench and `kd predict`
        times = faster({which: ONNX.open(path, "cpu", "fp32").run for which, path in graphs.items()},
                       self.speed_batches)
        if len(together) == len(keys):  # (two contenders of one structure cannot be told apart by it)
            self.timings[together] = ({key: times[which] for which, key in keys.items()}, self.name)
        return times, ""


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
    candidates: dict[str, dict]  # each graph's check (and the fused one's operators and timings)


@dataclass
class Int8Choice(Choice):
    """`chosen`: the int8 variant (export/quantize.py's CANDIDATES)."""

    check: Check  # the chosen variant's, on the probes and the whole validation split
    file: Path  # its graph, quantized from the plain fp32 graph
    candidates: dict[str, dict]  # every variant's record, also those failing the gates


def choose_fp32(ctx: ChoiceContext, plain_path: Path, fused_path: Path, config) -> Fp32Choice:
    """Both graphs are checked on the probes and timed (unless speed_margin >= 1); the whole validation split
    then checks the one kept (and the plain one when the fused one fails there)."""
    cfg = ctx.cfg
    records: dict[str, dict] = {}
    with evidence(fp32_candidates=records):
        plain, plain_probes = ctx.probed(plain_path, "fp32 ONNX")
        records["plain"] = plain.to_dict()
        graph = "plain"
        if cfg.optimize == "never":
            why = "optimize=never"
        else:
            t0 = time.perf_counter()
            fused_ops = optimize_graph(plain_path, fused_path, *heads_and_hidden(config))
            optimize_seconds = time.perf_counter() - t0
            fused, fused_probes = ctx.probed(fused_path, "fused fp32 ONNX")
            records["fused"] = {**fused.to_dict(), "fused_ops": fused_ops, "optimize_seconds": optimize_seconds}
            timing, faster_fused = "", False
            if ctx.speed_matters:
                times, reused = ctx.timed({"plain": plain_path, "fused": fused_path})
                for which in ("plain", "fused"):
                    records[which]["timed_seconds"] = times[which]
                timing = (f": fused {times['fused'] * 1e3:.0f} ms vs plain {times['plain'] * 1e3:.0f} ms on the "
                          f"timing batches{reused}")
                faster_fused = clearly_faster(times["fused"], times["plain"], cfg.speed_margin)
            probes_pass = not fp32_failures(fused, cfg.gates)
            why = ("optimize=always" if cfg.optimize == "always" else "fused graph fails the gates" if not probes_pass
                   else f"passes the gates and is over {cfg.speed_margin:.0%} faster" if faster_fused
                   else f"fused graph is not over {cfg.speed_margin:.0%} faster" if ctx.speed_matters
                   else "no choice on speed (speed_margin >= 1)")
            if cfg.optimize == "always" or (probes_pass and faster_fused):
                fused = ctx.checked(fused_path, "fused fp32 ONNX", probed=fused_probes)
                records["fused"].update(fused.to_dict())
                if cfg.optimize == "always" or not fp32_failures(fused, cfg.gates):
                    graph = "fused"
                else:
                    why = "fused graph fails the gates on the validation split"
            why += timing
        if graph == "fused":
            return Fp32Choice(graph, why, fused, records)
        plain = ctx.checked(plain_path, "fp32 ONNX", probed=plain_probes)
        records["plain"].update(plain.to_dict())
    return Fp32Choice(graph, why, plain, records)


def int8_file(ctx: ChoiceContext, candidate: str) -> Path:
    return ctx.folder / f"int8-{candidate}.onnx"


def quantize_variant(ctx: ChoiceContext, candidate: str) -> float:
    """Write one int8 variant from the plain graph; the seconds it took."""
    t0 = time.perf_counter()
    quantize(ctx.plain_graph, int8_file(ctx, candidate), candidate, ctx.calibration)
    return time.perf_counter() - t0


@dataclass
class Int8Checks:
    """Every int8 variant's record and its check on the whole validation split, and which passed the gates."""

    records: dict[str, dict]
    checks: dict[str, Check]
    predictions: dict[str, np.ndarray]  # each variant's argmax over the validation split, for McNemar
    passing: list[str]  # in int8_candidates' order


def check_int8(ctx: ChoiceContext, fp32: Check) -> Int8Checks:
    """Every variant, quantized from the plain graph, against PyTorch on the whole validation split (no probes: the
    int8 gates read the validation split only). Fails (with every candidate's record as evidence) when no variant
    passes."""
    cfg, whole = ctx.cfg, ctx.parity.without_probes()
    records: dict[str, dict] = {}
    checks: dict[str, Check] = {}
    predictions: dict[str, np.ndarray] = {}
    passing = []
    with evidence(int8_candidates=records):
        for candidate in cfg.int8_candidates:
            file = int8_file(ctx, candidate)
            records[candidate] = {"quantize_seconds": quantize_variant(ctx, candidate),
                                  "size_mb": file.stat().st_size / 2**20}
            t0 = time.perf_counter()
            outputs = run_graph(whole, file, f"{ctx.name}: int8 {candidate}")
            # its validation pass (session created, whole split): recorded, not compared
            records[candidate]["validation_seconds"] = time.perf_counter() - t0
            checks[candidate] = check = whole.compare(outputs, ctx.reference)
            predictions[candidate] = outputs.validation.argmax(-1)
            failures = int8_failures(check, fp32, cfg.gates)
            records[candidate].update(check.to_dict(), failures=failures)
            ctx.say(f"int8 {candidate}: validation accuracy {check.accuracy:.2%}, agreement {check.agreement:.2%}"
                    + (f" (fails: {'; '.join(failures)})" if failures else ""))
            if not failures:
                passing.append(candidate)
        if not passing:
            worst = "; ".join(f"{c}: {', '.join(r['failures'])}" for c, r in records.items())
            raise ExportGateError(f"{ctx.name}: no int8 variant passes the gates ({worst})")
    return Int8Checks(records, checks, predictions, passing)


def equivalent_int8(ctx: ChoiceContext, checked: Int8Checks) -> tuple[str, list[str]]:
    """The most accurate passing variant, and the passing variants whose validation accuracy cannot be told from
    its: an exact McNemar test on the rows where exactly one of the two is right, p >= `int8_same_accuracy_p`. Each
    record gets its test. (Not a proof of equality: the gates already bound every passing variant to 0.5 pt of
    fp32, and within that only a difference the split can resolve rules a variant out, not a hundredth of a
    point.)"""
    labels, best = ctx.parity.labels, max(checked.passing, key=lambda c: checked.checks[c].accuracy)
    same = []
    for candidate in checked.passing:
        test = mcnemar(labels, checked.predictions[best], checked.predictions[candidate])
        checked.records[candidate]["mcnemar_vs_most_accurate"] = {"most_accurate": best, **test}
        if test["p_value"] >= ctx.cfg.int8_same_accuracy_p:
            same.append(candidate)
    return best, same


def choose_int8(ctx: ChoiceContext, checked: Int8Checks) -> Int8Choice:
    """Of the passing variants equivalent in accuracy (equivalent_int8), the first in `int8_candidates`' order,
    unless another is over `speed_margin` faster on this host's timing batches."""
    cfg, records = ctx.cfg, checked.records
    best, same = equivalent_int8(ctx, checked)
    reused = ""
    if len(same) > 1 and ctx.speed_matters:
        times, reused = ctx.timed({c: int8_file(ctx, c) for c in same})
        for candidate in same:
            records[candidate]["timed_seconds"] = times[candidate]
    chosen = pick_int8(same, records, cfg.speed_margin)
    rows = len(ctx.parity.texts)
    if len(checked.passing) == 1:
        why = "the only variant that passes the gates"
    elif len(same) == 1:
        why = f"the most accurate on the {rows} validation rows, and the others measurably less so"
    else:
        why = (f"of {', '.join(same)}, equal in accuracy on the {rows} validation rows (McNemar p >= "
               f"{cfg.int8_same_accuracy_p:g}), " + ("the fastest" if chosen != same[0] else
                                                     f"none is over {cfg.speed_margin:.0%} faster than the first"
                                                     if ctx.speed_matters else "the first (no choice on speed)")
               + reused)
    unequal = [f"{c} (p = {records[c]['mcnemar_vs_most_accurate']['p_value']:.2g})" for c in checked.passing
               if c not in same]
    if unequal:
        why += f"; less accurate than {best}: " + ", ".join(unequal)
    return Int8Choice(chosen, why, checked.checks[chosen], int8_file(ctx, chosen), records)


def structure(path: Path) -> str:
    """What a graph's speed depends on: its operators with their wiring and attributes, its inputs, and its
    initializers' names, shapes and types, not their values."""
    graph = onnx.load(path, load_external_data=False).graph
    digest = hashlib.sha256()
    for part in (*graph.node, *graph.input):
        digest.update(part.SerializeToString())
    for tensor in graph.initializer:
        digest.update(f"{tensor.name}{list(tensor.dims)}{tensor.data_type}".encode())
    return digest.hexdigest()


def pick_int8(same: list[str], records: dict[str, dict], margin: float) -> str:
    """Of variants equal in accuracy (in int8_candidates' order), the first, unless the fastest beats it by over
    `margin` on the timing batches."""
    first = same[0]
    if any("timed_seconds" not in records[c] for c in same):  # one variant, or speed_margin >= 1: not timed
        return first
    fastest = min(same, key=lambda c: records[c]["timed_seconds"])
    return fastest if clearly_faster(records[fastest]["timed_seconds"], records[first]["timed_seconds"],
                                     margin) else first
