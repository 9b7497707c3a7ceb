"""The wire format between sipline processes (ZeroMQ multipart messages).

    frame 0   kind, whose first octet is the envelope version (``VERSION``)
    frame 1   msgpack header
    frame 2+  raw SIP messages, one frame each, never copied or re-encoded

Kinds:
    ``IN``  ingress -> worker.  header ``[ingress_id, [meta, ...]]``, one meta per SIP frame:
            ``[transport, src_ip, src_port, conn, local_ip, local_port, received_at]``
    ``OUT`` worker -> ingress.  header ``[[meta, ...]]``, one meta per SIP frame:
            ``[transport, dst_ip, dst_port, conn, local_ip, local_port]``; conn 0 means "any
            connection to dst, or a new one"; local_* names the listener to send from
    ``HB``  worker -> ingress heartbeat. header ``[worker_id, endpoint, state]``; state
            ``"up"`` or ``"down"`` (a worker leaving says so instead of going silent); workers
            send the same to every timers process. An ingress's ``HB`` to a worker of another
            host adds a fourth element, the idents of its ring (``conf/bustcp.py`` rule 6),
            and a fifth, the TCP endpoint of each (``""`` for a worker of its own host); one
            to a worker of its own host, first on the pipe it opens, is its hello
            (``ingress/bus.py`` rule 8)
    ``TOPS`` worker -> timers: timer operations (docs/timers.md). header
            ``[worker_id, epoch, end_sync, [arm, ...], [cancel, ...]]``, arm
            ``[key, deadline, kind, payload, gen]``, cancel ``[key, gen]``; no SIP frames
    ``TIMER`` timers -> worker: fires and notices. header ``[timers_id, [meta, ...]]``, one
            meta per frame: ``[op, key, kind, deadline, armer, gen]`` with op ``"f"`` (fired:
            the frame is the timer's payload) or ``"d"`` (done elsewhere: forget it)
    ``DLT`` worker -> stateplane: dialog deltas (docs/dialogs.md "Replication"). header
            ``[worker_id, [delta, ...]]``, oldest first; one empty frame per batch the pipe
            merged (so its backlog counts batches), nothing else
    ``ADOPT`` stateplane -> worker: dialogs to take. header ``[node, [record, ...],
            handed_back, source]``; ``source`` (optional on ipc) names who hands them, as the
            ``HANDED`` that follows does (``dialogstate/hosts.py`` rule 2). A fifth element,
            a worker of the receiver's host, asks it to keep the records for that worker on
            its state plane instead (``stateplane/handover.py`` rule 6)
    ``HANDED`` stateplane or worker -> worker: every dialog ``source`` owed the receiver has
            been sent before this (ADOPT on the same pipe). header ``[source, worker_id]``
            (``workers/dialogs/handover.py``); no SIP frames
    ``FWD`` worker -> worker: an ``IN`` (same header) a worker passes to the owner of its
            Call-ID after the dialogs moved; the receiver never forwards it again
    ``LEFT`` ingress -> worker: the worker said ``down`` and is out of our ring, or we are
            leaving; nothing of ours follows this on the pipe, so the worker need not wait
            for us any longer (``workers/bus.py`` rules 10-11). worker -> ingress: the
            answer to an ingress leaving, the same promise (``ingress/bus.py`` rule 7).
            header ``[ingress_id]`` or ``[worker_id]``; no SIP frames

Unpacking is strict (msgpack README, "Security"): string keys only, bounded lengths; anything
unexpected raises ``EnvelopeError``, which the receiver counts, logs and drops. The metas of
``IN`` and ``OUT`` are checked value by value (transport a string, addresses IP literals,
ports and connection ids integers in range, ``received_at`` a finite float): their readers
index and compute with them without looking, and an ``OUT`` address that is not a literal
would make the ingress resolve a name in its event loop. A hostile local process sends such
frames (tests/e2e/test_hostile_frames.py); a process of the node never does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
KIND_IN = b"\x01IN"
KIND_OUT = b"\x01OUT"
KIND_HB = b"\x01HB"
KIND_TOPS = b"\x01TOPS"
KIND_TIMER = b"\x01TIMER"
KIND_DELTAS = b"\x01DLT"
#: dialogs a worker takes over after a failover: [node they came from, records] and, from
#: a live node handing them back (a failback), a third element True
KIND_ADOPT = b"\x01ADOPT"
#: dialogs a worker lets go, without CDRs: [our node, [address, ...], [key, ...]]: those
#: reached on the addresses (a failback) and those keys (the peer owns them: split brain)
KIND_RELEASE = b"\x01RELEASE"
#: every dialog a source owed the receiver came before this: [source, receiver]
KIND_HANDED = b"\x01HANDED"
#: an IN passed on by a worker to the Call-ID's owner (workers/dialogs/handover.py)
KIND_FWD = b"\x01FWD"
#: the ingresses of other hosts the state plane learnt, for its workers (conf/discovery.py
#: rule 7): [[peer name, [endpoint, ...]], ...], no payload
KIND_INGRESSES = b"\x01INGR"
#: an ingress let go of a worker that said down: [ingress_id], after the last IN it sent it
KIND_LEFT = b"\x01LEFT"
KINDS = frozenset({KIND_IN, KIND_OUT, KIND_HB, KIND_TOPS, KIND_TIMER, KIND_DELTAS, KIND_ADOPT,
                   KIND_RELEASE, KIND_HANDED, KIND_FWD, KIND_INGRESSES, KIND_LEFT})  # fmt: skip
#: the state plane's sockets in a run directory: PULL for the workers' deltas, PUB of updates
#: and heartbeats, ROUTER of snapshots (docs/stateplane.md)
STATEPLANE_DELTAS = "stateplane-deltas.ipc"
STATEPLANE_PUB = "stateplane-pub.ipc"
STATEPLANE_SNAP = "stateplane-snap.ipc"

#: worker idents an ingress's ``HB`` names at most (``conf.bustcp.MAX_WORKERS``)
MAX_RING = 1024
#: headers are small; a bigger one is garbage or an attack
MAX_HEADER_BYTES = 1 << 20

# Index names of the per-message meta lists (lists, not dicts: ~3x cheaper to pack and unpack).
IN_TRANSPORT, IN_SRC_IP, IN_SRC_PORT, IN_CONN, IN_LOCAL_IP, IN_LOCAL_PORT, IN_RECEIVED_AT = range(7)
OUT_TRANSPORT, OUT_DST_IP, OUT_DST_PORT, OUT_CONN, OUT_LOCAL_IP, OUT_LOCAL_PORT = range(6)
TIMER_OP, TIMER_KEY, TIMER_KIND, TIMER_DEADLINE, TIMER_ARMER, TIMER_GEN = range(6)


class EnvelopeError(Exception):
    """A ZeroMQ message that is not a valid sipline envelope."""


@dataclass(slots=True)
class Envelope:
    kind: bytes
    header: Any
    payloads: list[bytes]


_packer = msgpack.Packer(use_bin_type=True)


def pack(kind: bytes, header: Any, payloads: list[bytes] | tuple[bytes, ...] = ()) -> list[bytes]:
    """Frames for ``socket.send_multipart(..., copy=False)``."""
    return [kind, _packer.pack(header), *payloads]


def unpack(frames: list[bytes]) -> Envelope:
    """Check and decode received frames.

    Raises:
        EnvelopeError: unknown kind or version, bad msgpack, or metas not matching payloads.
    """
    if len(frames) < 2:
        raise EnvelopeError("too few frames")
    kind = bytes(frames[0])
    if kind not in KINDS:
        raise EnvelopeError(f"unknown kind {kind[:8]!r}")
    raw_header = frames[1]
    if len(raw_header) > MAX_HEADER_BYTES:
        raise EnvelopeError("header too large")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise EnvelopeError(f"bad msgpack header: {exc}") from exc
    payloads = [bytes(f) for f in frames[2:]]
    _check_shape(kind, header, len(payloads), payloads)
    return Envelope(kind, header, payloads)


def _is_ring(x: Any) -> bool:
    """An ingress's ring in its ``HB`` over TCP: at most ``MAX_RING`` worker idents."""
    return isinstance(x, list) and len(x) <= MAX_RING and all(isinstance(i, str) for i in x)


def _check_shape(kind: bytes, header: Any, n: int, payloads: list[bytes]) -> None:
    if kind == KIND_HB:
        ok = (
            isinstance(header, list)
            and len(header) in (3, 4, 5)
            and all(isinstance(x, str) for x in header[:3])
            and (len(header) == 3 or _is_ring(header[3]))
            and (len(header) < 5 or (_is_ring(header[4]) and len(header[4]) == len(header[3])))
        )
    elif kind == KIND_INGRESSES:
        ok = (isinstance(header, list) and len(header) <= MAX_RING and n == 0
              and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                      and isinstance(e[1], list) and all(isinstance(x, str) for x in e[1])
                      for e in header))  # fmt: skip
    elif kind == KIND_HANDED:
        ok = (isinstance(header, list) and len(header) == 2
              and all(isinstance(x, str) for x in header) and n == 0)
    elif kind == KIND_LEFT:
        ok = isinstance(header, list) and len(header) == 1 and isinstance(header[0], str) and n == 0
    elif kind == KIND_IN or kind == KIND_FWD:
        ok = (
            isinstance(header, list)
            and len(header) == 2
            and isinstance(header[0], str)
            and _in_metas_ok(header[1], n)
        )
    elif kind == KIND_TOPS:
        ok = isinstance(header, list) and len(header) == 5 and isinstance(header[0], str) and (
            isinstance(header[3], list) and isinstance(header[4], list) and n == 0
        )
    elif kind == KIND_DELTAS or kind == KIND_ADOPT:
        ok = (
            isinstance(header, list)
            and (len(header) == 2
                 or (kind == KIND_ADOPT and len(header) in (3, 4, 5)
                     and isinstance(header[2], bool)
                     and all(isinstance(x, str) for x in header[3:])))
            and isinstance(header[0], str)
            and isinstance(header[1], list)
            and all(isinstance(d, list) for d in header[1])
            and all(not p for p in payloads)
        )
    elif kind == KIND_RELEASE:
        ok = (
            isinstance(header, list)
            and len(header) == 3
            and isinstance(header[0], str)
            and all(isinstance(x, list) and all(isinstance(a, str) for a in x)
                    for x in header[1:])
            and n == 0
        )
    elif kind == KIND_TIMER:
        ok = (
            isinstance(header, list)
            and len(header) == 2
            and isinstance(header[0], str)
            and _metas_ok(header[1], n, 6)
        )
    else:
        ok = isinstance(header, list) and len(header) == 1 and _out_metas_ok(header[0], n)
    if not ok:
        raise EnvelopeError(f"malformed {kind[1:].decode()} header")


def _metas_ok(metas: Any, n: int, width: int) -> bool:
    return (
        isinstance(metas, list)
        and len(metas) == n
        and all(isinstance(m, list) and len(m) == width for m in metas)
    )



def _in_metas_ok(metas: Any, n: int) -> bool:
    """``n`` metas ``[transport, src_ip, src_port, conn, local_ip, local_port, received_at]``.
    One loop with the checks inline: it runs for every message of the hop."""
    if type(metas) is not list or len(metas) != n:
        return False
    known = _IPS
    for m in metas:
        if type(m) is not list or len(m) != 7:
            return False
        ip, port, conn, lip, lport, t = m[1], m[2], m[3], m[4], m[5], m[6]
        if not (type(m[0]) is str and type(port) is int and 0 <= port <= 0xFFFF
                and type(conn) is int and conn >= 0 and type(lport) is int
                and 0 <= lport <= 0xFFFF and type(t) is float and t - t == 0.0  # not inf/nan
                and type(ip) is str and (ip in known or _learn(ip))
                and type(lip) is str and (lip in known or _learn(lip))):  # fmt: skip
            return False
    return True


def _out_metas_ok(metas: Any, n: int) -> bool:
    """``n`` metas ``[transport, dst_ip, dst_port, conn, local_ip, local_port]``."""
    if type(metas) is not list or len(metas) != n:
        return False
    known = _IPS
    for m in metas:
        if type(m) is not list or len(m) != 6:
            return False
        ip, port, conn, lip, lport = m[1], m[2], m[3], m[4], m[5]
        if not (type(m[0]) is str and type(port) is int and 0 <= port <= 0xFFFF
                and type(conn) is int and conn >= 0 and type(lport) is int
                and 0 <= lport <= 0xFFFF
                and type(ip) is str and (ip in known or _learn(ip))
                and type(lip) is str and (lip in known or _learn(lip))):  # fmt: skip
            return False
    return True


#: IP literals seen valid: a process talks to a few of them, so the check is a set lookup
_IPS: set[str] = set()
#: ``_IPS`` is emptied past this many (bounded whatever a sender makes up)
MAX_KNOWN_IPS = 4096


def _learn(text: str) -> bool:
    """``text`` is an IPv4 or IPv6 literal (remembered in ``_IPS`` if so)."""
    if not ip_literal(text):
        return False
    if len(_IPS) >= MAX_KNOWN_IPS:
        _IPS.clear()
    _IPS.add(text)
    return True


def ip_literal(text: str) -> bool:
    """``text`` is an IPv4 or IPv6 address (a name would make its user resolve it)."""
    if len(text) > 64:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
