"""Load and validate a TOML configuration into ``Settings``.

Validation is total: an unknown key, a wrong type, a value out of range or a reference to
something undefined raises ``ConfigError`` naming the file, the key path, what was expected
and what was found. Processes print it and exit 2 before opening any socket.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from conf.settings import Settings

ENV_CONF = "SIPLINE_CONF"
DEFAULT_PATH = "conf/sipline.toml"

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the operator's message."""

    def __init__(self, file: str, key: str, expected: str, found: object) -> None:
        self.file, self.key, self.expected, self.found = file, key, expected, found
        super().__init__(f"{file}: {key}: expected {expected}, found {found!r}")


def config_path(cli_path: str | None = None) -> str:
    """``--conf`` wins, then ``$SIPLINE_CONF``, then ``conf/sipline.toml``."""
    return cli_path or os.environ.get(ENV_CONF) or DEFAULT_PATH


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate ``path``.

    Raises:
        ConfigError: the file is missing, not TOML, or any value is wrong.
    """
    file = str(path)
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "an existing TOML file", "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "(syntax)", "valid TOML", str(exc)) from None
    return from_dict(data, file)


def from_dict(data: dict[str, Any], file: str = "<dict>") -> Settings:
    """Validate an already-parsed mapping (what ``load`` does after reading TOML)."""
    settings = _build(Settings, {**data, "source": file}, file, "")
    _check_references(settings)
    return settings


def _build(cls: type[T], data: object, file: str, key: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(file, key or "(top)", "a table", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        if name not in fields:
            raise ConfigError(file, sub, f"one of {sorted(fields)}", "an unknown key")
        f = fields[name]
        kwargs[name] = _convert(hints[name], value, file, sub)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and not lo <= kwargs[name] <= hi:
            raise ConfigError(file, sub, f"a number from {lo:g} to {hi:g}", value)
    for name, f in fields.items():
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if missing and name not in kwargs:
            raise ConfigError(file, f"{key}.{name}" if key else name, "a value", "nothing")
    return cls(**kwargs)


def _convert(hint: Any, value: object, file: str, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(file, key, "a list", value)
        (item,) = get_args(hint)
        return [_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(file, key, "one of " + ", ".join(map(repr, choices)), value)
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported union in settings: {hint}")  # a bug in settings.py
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and type(value) is hint:
        return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise ConfigError(file, key, names.get(hint, str(hint)), value)


def _check_references(s: Settings) -> None:
    """Cross-field rules: addresses parse, names resolve, regexes compile."""
    f = s.source
    for i, lst in enumerate(s.listen):
        _ip(f, f"listen[{i}].address", lst.address)
    seen: set[tuple[str, str, int]] = set()
    for i, lst in enumerate(s.listen):
        k = (lst.transport, lst.address, lst.port)
        if k in seen:
            raise ConfigError(f, f"listen[{i}]", "each listener once", "a duplicate")
        seen.add(k)
    sets = {}
    for i, ds in enumerate(s.destination_set):
        key = f"destination_set[{i}]"
        if ds.name in sets:
            raise ConfigError(f, f"{key}.name", "a unique name", ds.name)
        sets[ds.name] = ds
        if not ds.destinations:
            raise ConfigError(f, f"{key}.destinations", "at least one SIP URI", [])
        for j, uri in enumerate(ds.destinations):
            _destination(f, f"{key}.destinations[{j}]", uri)
        if ds.weights and (len(ds.weights) != len(ds.destinations) or min(ds.weights) < 1):
            raise ConfigError(f, f"{key}.weights", "one positive weight per destination", ds.weights)
    for i, r in enumerate(s.route):
        key = f"route[{i}]"
        if r.to not in sets:
            raise ConfigError(f, f"{key}.to", f"a destination_set name {sorted(sets)}", r.to)
        for field_name in ("ruri_user", "ruri_host"):
            pattern = getattr(r, field_name)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f, f"{key}.{field_name}", "a regular expression", pattern) from exc
        if r.source:
            try:
                ipaddress.ip_network(r.source, strict=False)
            except ValueError:
                raise ConfigError(f, f"{key}.source", "a CIDR like 10.0.0.0/8", r.source) from None


def _ip(file: str, key: str, text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(file, key, "an IPv4 or IPv6 address", text) from None


# conf/ imports nothing of ours, so destinations are checked with their own small grammar.
DESTINATION_RE = re.compile(
    r"sips?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?((?:;[A-Za-z0-9\-_.]+(?:=[^;]*)?)*)"
)


def _destination(file: str, key: str, uri: str) -> None:
    m = DESTINATION_RE.fullmatch(uri)
    if m is None or (m.group(2) and not 0 < int(m.group(2)) < 65536):
        raise ConfigError(file, key, "a SIP URI like sip:192.0.2.1:5060;transport=tcp", uri)
    transport = re.search(r";transport=([^;]*)", m.group(3) or "")
    if transport and transport.group(1).lower() not in ("udp", "tcp"):
        raise ConfigError(file, key, "transport=udp or transport=tcp", uri)
