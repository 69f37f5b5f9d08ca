"""JSON records written from dataclasses and read back into them: one schema per record, its fields checked
against their annotations on the way in, so a reader uses typed fields and never guards against a missing key.
A malformed or older file is one KdError naming the file, the field and what was expected."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from kd.errors import KdError

T = TypeVar("T")


class RecordError(ValueError):
    """A field that does not fit its annotation; `where` is its path in the record ("rows[3].accuracy")."""

    def __init__(self, where: str, expected: str, found: Any = None, missing: bool = False):
        self.where = where
        super().__init__(f"field {where}: missing, expected {expected}" if missing
                         else f"field {where}: expected {expected}, found {_short(found)}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_dict(record) -> dict:
    """The record as JSON values (tuples as lists, nested records as objects)."""
    return json.loads(json.dumps(dataclasses.asdict(record)))


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """`cls` from `data`, every field checked (RecordError on the first that does not fit). A field with a default
    may be absent; a key that is no field is an error (a typo, or a record of another schema)."""
    if not isinstance(data, dict):
        raise RecordError(where or "(the record)", f"an object of {cls.__name__}", data)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecordError(_join(where, unknown[0]), f"no such field (fields: {', '.join(known)})", data[unknown[0]])
    values = {}
    for name, field in known.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise RecordError(_join(where, name), _name(hints[name]), missing=True)
            continue
        values[name] = _value(hints[name], data[name], _join(where, name))
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a record's own check (__post_init__) refused the values
        raise RecordError(where or "(the record)", f"a valid {cls.__name__} ({exc})", data) from None


def _name(hint) -> str:
    """A field's type as the error names it: "CpuIdentity", "float | None"."""
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(hint, value: Any, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _value(arg, value, where)
            except RecordError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise RecordError(where, f"one of {', '.join(map(repr, args))}", value)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(where, "a list", value)
        item = args[0] if args else Any
        items = [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(where, "an object", value)
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(where, "a number", value)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(where, "an integer", value)
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise RecordError(where, "a string" if hint is str else "true or false", value)
    if hint is dict and not isinstance(value, dict):
        raise RecordError(where, "an object", value)
    return value


def read_record(cls: type[T], path: Path, fix: str) -> T:
    """The record in `path`, of `cls`'s schema (its VERSION); else one KdError naming the file, the field and
    `fix` (the command that writes a record of this schema)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KdError(f"{path}: missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise KdError(f"{path}: not readable JSON ({exc}); {fix}") from None
    found = data.get("version") if isinstance(data, dict) else None
    if found != cls.VERSION:
        raise KdError(f"{path}: field version: {found!r}, this kd-bench reads {cls.__name__} version {cls.VERSION} "
                      f"(an older or other file); {fix}")
    try:
        return from_dict(cls, data)
    except RecordError as exc:
        raise KdError(f"{path}: {exc}; {fix}") from None
