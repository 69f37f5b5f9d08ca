"""What the OS shows of this CPU (lscpu, /proc/cpuinfo), and the fp32 peak its vector units allow: vector width x
FMA units x 2 x clock x cores. The bench's yardstick (bench/yardstick.py) prints it beside the measured rates."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kd.manifest import colon_fields

# FMA datapath per core, which no flag or file shows, for the families it is documented for (AMD's software
# optimization guides): (vendor, family, first model, last model) -> (bits per FMA unit, FMA units, name).
# Zen 4 takes AVX-512 but runs each 512-bit FMA as two 256-bit halves, so it does no more per cycle than AVX2.
FMA_TABLE = {
    ("AuthenticAMD", 0x17, 0x00, 0x2F): (128, 2, "Zen/Zen+"),
    ("AuthenticAMD", 0x17, 0x30, 0xFF): (256, 2, "Zen 2"),
    ("AuthenticAMD", 0x19, 0x00, 0xFF): (256, 2, "Zen 3/Zen 4"),
}


@dataclass(frozen=True)
class CpuInfo:
    """What lscpu and /proc/cpuinfo say about the CPU (None: not shown)."""

    vendor: str | None
    family: int | None
    model: int | None
    model_name: str | None
    flags: frozenset[str]
    max_mhz: float | None  # lscpu's CPU max MHz: the highest clock the kernel knows of
    mhz: float | None  # /proc/cpuinfo's cpu MHz: the clock when read (a VM shows the host's nominal clock)
    threads_per_core: int


def _number(value: str | None, kind: type = float):
    try:
        return int(value, 16 if value.lower().startswith("0x") else 10) if kind is int else kind(value)
    except (AttributeError, TypeError, ValueError):
        return None


def read_cpu(lscpu: str = "", cpuinfo: str = "") -> CpuInfo:
    """Either text may be empty (lscpu missing, no /proc on macOS); lscpu wins where both say something."""
    ls, ci = colon_fields(lscpu), colon_fields(cpuinfo)
    flags = (ls.get("flags") or ci.get("flags") or "").split()
    return CpuInfo(
        vendor=ls.get("vendor id") or ci.get("vendor_id"),
        family=_number(ls.get("cpu family") or ci.get("cpu family"), int),
        model=_number(ls.get("model") or ci.get("model"), int),
        model_name=ls.get("model name") or ci.get("model name"),
        flags=frozenset(flags), max_mhz=_number(ls.get("cpu max mhz")) or None,
        mhz=_number(ci.get("cpu mhz")) or None, threads_per_core=_number(ls.get("thread(s) per core"), int) or 1)


def this_cpu() -> CpuInfo:
    import subprocess
    from pathlib import Path

    try:  # LC_ALL=C: lscpu translates its keys
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"}, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    return read_cpu(lscpu, cpuinfo.read_text() if cpuinfo.is_file() else "")


@dataclass(frozen=True)
class Theoretical:
    """The fp32 peak the CPU's vector units allow, or why it is not given (gflops_per_s None)."""

    gflops_per_s: float | None
    cores: int
    ghz: float | None
    clock: str  # where the clock comes from
    flops_per_cycle: int | None  # per core
    basis: str  # how flops_per_cycle was found: a table entry, or the assumption made

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> Theoretical | None:
        return cls(**data) if data else None


def theoretical_peak(cpu: CpuInfo, cpus: int) -> Theoretical:
    """fp32 FLOP/cycle/core = lanes (the widest vector the flags show, capped by the FMA datapath) x 2 (a
    multiply-add) x FMA units; x clock x cores. Cores: usable CPUs / threads per core (SMT siblings share the
    FMA units). FMA units come from FMA_TABLE, else are assumed to be 2 (and said so)."""
    cores = max(1, cpus // cpu.threads_per_core)
    width = 512 if "avx512f" in cpu.flags else 256 if {"avx2", "fma"} <= cpu.flags else None
    entry = next((v for (vendor, fam, lo, hi), v in FMA_TABLE.items()
                  if cpu.vendor == vendor and cpu.family == fam and cpu.model is not None and lo <= cpu.model <= hi),
                 None)
    if cpu.max_mhz:
        ghz, clock = cpu.max_mhz / 1e3, "lscpu's CPU max MHz"
    elif cpu.mhz:
        ghz, clock = cpu.mhz / 1e3, "/proc/cpuinfo's cpu MHz (the clock when read; the cores may boost above it)"
    else:
        ghz, clock = None, "not readable (no CPU max MHz in lscpu, no cpu MHz in /proc/cpuinfo)"
    if width is None:
        return Theoretical(None, cores, ghz, clock, None, "no AVX2+FMA or AVX-512 flag: the FMA width is unknown")
    if entry:
        bits, units, name = entry
        lanes = min(width, bits) // 32
        basis = (f"{name} (family {cpu.family:#x}, model {cpu.model:#x}): {units} FMA units of {bits} bits, "
                 f"{lanes} fp32 lanes each")
    else:
        units, lanes = 2, width // 32
        basis = (f"assumes 2 FMA units of {width} bits ({lanes} fp32 lanes, from the flags): the number of FMA units "
                 "is not readable from the OS")
    per_cycle = lanes * 2 * units
    return Theoretical(ghz and per_cycle * ghz * cores, cores, ghz, clock, per_cycle, basis)



def theoretical_text(t: Theoretical, measured: float) -> str:
    """`measured`: the highest rate the bench saw, which no peak can be below."""
    if t.gflops_per_s is None:
        return f"no theoretical peak: the clock is {t.clock}" if t.ghz is None else f"no theoretical peak: {t.basis}"
    text = (f"theoretical peak {t.gflops_per_s:.0f} GFLOP/s = {t.cores} cores x {t.flops_per_cycle} FLOP/cycle x "
            f"{t.ghz:.2f} GHz, {t.basis}; clock from {t.clock}")
    if measured > t.gflops_per_s:  # the clock read is not the clock the cores ran at
        text += f"; a measured rate is above it, so the cores ran at ≥ {measured / t.cores / t.flops_per_cycle:.2f} GHz"
    return text
