"""The state plane's wire: update records, heartbeats and the snapshot exchange, sans-IO.

ZeroMQ Guide chapter 5 (Clustered Hashmap Protocol) gives the shape; the codec is our own
(pyzmq "serialization" howto: a function that turns a message into frames, and its inverse).

Rules:
1. A message is two frames, ``[kind, msgpack([version, *fields])]``. ``kind`` is the first
   frame so a SUB socket can filter on it; ``version`` is ``VERSION`` and anything else is
   refused (a newer peer must be upgraded, not half-understood).
2. ``Update(node, epoch, seq, kind, payload)``: ``node`` published it, ``epoch`` rises every
   time that publisher restarts, ``seq`` rises by one per update within an epoch, from 1.
   ``payload`` is one dialog delta exactly as ``dialogstate.table.DialogTable.take_deltas``
   emits it (``[op, call_id, from_tag, ...]``, ``docs/dialogs.md`` "Replication").
3. ``Hugz(node, epoch, seq, role)``: the publisher is alive and its last update is ``seq``
   (so a replica that missed the tail of a burst sees the gap without another update);
   ``role`` is its Binary Star state (``stateplane/bstar.py``), "" when it has none. A
   cluster member's adds its view (``stateplane/quorum.py``): ``sees`` and ``holds`` (lists
   of names), ``knows`` (a list of ``[member, epoch]``) and ``claims`` (a list of
   ``[member, holder, epoch, gen]``), each at most ``MAX_MEMBERS`` long.
4. Snapshot exchange (``stateplane/snapshot.py``): ``Icanhaz(node, req, epoch, seq)`` asks
   ``node``'s state plane for its state, saying what the asker already holds (epoch, seq;
   0, 0 for nothing); ``Chunk(node, req, records)`` carries up to a bounded number of
   snapshot records (``DialogTable.snapshot`` order); ``Kthxbai(node, req, epoch, seq, full,
   count)`` ends it: the records cover everything up to ``seq`` of ``epoch``; ``full`` says
   the records replace the asker's table (else the exchange replayed updates from the
   backlog instead); ``count`` is how many records or updates were sent.
5. ``unpack`` refuses garbage with one error type, ``UpdateError``: not msgpack, a kind we do
   not know, a wrong version, a wrong arity or field type, a delta whose op or length is not
   the dialog table's. Never anything else (a hypothesis test holds it to that). msgpack is
   read with ``raw=False``, ``strict_map_key=True`` from a frame of at most
   ``MAX_UPDATE_BYTES`` (a chunk: ``MAX_FRAME_BYTES``), with every container, string and
   binary bounded (msgpack README, "Security"), so a frame costs at most a bounded multiple
   of its size; chunks decode to tuples, whose empty ones are shared. Nothing is unpickled.
6. ``Ingresses(node, endpoints)``: the TCP endpoints of ``node``'s live ingresses, every
   heartbeat of an edge (``conf/discovery.py``); what each may be is checked by whoever uses
   it, the codec only reads a list of strings.
7. ``Keep(node, owner, source, records)``: snapshot records that ``node``'s state plane handed
   ``owner``, a worker of another host, as ``source`` (``stateplane/handover.py`` rule 6),
   for that host's state plane to keep until ``owner``'s own deltas reach it. Not numbered:
   a copy, never a change of ``node``'s state. ``pack_keeps`` splits records so that each
   message fits ``MAX_UPDATE_BYTES``, which every subscriber reads at most.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from stateplane.bstar import decode_roles
from stateplane.quorum import MAX_MEMBERS

VERSION = 1
#: update kinds; only dialog deltas today (the kv store and the directory may follow)
KIND_DIALOG = "dialog"
KINDS = frozenset({KIND_DIALOG})
#: a chunk of 1 000 records is ~0.5 MB; 8 MB leaves room for big headers and never more
MAX_FRAME_BYTES = 8 << 20
#: every other message is one delta or a few numbers: a "c" delta is a few KB (its strings
#: come from one SIP message); bounds what a frame of empty arrays can cost (~64x: 16 MB)
MAX_UPDATE_BYTES = 256 << 10
#: the widest container a message holds: a chunk's 1 000 records, a route set's entries
MAX_ARRAY_LEN = 4096
#: no message holds a map; a few keys are tolerated, never many
MAX_MAP_LEN = 64
#: a node name in a cluster member's heartbeat (``[node] name`` is far shorter in practice)
MAX_NAME_CHARS = 128
#: a delta's length per op, including op, call_id and from_tag (``docs/dialogs.md``);
#: "c" is the op and the 24 fields of ``dialogstate.record.RECORD``
DELTA_LENGTHS = {"c": 25, "f": 5, "e": 7, "a": 9, "u": 8, "r": 8, "t": 6}
#: Binary Star states a heartbeat may carry, per virtual address (``bstar.encode_roles``)
ROLES = frozenset({"primary", "backup", "active", "passive"})


class UpdateError(ValueError):
    """Frames that are not a message of this protocol (rule 5)."""


@dataclass(frozen=True, slots=True)
class Update:
    """One state change of ``node`` (rule 2)."""

    node: str
    epoch: int
    seq: int
    kind: str
    payload: list[Any]


@dataclass(frozen=True, slots=True)
class Hugz:
    """A heartbeat: ``node`` is alive in ``epoch`` and has published up to ``seq``."""

    node: str
    epoch: int
    seq: int
    role: str = ""
    #: a cluster member's view (``stateplane/quorum.py``): whom it hears, whose addresses
    #: it holds; empty in a pair
    sees: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()
    #: whom it has heard since it started, with the first epoch heard of each
    knows: tuple[tuple[str, int], ...] = ()
    #: who last took each member's address (quorum rule 3): (member, holder, epoch, gen)
    claims: tuple[tuple[str, str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Icanhaz:
    """Ask ``node`` for its state; the asker holds ``(epoch, seq)`` of it (0, 0: nothing)."""

    node: str
    req: int
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """Snapshot records of ``node`` for request ``req``."""

    node: str
    req: int
    records: list[list[Any]]


@dataclass(frozen=True, slots=True)
class Kthxbai:
    """End of the answer to ``req``: it covers ``node``'s updates up to ``(epoch, seq)``."""

    node: str
    req: int
    epoch: int
    seq: int
    full: bool
    count: int


@dataclass(frozen=True, slots=True)
class Ingresses:
    """``node``'s live ingresses, each ``tcp://ip:port`` (rule 6)."""

    node: str
    endpoints: list[str]


@dataclass(frozen=True, slots=True)
class Keep:
    """Records ``node`` handed ``owner`` (a worker of another host) as ``source``, for that
    host's state plane to keep (rule 7)."""

    node: str
    owner: str
    source: str
    records: list[list[Any]]


Message = Update | Hugz | Icanhaz | Chunk | Kthxbai | Ingresses | Keep

_KIND_OF: dict[type[Any], bytes] = {
    Update: b"UPD", Hugz: b"HUGZ", Icanhaz: b"ICANHAZ", Chunk: b"KVSYNC", Kthxbai: b"KTHXBAI",
    Ingresses: b"INGRESSES", Keep: b"KEEP",
}  # fmt: skip
#: what a ``Keep``'s frame holds besides its records (names are short; rule 7)
_KEEP_ROOM = 4096
#: the first frame of an ``Update``: a subscription to a prefix of it takes updates
KIND_UPDATE = _KIND_OF[Update]


def pack(msg: Message) -> list[bytes]:
    """The frames of ``msg`` (rule 1)."""
    if isinstance(msg, Update):
        body: list[Any] = [msg.node, msg.epoch, msg.seq, msg.kind, msg.payload]
    elif isinstance(msg, Hugz):
        body = [msg.node, msg.epoch, msg.seq, msg.role]
        if msg.sees:
            body += [list(msg.sees), list(msg.holds), [list(k) for k in msg.knows],
                     [list(c) for c in msg.claims]]  # fmt: skip
    elif isinstance(msg, Icanhaz):
        body = [msg.node, msg.req, msg.epoch, msg.seq]
    elif isinstance(msg, Chunk):
        body = [msg.node, msg.req, msg.records]
    elif isinstance(msg, Ingresses):
        body = [msg.node, msg.endpoints]
    elif isinstance(msg, Keep):
        body = [msg.node, msg.owner, msg.source, msg.records]
    else:
        body = [msg.node, msg.req, msg.epoch, msg.seq, msg.full, msg.count]
    return [_KIND_OF[type(msg)], msgpack.packb([VERSION, *body], use_bin_type=True)]


def pack_updates(node: str, epoch: int, first: int, payloads: list[list[Any]]) -> list[list[bytes]]:
    """The frames of ``Update(node, epoch, first + i, KIND_DIALOG, payloads[i])`` each,
    exactly as ``pack`` makes them, without building the updates (``Publisher.number``)."""
    packb = msgpack.Packer(use_bin_type=True).pack
    return [[KIND_UPDATE, packb([VERSION, node, epoch, first + i, KIND_DIALOG, p])]
            for i, p in enumerate(payloads)]  # fmt: skip


def pack_keeps(node: str, owner: str, source: str, records: list[list[Any]]) -> list[list[bytes]]:
    """The frames of as few ``Keep`` messages as carry ``records``, each within
    ``MAX_UPDATE_BYTES`` and ``MAX_ARRAY_LEN`` records (rule 7). A record too big for one
    message on its own (a "c" update carries the same fields, so none is) is left out."""
    packb = msgpack.Packer(use_bin_type=True).pack
    out: list[list[bytes]] = []
    chunk: list[list[Any]] = []
    size = 0
    for rec in records:
        n = len(packb(rec))
        if n + _KEEP_ROOM > MAX_UPDATE_BYTES:
            continue
        if chunk and (size + n + _KEEP_ROOM > MAX_UPDATE_BYTES or len(chunk) >= MAX_ARRAY_LEN):
            out.append(pack(Keep(node, owner, source, chunk)))
            chunk, size = [], 0
        chunk.append(rec)
        size += n
    if chunk:
        out.append(pack(Keep(node, owner, source, chunk)))
    return out


def unpack(frames: list[bytes]) -> Message:
    """The message in ``frames``.

    Raises:
        UpdateError: anything that is not a message of this protocol (rule 5).
    """
    if len(frames) != 2:
        raise UpdateError(f"{len(frames)} frames, expected 2")
    kind, data = bytes(frames[0]), frames[1]
    decode = _DECODERS.get(kind)
    if decode is None:
        raise UpdateError(f"unknown kind {kind[:16]!r}")
    limit = MAX_FRAME_BYTES if kind == b"KVSYNC" else MAX_UPDATE_BYTES
    if len(data) > limit:
        raise UpdateError(f"{len(data)} bytes is more than {limit}")
    try:
        # A chunk's arrays come back as tuples: the dialog table shares equal destinations
        # by looking tuples up as they are, where lists would first be copied into tuples
        # one by one (measured: a third of loading a record). The records themselves are
        # made lists again in ``_chunk``, so a ``Chunk`` reads the same either way.
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=kind != b"KVSYNC",
                               max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
                               max_str_len=MAX_UPDATE_BYTES, max_bin_len=MAX_UPDATE_BYTES)  # fmt: skip
    except Exception as exc:  # msgpack raises ValueError, TypeError and its own tree
        raise UpdateError(f"not msgpack: {exc}") from exc
    if not isinstance(body, (list, tuple)) or not body:
        raise UpdateError("body is not an array")
    if body[0] != VERSION or type(body[0]) is not int:
        raise UpdateError(f"version {body[0]!r}, expected {VERSION}")
    return decode(list(body[1:]))


def _int(v: Any, what: str, low: int = 0) -> int:
    if type(v) is not int or v < low:
        raise UpdateError(f"{what} {v!r} is not an integer >= {low}")
    return v


def _str(v: Any, what: str, empty: bool = False) -> str:
    if not isinstance(v, str) or (not v and not empty):
        raise UpdateError(f"{what} {v!r} is not a {'' if empty else 'non-empty '}string")
    return v


def _arity(body: list[Any], n: int, what: str) -> None:
    if len(body) != n:
        raise UpdateError(f"{what} has {len(body)} fields, expected {n}")


def check_delta(delta: Any) -> list[Any]:
    """``delta`` if it has the op, length and key types of a dialog delta (rule 5)."""
    if not isinstance(delta, list) or len(delta) < 3:
        raise UpdateError("delta is not an array of at least 3")
    op = delta[0]
    if not isinstance(op, str) or DELTA_LENGTHS.get(op) != len(delta):
        raise UpdateError(f"delta op {op!r} with {len(delta)} fields")
    _str(delta[1], "call_id")
    _str(delta[2], "from_tag", empty=True)
    return delta


def check_record(rec: Any) -> list[Any]:
    """``rec`` if it looks like a ``DialogTable.snapshot`` record."""
    if not isinstance(rec, list) or len(rec) != DELTA_LENGTHS["c"] - 1:
        raise UpdateError("record is not an array of 24")
    _str(rec[0], "call_id")
    _str(rec[1], "from_tag", empty=True)
    return rec


def _update(body: list[Any]) -> Update:
    _arity(body, 5, "UPD")
    node, epoch, seq, kind, payload = body
    if kind not in KINDS:
        raise UpdateError(f"update kind {kind!r}")
    return Update(_str(node, "node"), _int(epoch, "epoch"), _int(seq, "seq", 1), kind,
                  check_delta(payload))  # fmt: skip


def _roles_ok(role: Any) -> bool:
    """"" (no pair), or ``address=state,...`` with Binary Star states only."""
    if not isinstance(role, str) or len(role) > 4096:
        return False
    roles = decode_roles(role)
    return not role or (bool(roles) and all(state in ROLES for state in roles.values())
                        and len(roles) == role.count(",") + 1)  # fmt: skip


def _hugz(body: list[Any]) -> Hugz:
    if len(body) != 8:
        _arity(body, 4, "HUGZ")
    node, epoch, seq, role = body[:4]
    if not _roles_ok(role):
        raise UpdateError(f"role {str(role)[:80]!r}")
    hugz = Hugz(_str(node, "node"), _int(epoch, "epoch"), _int(seq, "seq"), role)
    if len(body) == 4:
        return hugz
    sees, holds = _names(body[4], "sees"), _names(body[5], "holds")
    return Hugz(hugz.node, hugz.epoch, hugz.seq, role, sees, holds, _knows(body[6]),
                _claims(body[7]))  # fmt: skip


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A cluster member's list of node names (``quorum.MAX_MEMBERS`` at most)."""
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise UpdateError(f"{what}: a list of at most {MAX_MEMBERS} names")
    names = tuple(_str(v, what) for v in value)
    if any(len(n) > MAX_NAME_CHARS for n in names):
        raise UpdateError(f"{what}: a name over {MAX_NAME_CHARS} characters")
    return names


def _knows(value: Any) -> tuple[tuple[str, int], ...]:
    """A cluster member's ``knows``: ``[member, first epoch heard]`` each."""
    return tuple((_names(e[:1], "knows")[0], _int(e[1], "knows epoch"))
                 for e in _entries(value, "knows", 2, "knows entry is not [member, epoch]"))  # fmt: skip


def _claims(value: Any) -> tuple[tuple[str, str, int, int], ...]:
    """A cluster member's record of claims: ``[member, holder, epoch, gen]`` each."""
    out = []
    for entry in _entries(value, "claims", 4, "claim is not [member, holder, epoch, gen]"):
        member, holder = _names(entry[:2], "claim")
        out.append((member, holder, _int(entry[2], "claim epoch"), _int(entry[3], "claim gen")))
    return tuple(out)


def _entries(value: Any, what: str, width: int, bad_entry: str) -> list[list[Any]]:
    """A list of at most ``MAX_MEMBERS`` entries, each a list of ``width`` fields."""
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise UpdateError(f"{what}: a list of at most {MAX_MEMBERS} entries")
    for entry in value:
        if not isinstance(entry, list) or len(entry) != width:
            raise UpdateError(bad_entry)
    return value


def _icanhaz(body: list[Any]) -> Icanhaz:
    _arity(body, 4, "ICANHAZ")
    node, req, epoch, seq = body
    return Icanhaz(_str(node, "node"), _int(req, "req"), _int(epoch, "epoch"), _int(seq, "seq"))


def _chunk(body: list[Any]) -> Chunk:
    _arity(body, 3, "KVSYNC")
    node, req, records = body
    if not isinstance(records, (list, tuple)):
        raise UpdateError("records is not an array")
    out = [check_record(list(rec) if type(rec) is tuple else rec) for rec in records]
    return Chunk(_str(node, "node"), _int(req, "req"), out)


def _kthxbai(body: list[Any]) -> Kthxbai:
    _arity(body, 6, "KTHXBAI")
    node, req, epoch, seq, full, count = body
    if not isinstance(full, bool):
        raise UpdateError(f"full {full!r} is not a boolean")
    return Kthxbai(_str(node, "node"), _int(req, "req"), _int(epoch, "epoch"), _int(seq, "seq"),
                   full, _int(count, "count"))  # fmt: skip


def _ingresses(body: list[Any]) -> Ingresses:
    _arity(body, 2, "INGRESSES")
    node, endpoints = body
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise UpdateError("endpoints is not an array of strings")
    return Ingresses(_str(node, "node"), endpoints)


def _keep(body: list[Any]) -> Keep:
    _arity(body, 4, "KEEP")
    node, owner, source, records = body
    if not isinstance(records, list):
        raise UpdateError("records is not an array")
    for what, name in (("owner", owner), ("source", source)):
        if len(_str(name, what)) > MAX_NAME_CHARS * 2:
            raise UpdateError(f"{what}: over {MAX_NAME_CHARS * 2} characters")
    return Keep(_str(node, "node"), owner, source, [check_record(r) for r in records])


_DECODERS: dict[bytes, Callable[[list[Any]], Message]] = {b"UPD": _update, b"HUGZ": _hugz, b"ICANHAZ": _icanhaz, b"KVSYNC": _chunk,
             b"KTHXBAI": _kthxbai, b"INGRESSES": _ingresses, b"KEEP": _keep}  # fmt: skip
