"""``ConfigError``, the one error a configuration that cannot be used raises, and how it shows
the value it found: the way TOML writes it, shortened, on one line (``conf/load.py`` has the
rules of the messages)."""

from __future__ import annotations

import re

BARE_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")  # TOML v1.0 bare keys


class Said(str):
    """A ``found`` that is already prose (``"nothing"``), printed as is rather than as a value."""

    __slots__ = ()


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the operator's message.

    ``found`` is the offending value (shown the way TOML writes it) or a ``Said`` phrase.
    """

    def __init__(self, file: str, key: str, expected: str, found: object) -> None:
        self.file, self.key, self.expected, self.found = file, key, expected, found
        super().__init__(f"{file}: {key}: expected {expected}, found {show(found)}")


_SHOW_MAX = 60


def show(value: object) -> str:
    """``value`` written as TOML would write it, shortened; ``Said`` phrases as they are."""
    if isinstance(value, Said):
        return str(value)
    text = _toml(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or _escape(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _key(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return name if BARE_KEY_RE.fullmatch(name) else _toml(name)


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(c: str) -> str:
    """Control characters as TOML escapes, so a message stays on one line."""
    return f"\\u{ord(c):04X}" if ord(c) < 32 or ord(c) == 0x7F else c


def _kind(value: object) -> str:
    """What TOML calls ``value``'s type, with an article."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _found(value: object) -> Said:
    """``value`` with its type, for type mismatches: ``"5060" (a string)``."""
    if isinstance(value, dict):
        return Said("a table")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return Said("an array of tables")
    return Said(f"{show(value)} ({_kind(value)})")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
