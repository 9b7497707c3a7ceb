"""The node's embedded key-value store (the ``local://`` cacheDB), sans-IO, and its wire format.

Rules:
1. ``KvStore`` does no I/O and reads no clock: every call takes ``now`` (seconds, any
   monotonic origin; the server passes ``loop.time()``). TTLs are relative on the wire and
   turned into absolute deadlines here, so client and server clocks never need to agree.
2. An expired key is gone for every read at once (checked on access); ``expire(now, limit)``
   reclaims the memory of expired keys in bounded batches, earliest deadline first.
3. Memory is bounded by ``max_keys`` and ``max_bytes`` (UTF-8 key + value bytes; Python's own
   overhead, ~200 bytes a key, comes on top and is bounded by ``max_keys``). A write that
   needs room first drops expired keys; if that is not enough the policy decides:
   ``refuse`` raises ``StoreFull`` (nothing is lost silently: registrations live here), and
   ``evict`` drops least recently used keys until the write fits.
4. Counters follow ``workers/cachedb/interface.py`` rule 3 exactly (the contract tests hold
   every backend to it).
5. Wire (ZeroMQ DEALER -> ROUTER, pyzmq "serialization" howto): a request is
   ``[rid, msgpack([op, key, ttl_s, by]), value]`` and its reply
   ``[rid, msgpack([status, number]), value]``; the value travels in its own frame, never
   copied into msgpack. ``rid`` is the client's opaque request id, echoed back. ``status`` is
   one of ``STATUSES``; a reply to a request that could not be decoded says ``bad_request``.
   One ZeroMQ message carries a batch: the requests a client made in one loop iteration,
   three frames each, answered by one message of their replies in the same order (batching
   per loop iteration, as the ingress pipe does, saves a send per call).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

OnFull = Literal["refuse", "evict"]

MAX_COUNTER = 2**63 - 1
#: the longest TTL a request may ask: ~68 years, finite (an infinite or NaN deadline in the
#: expiry heap would never come due, and NaN, false in every comparison, can stop the sweep
#: for every key behind it)
MAX_TTL_S = float(2**31)
OPS = frozenset({"get", "set", "add", "incr", "decr", "delete", "ping"})
STATUSES = frozenset({"ok", "none", "full", "bad_value", "bad_request"})
#: a header is an op, a key of at most 250 bytes and two numbers: 1 KiB is plenty
MAX_HEADER_BYTES = 1024


def endpoint(run_dir: str) -> str:
    """Where a node's ``local://`` cacheDB clients find the store."""
    return f"ipc://{run_dir}/stateplane-kv.ipc"


class StoreFull(Exception):
    """No room for the write under the ``refuse`` policy."""


class NotACounter(ValueError):
    """incr/decr of a value that is not a decimal integer from 0 to 2**63 - 1."""


class WireError(ValueError):
    """Frames that are not a request or a reply of this protocol."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KvLimits:
    """Bounds of the embedded store."""

    max_keys: int = 1_000_000
    """Keys held at most (a registration is one key: a million phones per node)."""
    max_bytes: int = 256 << 20
    """Key and value bytes held at most."""
    on_full: OnFull = "refuse"
    """``refuse``: a write that does not fit fails with 503; ``evict``: drop LRU keys."""


class _Entry:
    __slots__ = ("expires_at", "value")

    def __init__(self, value: bytes, expires_at: float | None) -> None:
        self.value = value
        self.expires_at = expires_at


class KvStore:
    """Keys to bytes with TTLs, LRU order and bounded memory; see the module rules."""

    def __init__(self, limits: KvLimits | None = None) -> None:
        self.limits = limits or KvLimits()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._deadlines: list[tuple[float, str]] = []  # heap; stale rows skipped on pop
        self.bytes_used = 0
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._data)

    # reads ---------------------------------------------------------------------------------

    def get(self, key: str, now: float) -> bytes | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        self._data.move_to_end(key)
        return entry.value

    def peek(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        """``(value, expires_at)`` of a live key, leaving its LRU place alone (for the
        journal, ``stateplane/kvdisk.py``)."""
        entry = self._data.get(key)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
            return None
        return entry.value, entry.expires_at

    def items(self, now: float) -> Iterator[tuple[str, bytes, float | None]]:
        """Every live key as ``(key, value, expires_at)``, least recently used first (a
        snapshot loaded in this order keeps the LRU order). Do not write while iterating."""
        for key, e in self._data.items():
            if e.expires_at is None or e.expires_at > now:
                yield key, e.value, e.expires_at

    # writes --------------------------------------------------------------------------------

    def set(self, key: str, value: bytes, ttl_s: float | None, now: float) -> None:
        """Raises:
        StoreFull: no room under the ``refuse`` policy.
        """
        self._put(key, value, None if ttl_s is None else now + ttl_s, now)

    def add(self, key: str, value: bytes, ttl_s: float | None, now: float) -> bool:
        if self._live(key, now) is not None:
            return False
        self.set(key, value, ttl_s, now)
        return True

    def incr(self, key: str, by: int, ttl_s: float | None, now: float) -> int:
        """Raises:
        NotACounter: the value is not a counter, or the sum passes 2**63 - 1.
        StoreFull: a new key and no room for it.
        """
        entry = self._live(key, now)
        if entry is None:
            self.set(key, b"%d" % by, ttl_s, now)
            return by
        total = _counter(entry.value) + by
        if total > MAX_COUNTER:
            raise NotACounter(f"{key}: counter would pass 2**63 - 1")
        self._put(key, b"%d" % total, entry.expires_at, now)
        return total

    def decr(self, key: str, by: int, now: float) -> int:
        entry = self._live(key, now)
        if entry is None:
            return 0
        total = max(0, _counter(entry.value) - by)
        self._put(key, b"%d" % total, entry.expires_at, now)
        return total

    def delete(self, key: str, now: float) -> bool:
        existed = self._live(key, now) is not None
        if existed:
            self._drop(key)
        return existed

    # time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest expiry still scheduled (maybe of a key since replaced), or None."""
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float, limit: int = 10_000) -> int:
        """Drop up to ``limit`` keys whose deadline has passed; returns how many."""
        dropped = 0
        heap = self._deadlines
        while heap and heap[0][0] <= now and dropped < limit:
            at, key = heapq.heappop(heap)
            entry = self._data.get(key)
            if entry is not None and entry.expires_at == at:
                self._drop(key)
                dropped += 1
        self.expired += dropped
        return dropped

    # inside --------------------------------------------------------------------------------

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            self._drop(key)
            self.expired += 1
            return None
        return entry

    def _put(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        old = self._live(key, now)  # an expired old value is gone, not overwritten in place
        grow = len(key.encode()) + len(value) if old is None else len(value) - len(old.value)
        self._make_room(key, 0 if old is not None else 1, grow, now)
        rescheduled = expires_at is not None and (old is None or old.expires_at != expires_at)
        if old is None:
            self._data[key] = _Entry(value, expires_at)
        else:
            old.value, old.expires_at = value, expires_at
            self._data.move_to_end(key)
        self.bytes_used += grow
        if rescheduled:
            assert expires_at is not None
            heapq.heappush(self._deadlines, (expires_at, key))
            self._compact()

    def _make_room(self, key: str, more_keys: int, more_bytes: int, now: float) -> None:
        lim = self.limits
        if (
            len(self._data) + more_keys <= lim.max_keys
            and self.bytes_used + more_bytes <= lim.max_bytes
        ):
            return
        self.expire(now, limit=len(self._data))
        while (
            len(self._data) + more_keys > lim.max_keys
            or self.bytes_used + more_bytes > lim.max_bytes
        ):
            victim = next((k for k in self._data if k != key), None)  # never the key written
            if lim.on_full == "refuse" or victim is None:
                raise StoreFull(f"{len(self._data)} keys, {self.bytes_used} bytes held")
            self._drop(victim)
            self.evicted += 1

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key)
        self.bytes_used -= len(key.encode()) + len(entry.value)

    def _compact(self) -> None:
        # replaced TTLs leave stale heap rows: rebuild when they outnumber live keys
        if len(self._deadlines) > 2 * len(self._data) + 1024:
            self._deadlines = [
                (e.expires_at, k) for k, e in self._data.items() if e.expires_at is not None
            ]
            heapq.heapify(self._deadlines)


def _counter(value: bytes) -> int:
    # what memcached accepts: decimal digits (it pads decremented counters with spaces)
    digits = value.rstrip(b" ")
    if not digits.isdigit() or len(digits) > 19 or int(digits) > MAX_COUNTER:
        raise NotACounter("value is not a counter")
    return int(digits)


# wire ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    key: str
    ttl_s: float | None
    by: int
    value: bytes


def pack_request(rid: bytes, req: Request) -> list[bytes]:
    return [rid, msgpack.packb([req.op, req.key, req.ttl_s, req.by]), req.value]


def unpack_request(frames: list[bytes]) -> Request:
    """Raises:
    WireError: not a well-formed request (the caller answers ``bad_request``).
    """
    if len(frames) != 3:
        raise WireError(f"a request has 3 frames, found {len(frames)}")
    head = _unpack_header(frames[1])
    if not (isinstance(head, list) and len(head) == 4):
        raise WireError("a request header is [op, key, ttl_s, by]")
    op, key, ttl_s, by = head
    if op not in OPS or not isinstance(key, str):
        raise WireError(f"unknown op or bad key: {op!r}")
    if ttl_s is not None and (type(ttl_s) not in (int, float) or not 0 < ttl_s <= MAX_TTL_S):
        raise WireError(f"ttl_s is None or in (0, {MAX_TTL_S:.0f}], found {ttl_s!r}")
    if not isinstance(by, int) or not 0 <= by <= MAX_COUNTER:
        raise WireError(f"by is 0 to 2**63 - 1, found {by!r}")
    return Request(op, key, ttl_s, by, frames[2])


def pack_reply(
    rid: bytes, status: str, number: int | None = None, value: bytes = b""
) -> list[bytes]:
    return [rid, msgpack.packb([status, number]), value]


def unpack_reply(frames: list[bytes]) -> tuple[bytes, str, int | None, bytes]:
    """``(rid, status, number, value)``.

    Raises:
        WireError: not a well-formed reply.
    """
    if len(frames) != 3:
        raise WireError(f"a reply has 3 frames, found {len(frames)}")
    head = _unpack_header(frames[1])
    if not (isinstance(head, list) and len(head) == 2 and head[0] in STATUSES):
        raise WireError("a reply header is [status, number]")
    return frames[0], head[0], head[1], frames[2]


def _unpack_header(raw: bytes) -> Any:
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("header too large")
    try:  # the size check above bounds what msgpack may allocate
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"undecodable header: {exc}") from exc


def apply(store: KvStore, req: Request, now: float) -> tuple[str, int | None, bytes]:
    """Run one decoded request on the store: ``(status, number, value)`` for the reply."""
    try:
        return _apply(store, req, now)
    except StoreFull:
        return "full", None, b""
    except NotACounter:
        return "bad_value", None, b""


def _apply(store: KvStore, req: Request, now: float) -> tuple[str, int | None, bytes]:
    op, key = req.op, req.key
    if op == "get":
        value = store.get(key, now)
        return ("none", None, b"") if value is None else ("ok", None, value)
    if op == "set":
        store.set(key, req.value, req.ttl_s, now)
        return "ok", None, b""
    if op == "add":
        return ("ok" if store.add(key, req.value, req.ttl_s, now) else "none"), None, b""
    if op == "incr":
        return "ok", store.incr(key, req.by, req.ttl_s, now), b""
    if op == "decr":
        return "ok", store.decr(key, req.by, now), b""
    if op == "delete":
        return ("ok" if store.delete(key, now) else "none"), None, b""
    return "ok", len(store), b""  # ping
