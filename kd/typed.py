"""One typed reader for everything kd reads: the run config, recipes and studies (YAML) and the records it writes
(JSON), each read into its dataclass by walking the type hints (nested dataclasses, list, tuple, dict, Literal,
unions and Optional, Annotated rules), with one error line naming the file, the field, the value and what was
expected. A record is written with `to_data`, its inverse, so a file and its dataclass cannot drift apart.

Not pydantic: its lax mode turns "yes" into True and 32.0 into 32, where kd refuses both; its strict mode refuses
YAML 1.1's 2e-3 (read as a string), which kd takes as a number; its messages would need translating into kd's
one-line form; and it costs start-up time on every config load (docs/development.md)."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from kd.atomic import write_json
from kd.errors import KdError

REST = "rest"  # field metadata: this field takes the keys that the dataclass's other fields do not name
KEY = "key"  # field metadata: the field's key in the file, where that is no Python name (significant_at_0.05)
NOT_READ = "not_read"  # field metadata: set by the loader (a recipe's name is its file's), never by the file
NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a text", type(None): "null"}
BARE = {dict: dict[str, Any], list: list[Any]}  # a record's free-form part (a probe's inputs): any JSON inside
_OMITTED = object()


@dataclass(frozen=True)
class Check:
    """A rule beyond the type, attached as Annotated[T, Check(test, expected)]. `expected` also stands for the type
    where the value is not even a T, so the error says what the field is for, not only its type."""

    test: Callable[[Any], bool]
    expected: str


def says(expected: str) -> Check:
    """No rule beyond the type: only the words for what the field is, for its error."""
    return Check(lambda _: True, expected)


def at_least(low: int | float, expected: str | None = None) -> Check:
    return Check(lambda v: v >= low, expected or f"a number >= {low}")


class _Bad(Exception):
    """A value that does not fit, raised inside the walk and said once, with where it was read, by `read`."""

    def __init__(self, path: tuple, value: Any = _OMITTED, expected: str = "", sentence: str = ""):
        super().__init__(sentence or expected)
        self.path, self.value, self.expected, self.sentence = path, value, expected, sentence

    def body(self) -> str:
        if self.sentence:
            return self.sentence
        if not self.path:
            return f"expected {self.expected}, got {self.value!r}"
        empty = isinstance(self.value, (list, tuple, dict)) and not self.value
        if self.value is _OMITTED or empty:  # nothing to show: the key was left out, or its list is empty
            return f"{_render(self.path)}: expected {self.expected}"
        if isinstance(self.path[-1], int):  # an item of a list: the list and the item
            return f"{_render(self.path[:-1])}: {self.value!r}: expected {self.expected}"
        return f"{_render(self.path)}={self.value!r}: expected {self.expected}"


def _render(path: tuple) -> str:
    """teacher.train.epochs, terms[0]: weight: dots between sections, an index in brackets, a colon after it."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += str(part) if i == 0 else f": {part}" if isinstance(path[i - 1], int) else f".{part}"
    return out


def is_integer(value: Any) -> bool:
    """An int that is not a bool (Python's bool is an int, YAML's true is not a number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def read(hint, value: Any, where: str, path: tuple = (), fix: str = ""):
    """`value` (from YAML or JSON) as `hint` says, or one KdError: `where` (a file followed by ':', or a word such
    as 'config') and then the field, its value and what was expected; `fix`, where given, says what to do."""
    try:
        return _read(hint, value, path)
    except _Bad as bad:
        body = bad.body()
        # after a file ("kd/methods/x.yaml: rows='some': ...") one space; after a word, a field follows it
        # ("config teacher.train.epochs='x': ...") and a sentence takes a colon ("config: unknown key ...")
        sep = " " if where.endswith(":") or (bad.path and not bad.sentence) else ": "
        raise KdError(f"{where}{sep}{body}" + (f"; {fix}" if fix else "")) from None


def to_data(obj: Any) -> Any:
    """A dataclass as the plain data `read` takes back (JSON's types; REST fields flat, KEY names used)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get(NOT_READ):
                continue
            value = to_data(getattr(obj, f.name))
            if f.metadata.get(REST):
                out.update(value)
            else:
                out[f.metadata.get(KEY, f.name)] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def read_json(path: Path, cls: type, version: int, fix: str):
    """A record kd wrote, read back into its dataclass: a damaged, older or malformed file is one error naming the
    file and the field, and `fix`, what to do about it."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raise KdError(f"{path}: not readable JSON; {fix}") from None
    found = raw.get("version") if isinstance(raw, dict) else None
    if found != version:
        raise KdError(f"{path}: version={found!r}: expected {version}, the format this kd-bench writes; {fix}")
    return read(cls, raw, f"{path}:", fix=fix)


class Record:
    """A JSON file kd writes from its dataclass and reads back into it. A subclass is a dataclass with a field
    `version: int = VERSION`; VERSION is the format this kd-bench writes (raise it when a field changes meaning or
    shape) and FIX what to do about a file that does not read, formatted with the file's `folder`."""

    VERSION: ClassVar[int] = 1
    FIX: ClassVar[str] = ""

    @classmethod
    def read(cls, path: Path):
        return read_json(path, cls, cls.VERSION, cls.FIX.format(folder=path.parent))

    def write(self, path: Path) -> None:
        write_json(path, to_data(self))


def describe(hint) -> str:
    """What a value of `hint` is, in words."""
    hint = BARE.get(hint, hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        checks = [c for c in args[1:] if isinstance(c, Check)]
        return checks[0].expected if checks else describe(args[0])
    if dataclasses.is_dataclass(hint):
        named = [key for key, f, _ in _fields(hint) if not f.metadata.get(REST)]
        more = ", ..." if len(named) < len(_fields(hint)) else ""
        return f"a mapping with {', '.join(named)}{more}"
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return NAMES.get(hint, "anything")


@functools.cache
def _fields(cls) -> tuple[tuple[str, dataclasses.Field, Any], ...]:
    """(key in the file, field, type hint) of each field a file may set."""
    # the module's names as globals: Python 3.11 evaluates a class's string annotations with the class namespace as
    # globals, so a Check's lambda would not see the module's imports when it runs
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]), include_extras=True)
    return tuple((f.metadata.get(KEY, f.name), f, hints[f.name]) for f in dataclasses.fields(cls)
                 if f.init and not f.metadata.get(NOT_READ))


def _read(hint, value: Any, path: tuple):
    hint = BARE.get(hint, hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        checks = [c for c in args[1:] if isinstance(c, Check)]
        try:
            value = _read(args[0], value, path)
        except _Bad as bad:
            if bad.path != path or bad.sentence or not checks:
                raise
            raise _Bad(path, value, checks[0].expected) from None
        for check in checks:
            if not check.test(value):
                raise _Bad(path, value, check.expected)
        return value
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, path)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Bad(path, value, describe(hint))
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _read(option, value, path)
            except _Bad as bad:
                if bad.path != path or bad.sentence:  # it fit the option's shape, and a part is wrong: say that part
                    raise
        raise _Bad(path, value, describe(hint))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Bad(path, value, describe(hint))
        items = [_read(args[0], v, (*path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _Bad(path, value, describe(hint))
        odd = next((k for k in value if not isinstance(k, str)), None)
        if odd is not None:
            where = f"{_render(path)}: " if path else ""
            raise _Bad(path, sentence=f"{where}setting {odd!r} is not a name (YAML reads on, off, yes and no as true "
                                      "or false: quote the key)")
        return {k: _read(args[1], v, (*path, k)) for k, v in value.items()}
    if hint in NAMES:
        return _scalar(hint, value, path)
    raise TypeError(f"kd.typed cannot read {hint!r} (at {_render(path)})")  # a new hint kind: a bug, not input


def _dataclass(cls, value: Any, path: tuple):
    if value is None:
        value = {}  # an empty YAML section: every field at its default
    if not isinstance(value, dict):
        raise _Bad(path, value, describe(cls))
    fields = _fields(cls)
    keys = {key for key, _, _ in fields}
    rest = next(((f, hint) for _, f, hint in fields if f.metadata.get(REST)), None)
    unknown = [k for k in value if k not in keys]
    if unknown and rest is None:
        name = _render((*path, unknown[0])) if path else repr(unknown[0])
        known = ", ".join(sorted(k for k, f, _ in fields if not f.metadata.get(REST)))
        raise _Bad(path, sentence=f"unknown key {name} (known: {known})")
    kwargs = {}
    for key, f, hint in fields:
        if f.metadata.get(REST):
            continue
        if key in value:
            kwargs[f.name] = _read(hint, value[key], (*path, key))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Bad((*path, key), _OMITTED, describe(hint))
    if rest is not None:
        kwargs[rest[0].name] = _read(rest[1], {k: value[k] for k in unknown}, path)
    return cls(**kwargs)


def _scalar(t: type, value: Any, path: tuple):
    if t is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 2e-3 (no dot) as a string
        except ValueError:
            pass
    if t is int:
        fits = is_integer(value)
    elif t is float:  # an int is a number too
        fits = is_integer(value) or isinstance(value, float)
    else:
        fits = isinstance(value, t)
    if fits:
        return value
    raise _Bad(path, value, NAMES[t])
