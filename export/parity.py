"""Does an exported graph compute what the PyTorch model computes? Logits on real validation texts at several
batch sizes and lengths (padded batches included), argmax agreement, and validation accuracy."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np

from engines.inference import Many, Runner, encode, length_sorted_batches, logits_of
from export.config import ExportConfig, Gates
from kd.errors import KdError
from kd.metrics import accuracy, agreement


class ExportGateError(KdError):
    """An export that does not match its PyTorch model: nothing is written in its place."""

    exit_code = 1

    def __init__(self, message: str, evidence: dict | None = None):
        super().__init__(message)
        self.evidence = evidence or {}  # the failing choice's records, for <model>.failed.json


@dataclass
class Outputs:
    probes: list[np.ndarray]  # one logits array per (batch size, max length) probe
    validation: np.ndarray | None  # logits over the validation texts, in their order (None: probes only)


@dataclass
class Check:
    max_abs_diff: float  # against PyTorch fp32, over every probe and the whole validation pass
    mean_abs_diff: float
    agreement: float  # argmax agreement with PyTorch fp32 on the validation split (probes only: on the probes)
    # the lowest argmax agreement of any probe (short truncations are the hardest); None: no probes ran (int8,
    # whose gates read the validation split only)
    probe_agreement: float | None
    accuracy: float | None  # on the validation split (None: probes only)
    probes: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


class ParitySet:
    def __init__(self, tokenizer, texts: list[str], labels: np.ndarray, cfg: ExportConfig, max_length: int,
                 with_probes: bool = True):
        self.tokenizer, self.texts, self.labels = tokenizer, list(texts), np.asarray(labels)
        self.max_length, self.batch_size = max_length, cfg.batch_size
        # in file order, so that batches mix lengths and carry padding
        self.probe_texts = self.texts[:cfg.probe_rows]
        self.probes = ([(b, min(m, max_length)) for b in cfg.probe_batch_sizes for m in cfg.probe_max_lengths]
                       if with_probes else [])
        self._tokenized: dict = {}  # every graph runs the same batches: tokenized once

    def without_probes(self) -> ParitySet:
        """The validation split alone (for a graph whose probes already ran)."""
        rest = copy.copy(self)
        rest.probes = []  # (the tokenized batches are the same: so are the texts)
        return rest

    def run(self, runner: Runner, full: bool = True, many: Many | None = None) -> Outputs:
        """The probes, and (full) the whole validation split (scored by `many` where given)."""
        probes = [np.concatenate([runner(batch) for batch in chunks]) for chunks in self.probe_batches()]
        validation = logits_of(self.validation_batches(), runner, many=many) if full else None
        return Outputs(probes, validation)

    def probe_batches(self) -> list[list[dict]]:
        """Per probe, its padded batches of the probe texts."""
        cache = self._tokenized.setdefault("probes", {})
        for b, m in self.probes:
            if (b, m) not in cache:
                cache[b, m] = [encode(self.tokenizer, self.probe_texts[i:i + b], m)
                               for i in range(0, len(self.probe_texts), b)]
        return [cache[probe] for probe in self.probes]

    def validation_batches(self) -> list:
        if "validation" not in self._tokenized:
            self._tokenized["validation"] = list(length_sorted_batches(self.tokenizer, self.texts, self.max_length,
                                                                       self.batch_size))
        return self._tokenized["validation"]

    def compare(self, out: Outputs, ref: Outputs) -> Check:
        pairs = list(zip(out.probes, ref.probes))
        if out.validation is not None:
            pairs.append((out.validation, ref.validation))
        diffs = [np.abs(o - r) for o, r in pairs]
        preds = [(o.argmax(-1), r.argmax(-1)) for o, r in pairs]
        agree = [agreement(o, r) for o, r in preds]
        probes = [{"batch_size": b, "max_length": m, "max_abs_diff": float(d.max()), "agreement": a}
                  for (b, m), d, a in zip(self.probes, diffs, agree)]
        pooled = agreement(*(np.concatenate(side) for side in zip(*preds)))  # over every probe's rows
        return Check(
            max_abs_diff=float(max(d.max() for d in diffs)),
            mean_abs_diff=float(np.concatenate([d.ravel() for d in diffs]).mean()),
            agreement=agree[-1] if out.validation is not None else pooled,
            probe_agreement=min(agree[:len(self.probes)]) if self.probes else None,
            accuracy=None if out.validation is None else accuracy(preds[-1][0], self.labels),
            probes=probes,
        )


def fp32_failures(check: Check, gates: Gates) -> list[str]:
    problems = []
    if not check.max_abs_diff <= gates.fp32_max_abs_diff:  # `not <=` also catches NaN
        problems.append(f"max |Δlogits| {check.max_abs_diff:.2e} > {gates.fp32_max_abs_diff:.0e}")
    lowest = min(check.agreement, 1.0 if check.probe_agreement is None else check.probe_agreement)
    if lowest < gates.fp32_min_agreement:
        problems.append(f"argmax agreement {lowest:.2%} < {gates.fp32_min_agreement:.2%}")
    return problems


def int8_failures(check: Check, fp32: Check, gates: Gates) -> list[str]:
    problems = []
    if check.agreement < gates.int8_min_agreement - 1e-9:
        problems.append(f"argmax agreement {check.agreement:.2%} < {gates.int8_min_agreement:.2%}")
    drop = fp32.accuracy - check.accuracy
    if drop > gates.int8_max_accuracy_drop + 1e-9:  # exactly at the limit passes (0.75 - 0.745 > 0.005 in floats)
        problems.append(f"validation accuracy {check.accuracy:.2%} is {drop * 100:.2f} pt below fp32's "
                        f"{fp32.accuracy:.2%} (allowed {gates.int8_max_accuracy_drop * 100:.2f} pt)")
    return problems
