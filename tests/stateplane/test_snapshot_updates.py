"""The snapshot exchange with updates arriving during it, and the wire refusing garbage."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateplane.replica import Resynced
from stateplane.snapshot import TableSource, serve
from stateplane.updates import (
    MAX_UPDATE_BYTES,
    Chunk,
    Hugz,
    Icanhaz,
    Ingresses,
    Keep,
    Kthxbai,
    Update,
    UpdateError,
    pack,
    pack_keeps,
    unpack,
)  # fmt: skip

from ..workers.dialog_helpers import T0, W0
from .helpers import NODE, Pair, byes, wire


def test_updates_during_a_chunked_snapshot() -> None:
    """A joiner queues updates heard while chunks stream (the source changes between chunks:
    a fuzzy snapshot), applies only those above the KTHXBAI seq, and converges."""
    p = Pair()
    for n in range(10):
        for op in ("invite", "180", "200"):
            p.step(n, op, T0)  # before the joiner exists: never delivered
    (ask,) = p.replica.start(T0)
    chunks = serve(ask.ask, p.pub, TableSource(p.owner), T0, W0, chunk_records=3)  # type: ignore[attr-defined]
    first = next(chunks)
    assert isinstance(first, Chunk) and len(first.records) == 3
    p.replica.receive_snapshot(wire(first), T0, W0)  # type: ignore[arg-type]
    during = p.step(5, "bye", T0 + 1) + p.step(6, "reinvite", T0 + 1) + p.step(11, "invite", T0 + 1)
    assert p.deliver(during, T0 + 1) == []  # queued
    events = []
    for m in chunks:
        events += p.replica.receive_snapshot(wire(m), T0 + 1, W0 + 1)  # type: ignore[arg-type]
    (done,) = events
    assert isinstance(done, Resynced) and done.full and done.seq == 30
    assert p.replica.seq == p.pub.seq == 33
    assert p.converged(T0 + 1) and byes(p.replica.table) == byes(p.owner)
    assert all(v == 1 for v in p.applied.values())


def test_a_snapshot_cut_short_keeps_the_old_table() -> None:
    """Chunks go to a staging table: until KTHXBAI the replica serves what it held."""
    p = Pair()
    p.answer(p.replica.start(T0), T0)
    p.deliver(p.step(1, "invite", T0), T0)
    held = p.replica.table
    p.step(2, "invite", T0)
    events = p.deliver(p.step(3, "invite", T0), T0)  # gap
    p.pub._backlog.clear()  # force a full snapshot
    for m in serve(events[0].ask, p.pub, TableSource(p.owner), T0, W0, 1):  # type: ignore[union-attr]
        if isinstance(m, Kthxbai):
            break  # the publisher dies before the end
        p.replica.receive_snapshot(wire(m), T0, W0)  # type: ignore[arg-type]
    assert p.replica.table is held and len(held) == 1 and p.replica.syncing


def test_chunks_of_another_request_are_ignored() -> None:
    p = Pair()
    p.replica.start(T0)
    assert p.replica.receive_snapshot(Kthxbai(NODE, 99, 1, 5, True, 0), T0, W0) == []
    assert p.replica.syncing


MESSAGES = [
    Update("n", 1, 1, "dialog", ["t", "cid", "ft", "bye", "caller", 1.5]),
    Hugz("n", 3, 7, "127.0.0.10=active,[::1]=passive"), Icanhaz("n", 1, 0, 0),
    Chunk("n", 2, [["cid", "ft", *range(22)]]), Kthxbai("n", 2, 1, 9, True, 1),
    Ingresses("n", ["tcp://127.0.0.2:7600", "tcp://[::1]:7601"]),
    Keep("n", "c.worker-1", "stateplane:n.worker-2", [["cid", "ft", *range(22)]]),
]  # fmt: skip


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: object) -> None:
    assert unpack(pack(msg)) == msg  # type: ignore[arg-type]


BAD = [
    [b"UPD"], [b"NOPE", b"\x90"], [b"UPD", b"\xc1"], [b"UPD", msgpack.packb({"a": 1})],
    [b"UPD", msgpack.packb([2, "n", 1, 1, "dialog", ["t", "c", "f", 1, 2, 3]])],
    [b"UPD", msgpack.packb([1, "n", 1, 0, "dialog", ["t", "c", "f", 1, 2, 3]])],
    [b"UPD", msgpack.packb([1, "n", 1, 1, "dialog", ["t", "c", "f"]])],
    [b"UPD", msgpack.packb([1, "n", 1, 1, "kv", ["t", "c", "f", 1, 2, 3]])],
    [b"UPD", msgpack.packb([1, "n", True, 1, "dialog", ["t", "c", "f", 1, 2, 3]])],
    [b"HUGZ", msgpack.packb([1, "", 1, 1, ""])], [b"HUGZ", msgpack.packb([1, "n", 1, 1, "boss"])],
    [b"KVSYNC", msgpack.packb([1, "n", 1, [["short"]]])],
    [b"KTHXBAI", msgpack.packb([1, "n", 1, 1, 1, 1, 0])],
    [b"INGRESSES", msgpack.packb([1, "n", ["tcp://127.0.0.2:1", 7]])],
    [b"INGRESSES", msgpack.packb([1, "n", "tcp://127.0.0.2:1"])],
    [b"INGRESSES", msgpack.packb([1, "", []])], [b"INGRESSES", msgpack.packb([1, "n"])],
    [b"KEEP", msgpack.packb([1, "n", "c.worker-1", "s", [["short"]]])],
    [b"KEEP", msgpack.packb([1, "n", "", "s", []])], [b"KEEP", msgpack.packb([1, "n", "o", 7, []])],
    [b"KEEP", msgpack.packb([1, "n", "o" * 300, "s", []])],
    [b"KEEP", msgpack.packb([1, "n", "o", "s", "records"])],
]  # fmt: skip


@pytest.mark.parametrize("frames", BAD, ids=range(len(BAD)))
def test_garbage_is_refused(frames: list[bytes]) -> None:
    with pytest.raises(UpdateError):
        unpack(frames)


@given(st.sampled_from([b"UPD", b"HUGZ", b"ICANHAZ", b"KVSYNC", b"KTHXBAI", b"INGRESSES", b"KEEP",
                        b"x"]), st.binary())  # fmt: skip
def test_anything_parses_or_raises_update_error(kind: bytes, data: bytes) -> None:
    try:
        unpack([kind, data])
    except UpdateError:
        pass


@given(st.sampled_from(MESSAGES), st.data())
def test_mutated_messages_parse_or_raise_update_error(msg: object, data: st.DataObject) -> None:
    kind, body = pack(msg)  # type: ignore[arg-type]
    i = data.draw(st.integers(0, len(body) - 1))
    b = data.draw(st.integers(0, 255))
    try:
        unpack([kind, body[:i] + bytes([b]) + body[i + 1 :]])
    except UpdateError:
        pass


def test_copies_to_keep_are_split_to_what_a_subscriber_reads() -> None:
    """``updates.py`` rule 7: records of 100 KB each go one or two to a message, each message
    within ``MAX_UPDATE_BYTES`` (a subscriber's cap: a larger one would cut its connection),
    every record once and in order; one that no message could carry is left out."""
    recs = [[f"cid-{i}", "ft", "x" * 100_000, *range(21)] for i in range(5)]
    huge = ["huge", "ft", "x" * MAX_UPDATE_BYTES, *range(21)]
    frames = pack_keeps("n", "c.worker-1", "stateplane@n", [*recs[:2], huge, *recs[2:]])
    assert len(frames) == 3 and all(len(f[1]) <= MAX_UPDATE_BYTES for f in frames)
    got = [unpack(f) for f in frames]
    assert all(isinstance(m, Keep) and m.owner == "c.worker-1" for m in got)
    assert [r[0] for m in got for r in m.records] == [r[0] for r in recs]  # type: ignore[union-attr]
