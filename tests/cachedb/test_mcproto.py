"""The memcached text protocol helpers (sans-IO)."""

from __future__ import annotations

import pytest

from workers.cachedb import mcproto


@pytest.mark.parametrize(
    ("ttl_s", "expected"),
    [(None, 0), (0.001, 2), (1.0, 2), (1.5, 3), (3600, 3601), (30 * 86400 - 1, 30 * 86400)],
)
def test_exptime_never_early(ttl_s: float | None, expected: int) -> None:
    """TTLs become whole seconds rounded up plus one tick of memcached's clock."""
    assert mcproto.exptime(ttl_s, wall_now=1_700_000_000.0) == expected


def test_exptime_absolute_past_30_days() -> None:
    """Past 30 days memcached wants a Unix time."""
    assert mcproto.exptime(40 * 86400, wall_now=1_700_000_000.5) == 1_700_000_000 + 40 * 86400 + 1


def test_commands() -> None:
    """Commands are one line (plus the data block for storage)."""
    assert mcproto.storage(b"add", "k", b"a\r\nb", 5) == b"add k 0 5 4\r\na\r\nb\r\n"
    assert mcproto.delta(b"incr", "é", 3) == "incr é 3\r\n".encode()


@pytest.mark.parametrize(
    ("fn", "line", "result"),
    [
        (mcproto.stored, b"STORED\r\n", True),
        (mcproto.stored, b"NOT_STORED\r\n", False),
        (mcproto.number, b"42\r\n", 42),
        (mcproto.number, b"NOT_FOUND\r\n", None),
        (mcproto.deleted, b"DELETED\r\n", True),
        (mcproto.deleted, b"NOT_FOUND\r\n", False),
        (mcproto.value_header, b"END\r\n", None),
        (mcproto.value_header, b"VALUE k 0 12\r\n", 12),
    ],
)
def test_replies(fn: object, line: bytes, result: object) -> None:
    """Each expected reply line has one meaning."""
    assert fn(line) == result  # type: ignore[operator]


def test_refusals_and_surprises() -> None:
    """SERVER_ERROR/CLIENT_ERROR are ServerError (connection still in step); anything else
    is a ProtocolError (close the connection)."""
    with pytest.raises(mcproto.ServerError) as info:
        mcproto.number(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    assert info.value.non_numeric
    with pytest.raises(mcproto.ServerError):
        mcproto.stored(b"SERVER_ERROR out of memory storing object\r\n")
    for fn in (mcproto.stored, mcproto.number, mcproto.deleted, mcproto.value_header):
        with pytest.raises(mcproto.ProtocolError):
            fn(b"ERROR\r\n")
