"""The CPU as far as kernel speed goes. Choices and speed ratios measured on one CPU hold for that CPU only: the int8
variant picked per CPU (engines/int8_host.py) and the bench gate's speed ratios (bench/gate.py) both key on it.

A model name alone can be as vague as "AMD EPYC" (shared by Zen 3, Zen 4 and Zen 5), so the identity is the model
name with vendor, family, model and stepping. The instruction-set extensions that decide which kernels run (VNNI,
BF16, AMX) are kept beside it for people to read: they follow from the identity and are not compared."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kd.manifest import cpu_model, first_cpu

# /proc/cpuinfo flag -> how people name it; the extensions int8 and bf16 kernels choose between
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16",
             "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}


@dataclass(frozen=True)
class CpuIdentity:
    model_name: str
    vendor: str | None = None
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    isa: tuple[str, ...] = ()  # ISA_FLAGS' names of the extensions it has; informative, not compared

    @property
    def key(self) -> str:
        """What two identities must share to be the same CPU; also the text int8_host's records hold."""
        ids = [f"{name} {value}" for name, value in (("vendor_id", self.vendor), ("cpu family", self.family),
                                                       ("model", self.model), ("stepping", self.stepping))
               if value is not None]
        return ", ".join([self.model_name, *ids])

    def same_cpu(self, other: CpuIdentity) -> bool:
        return self.key == other.key

    @property
    def slug(self) -> str:
        """For file names: bench/baselines/<preset>-<device>-<slug>.json."""
        name = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", self.model_name.lower())
        name = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cpu"
        ids = "".join(f"{p}{v}" for p, v in (("f", self.family), ("m", self.model), ("s", self.stepping))
                      if v is not None)
        return f"{name}-{ids}" if ids else name

    def describe(self) -> str:
        """One phrase for messages: "AMD EPYC (AuthenticAMD family 25 model 17 stepping 1; AVX2, AVX-512 ...)"."""
        ids = " ".join(f"{name} {value}" for name, value in (("family", self.family), ("model", self.model),
                                                              ("stepping", self.stepping)) if value is not None)
        inside = "; ".join(part for part in (" ".join(p for p in (self.vendor, ids) if p), ", ".join(self.isa))
                           if part)
        return f"{self.model_name} ({inside})" if inside else self.model_name


def _int(value: str | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def identity_of(fields_: dict[str, str], model_name: str) -> CpuIdentity:
    """From the first processor's /proc/cpuinfo fields (kd.manifest.first_cpu)."""
    flags = set(fields_.get("flags", "").split())
    return CpuIdentity(model_name, fields_.get("vendor_id"), _int(fields_.get("cpu family")),
                       _int(fields_.get("model")), _int(fields_.get("stepping")),
                       tuple(name for flag, name in ISA_FLAGS.items() if flag in flags))


def this_cpu_identity() -> CpuIdentity:
    return identity_of(first_cpu(), cpu_model())
