"""The memcached text protocol (memcached ``doc/protocol.txt``), sans-IO: commands to bytes,
reply lines to meanings. ``backend_memcached.py`` does the reading and writing.

Rules:
1. We use only ``get``, ``set``, ``add``, ``incr``, ``decr``, ``delete`` with flags 0; keys were
   checked by ``interface.check_key`` (no space, no control character), so a command line can
   never be split or smuggled.
2. Expiry: memcached counts whole seconds on a clock that ticks once a second, so an item
   given ``exptime = n`` lives between n - 1 and n seconds. To keep "never gone before
   ``ttl_s``" we send ``ceil(ttl_s) + 1``; above 30 days memcached reads ``exptime`` as a Unix
   time, so we send one.
3. A reply line we do not expect is a ``ProtocolError``: the connection's state is unknown and
   it must be closed.
"""

from __future__ import annotations

import math

#: memcached reads a larger exptime as an absolute Unix time (doc/protocol.txt, "Expiration")
MAX_RELATIVE_S = 60 * 60 * 24 * 30


class ProtocolError(Exception):
    """A reply that does not fit the command: close the connection."""


class ServerError(Exception):
    """``SERVER_ERROR`` or ``CLIENT_ERROR``: the server refused this command; the connection is
    still in step."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line.decode("ascii", "replace"))
        self.line = line

    @property
    def non_numeric(self) -> bool:
        return b"non-numeric" in self.line or b"invalid numeric" in self.line


def exptime(ttl_s: float | None, wall_now: float) -> int:
    """The ``exptime`` field for ``ttl_s`` (rule 2); 0 means never."""
    if ttl_s is None:
        return 0
    n = math.ceil(ttl_s) + 1
    return n if n <= MAX_RELATIVE_S else int(wall_now) + n


def storage(verb: bytes, key: str, value: bytes, exp: int) -> bytes:
    return b"%s %s 0 %d %d\r\n%s\r\n" % (verb, key.encode(), exp, len(value), value)


def get(key: str) -> bytes:
    return b"get %s\r\n" % key.encode()


def delta(verb: bytes, key: str, by: int) -> bytes:
    return b"%s %s %d\r\n" % (verb, key.encode(), by)


def delete(key: str) -> bytes:
    return b"delete %s\r\n" % key.encode()


def value_header(line: bytes) -> int | None:
    """Size of the data block announced by a ``get`` reply line; None for ``END``."""
    if line == b"END\r\n":
        return None
    parts = line.split()
    if len(parts) != 4 or parts[0] != b"VALUE" or not parts[3].isdigit():
        _refused(line)
        raise ProtocolError(f"unexpected get reply {line[:80]!r}")
    return int(parts[3])


def stored(line: bytes) -> bool:
    """``set``/``add``: True for STORED, False for NOT_STORED."""
    if line == b"STORED\r\n":
        return True
    if line == b"NOT_STORED\r\n":
        return False
    _refused(line)
    raise ProtocolError(f"unexpected storage reply {line[:80]!r}")


def number(line: bytes) -> int | None:
    """``incr``/``decr``: the new value, or None for NOT_FOUND."""
    if line == b"NOT_FOUND\r\n":
        return None
    digits = line.rstrip(b"\r\n")
    if digits.isdigit():
        return int(digits)
    _refused(line)
    raise ProtocolError(f"unexpected incr/decr reply {line[:80]!r}")


def deleted(line: bytes) -> bool:
    if line == b"DELETED\r\n":
        return True
    if line == b"NOT_FOUND\r\n":
        return False
    _refused(line)
    raise ProtocolError(f"unexpected delete reply {line[:80]!r}")


def _refused(line: bytes) -> None:
    if line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR")):
        raise ServerError(line.rstrip(b"\r\n"))
