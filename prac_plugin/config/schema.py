"""Validate plain dicts (from YAML) into dataclasses, with errors that name the key and what is allowed."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from ..errors import PracError, shown


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` checked against ``hint`` (ints accepted where floats are expected)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (Union, types.UnionType):
        for arg in args:  # first matching alternative wins
            try:
                return _coerce(value, arg, where)
            except PracError:
                continue
        raise PracError(f"{where} = {shown(value)} should be {_type_name(hint)}")
    if origin is Literal:
        if value in args:
            return value
        raise PracError(f"{where} = {shown(value)} is not allowed; choose one of {', '.join(map(repr, args))}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PracError(f"{where} = {shown(value)} should be a list")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PracError(f"{where} = {shown(value)} should be a mapping")
        return dict(value)
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond any float
                raise PracError(f"{where} = an integer of {len(str(abs(value)))} digits is too large for a float") from None
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise PracError(f"{where} = {shown(value)} should be {_type_name(hint)}")


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are `PracError`s."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PracError(f"{where} should be a mapping of keys, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0] if isinstance(unknown[0], str) and unknown[0].isidentifier() else repr(unknown[0])  # one line
        raise PracError(f"unknown key {where}.{key}; allowed keys: {', '.join(fields)}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except PracError:
        raise
    except (TypeError, ValueError) as exc:
        raise PracError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain dict/list form of nested dataclasses, for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
