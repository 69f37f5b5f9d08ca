"""Bench settings, declared once: the BenchConfig dataclass. A field with a `flag` in its metadata is a command-line
option of `kd bench` / `kd bench-baseline` (cli/main.py) and of plain `pytest bench` (bench/conftest.py) alike:
`add_arguments` declares those options from the fields, `BenchConfig.from_args` reads them back, and `kd bench`
hands the BenchConfig itself to the suite (`SuitePlugin`), never as a command line to parse again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from kd.runfolder import RunFolder

DEVICES = ("cpu", "cuda", "mps")
ORDERS = ("length", "file")


def option(flag: str, help: str, default: Any = None, **extras: Any) -> Any:
    """A field that is also a command-line option: its flag, its help, and argparse extras such as choices (a
    callable default is a default_factory)."""
    kind = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kind, metadata={"flag": flag, "help": help, **extras})


@dataclass
class BenchConfig:
    run_dir: Path = option("--run-dir", "run folder with models/ (and onnx/) to bench", Path("runs/cpu"))
    data: str | None = option("--data", "data source if not the run's own (checked against its fingerprint)")
    samples: int | None = option("--bench-samples", "test rows to score and time (default: all)")
    batch_size: int = 32
    # Throughput batches: "length" sorts the rows by token count before batching (bulk scoring, as
    # sentence-transformers' encode does); "file" keeps the split's order (requests as they arrive).
    order: str = option("--order", "throughput batches sorted by length (bulk scoring) or in file order",
                        "length", choices=ORDERS)
    throughput_warmup: int = 1  # batches run in the part's mode before its timed pass (the threads woken up)
    latency_texts: int = option("--latency-texts", "single texts timed at batch 1, all of them in every part (a "
                                "fixed random sample of the test split)", 200)
    latency_warmup: int = 5  # calls before each latency part's timed ones (the threads woken up)
    # Each row is measured in parts, the parts of all rows taking turns: a slow spell on a busy machine (they
    # last seconds here) then hits every row alike instead of whichever row ran during it, and the ratios between
    # rows stay honest. Throughput: each part runs a share of the batches. Batch-1 latency: each part times every
    # latency text, and the row's p50 is its fastest part's median; a row's latency stops after two parts whose
    # medians agree within latency_agreement (at most `parts` parts: a row that never settles keeps its lowest).
    parts: int = option("--parts", "parts each row is measured in, taking turns with the other rows", 6)
    latency_agreement: float = 0.03
    # A measurement shorter than this repeats its pass over the texts (up to max_passes): tiny models finish a
    # pass in milliseconds, where one scheduler hiccup moves the figure by a third. Throughput is then the
    # fastest pass; a latency part's median is over every call of its passes.
    # Each row runs with the settings a user would deploy (ONNX Runtime's threads spin between calls), so after a
    # row whose threads spin the cores are left to settle for this long: threads still spinning from the last row
    # would otherwise take them from the next (they spin for tens of milliseconds after a call).
    settle_seconds: float = 0.2
    min_seconds: float = option("--min-seconds", "repeat a measurement shorter than this (seconds)", 2.0)
    max_passes: int = 20
    # rows on other devices are deselected
    devices: list[str] = option("--devices", "devices to bench, comma-separated", lambda: list(DEVICES))
    models: list[str] = option("--models", "models to bench, comma-separated (default: every model of the run)",
                               list)
    seed: int = 0  # picks the latency texts

    def check(self) -> None:
        from kd.errors import KdError

        if not self.models:
            self.models = RunFolder(Path(self.run_dir)).model_names(with_weights=True) or ["teacher"]
        if self.order not in ORDERS:
            raise KdError(f"{flag('order')} {self.order!r}: expected {' or '.join(ORDERS)}")
        unknown = [d for d in self.devices if d not in DEVICES]
        if unknown:
            raise KdError(f"{flag('devices')} {unknown[0]!r}: expected some of {', '.join(DEVICES)}")
        for name in ("samples", "batch_size", "latency_texts", "parts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise KdError(f"{flag(name)} {value}: expected a positive number")

    @classmethod
    def from_args(cls, args: Any, **given: Any) -> BenchConfig:
        """The settings parsed by the options of `add_arguments` (an argparse or pytest namespace); `given` (not
        None) takes the place of an option, e.g. kd's own --run-dir. An option left out gets the field's default."""
        values = {f.name: getattr(args, dest(f), None) for f in options()}
        return cls(**{k: v for k, v in {**values, **given}.items() if v is not None})

    @classmethod
    def from_dict(cls, recorded: dict) -> BenchConfig:
        """The settings as a summary records them (to_dict); keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in recorded.items() if k in known})
        cfg.run_dir = Path(cfg.run_dir)
        return cfg

    def to_dict(self) -> dict:
        """JSON-ready settings for the summary (the run folder as a string)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


class SuitePlugin:
    """`kd bench`'s settings handed to the pytest suite as an object: `pytest.main(args, plugins=[SuitePlugin(cfg)])`
    (bench/conftest.py looks for it before it reads any option), with the workload kd already made and checked
    (re-making the test split takes seconds)."""

    def __init__(self, cfg: BenchConfig, workload=None):
        self.cfg, self.workload = cfg, workload


def options() -> list[Field]:
    """The fields that are command-line options."""
    return [f for f in fields(BenchConfig) if "flag" in f.metadata]


def flag(name: str) -> str:
    """A setting's name as the user gives it: its flag, or the field's name for a setting without one."""
    return next((f.metadata["flag"] for f in options() if f.name == name), name)


def dest(f: Field) -> str:
    return f"bench_{f.name}"  # prefixed: pytest's option names are one namespace with every plugin's


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def add_arguments(add_argument: Callable[..., Any], skip: tuple[str, ...] = ()) -> None:
    """Declare the BenchConfig options with `add_argument`: an argparse parser's add_argument, or pytest's
    parser.addoption (the same signature). `skip` names fields the caller declares itself (kd's --run-dir and
    --data, common to all its verbs). Every option defaults to None, read as the field's default by from_args."""
    hints = get_type_hints(BenchConfig)
    for f in options():
        if f.name in skip:
            continue
        kind = hints[f.name]
        if type(None) in get_args(kind):  # X | None: X
            kind = next(a for a in get_args(kind) if a is not type(None))
        default = default_of(f)
        extras = {k: v for k, v in f.metadata.items() if k not in ("flag", "help")}
        if "choices" not in extras:
            extras["metavar"] = f.name.upper()  # not the dest's BENCH_ prefix
        if get_origin(kind) is list:
            kind, default = comma_list, ",".join(default)
        text = f.metadata["help"] + ("" if default is None or "(default" in f.metadata["help"]
                                     else f" (default: {default})")
        add_argument(f.metadata["flag"], dest=dest(f), type=kind, default=None, help=text, **extras)
