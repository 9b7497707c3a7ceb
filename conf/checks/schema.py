"""TOML tables into the section dataclasses (``conf/settings.py``): unknown keys, missing
required keys, types and numeric ranges, each refused with a ``ConfigError`` naming the key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from conf.checks.errors import ConfigError, Said, _found, _key, _num, _toml
from conf.settings import Settings

#: fields that are not TOML keys: (dataclass, field name)
_NOT_KEYS = frozenset({(Settings, "source")})
T = TypeVar("T")


def _keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if (cls, f.name) not in _NOT_KEYS}


def _section(key: str) -> str:
    """How a TOML file names the table at ``key``: ``[tcp]``, ``[[listen]]``, ``[route]``."""
    return f"[[{key.split('[')[0]}]]" if key.endswith("]") else f"[{key}]"


def _build(cls: type[T], data: object, file: str, key: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(file, key or "(top)", f"a table ({_section(key)})", _found(data))
    hints = typing.get_type_hints(cls)
    fields = _keys(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        # a quoted TOML key ("a.b", "") stays quoted, so the path reads as one line
        sub = f"{key}.{_key(name)}" if key else _key(name)
        if name not in fields:
            where = f"a key of {_section(key)}" if key else "a section"
            hint = difflib.get_close_matches(name, fields, n=1)
            found = "an unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
            raise ConfigError(file, sub, f"{where} ({', '.join(fields)})", Said(found))
        f = fields[name]
        kwargs[name] = _convert(hints[name], value, file, sub)
        lo: float | None = f.metadata.get("min")
        hi: float = f.metadata.get("max", lo)
        # written so that NaN is out of every range
        if lo is not None and not (lo <= kwargs[name] <= hi):
            raise ConfigError(file, sub, f"a number from {_num(lo)} to {_num(hi)}", value)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            sub = f"{key}.{name}" if key else name
            expected = f"{_expected(hints[name], sub)} (this key is required)"
            raise ConfigError(file, sub, expected, Said("nothing"))
    return cls(**kwargs)


def _expected(hint: Any, key: str) -> str:
    """What a value of type ``hint`` is called in a message."""
    if dataclasses.is_dataclass(hint):
        return f"a table ({_section(key)})"
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if dataclasses.is_dataclass(item):
            return f"an array of tables ([[{key}]])"
        return f"an array of {_PLURAL.get(item, str(item))}"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(_toml(c) for c in get_args(hint))
    if get_origin(hint) in (typing.Union, types.UnionType):
        return ", or ".join(_NAMES[a] for a in get_args(hint))
    return _NAMES.get(hint, str(hint))


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _convert(hint: Any, value: object, file: str, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            found = _found(value)
            if isinstance(value, dict) and dataclasses.is_dataclass(get_args(hint)[0]):
                found = Said(f"a single table ([{key}])")
            raise ConfigError(file, key, _expected(hint, key), found)
        (item,) = get_args(hint)
        return [_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = get_args(hint)
        if not isinstance(value, str):
            raise ConfigError(file, key, _expected(hint, key), _found(value))
        if value not in choices:
            raise ConfigError(file, key, _expected(hint, key), value)
        return value
    if origin in (typing.Union, types.UnionType):
        # only unions of scalars (``bool | str``): TOML says which one a value is
        if not all(a in _NAMES for a in get_args(hint)):
            raise TypeError(f"unsupported union in settings: {hint}")  # a bug in settings.py
        if type(value) in get_args(hint):
            return value
        raise ConfigError(file, key, _expected(hint, key), _found(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and type(value) is hint:
        return value
    raise ConfigError(file, key, _expected(hint, key), _found(value))
