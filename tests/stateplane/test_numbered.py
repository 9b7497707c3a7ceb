"""The state plane's cheap path for its workers' deltas (``Publisher.number``,
``updates.pack_updates``, ``Persistence.append_numbered``) makes the same frames, journal
bytes and replays as the ``Update`` objects it no longer builds per delta."""

from __future__ import annotations

from pathlib import Path

from stateplane.persist import JOURNAL, Persistence
from stateplane.replica import Publisher
from stateplane.updates import Update, pack, pack_updates, unpack

from ..workers.dialog_helpers import T0, table
from .helpers import NODE, call_op


def deltas(calls: int) -> list[list[object]]:
    t, out = table(), []
    for n in range(calls):
        for op in ("invite", "180", "200", "bye"):
            call_op(t, n, op, T0 + n)
            out += t.take_deltas()
    return out


def test_numbered_frames_journal_and_replay_match_updates(tmp_path: Path) -> None:
    payloads = deltas(5)
    assert len(payloads) >= 15
    built, cheap = Publisher(NODE, 9, backlog=8), Publisher(NODE, 9, backlog=8)
    updates = built.publish(payloads[:3]) + built.publish(payloads[3:])
    first = cheap.number(payloads[:3])
    second = cheap.number(payloads[3:])
    assert (first, second, cheap.seq) == (1, 4, built.seq) == (1, 4, len(payloads))
    frames = pack_updates(NODE, 9, 1, payloads[:3]) + pack_updates(NODE, 9, 4, payloads[3:])
    assert frames == [pack(u) for u in updates]
    assert [unpack(f).seq for f in frames] == list(range(1, len(payloads) + 1))  # type: ignore[union-attr]
    # the backlog keeps the last 8: replays from inside it, refuses before it
    assert cheap.since(9, len(payloads) - 8) == built.since(9, len(payloads) - 8) == updates[-8:]
    assert cheap.since(9, len(payloads) - 3) == updates[-3:]
    assert cheap.since(9, len(payloads)) == []
    assert cheap.since(9, len(payloads) - 9) is None and cheap.since(8, 0) is None
    assert cheap.since(9, len(payloads) + 1) is None
    assert all(isinstance(u, Update) for u in cheap.since(9, len(payloads) - 8) or [])
    a, b = tmp_path / "a", tmp_path / "b"
    for d, numbered in ((a, False), (b, True)):
        d.mkdir()
        p = Persistence(str(d))
        p.open_journal()
        if numbered:
            p.append_numbered(9, 1, payloads[:3])
            p.append_numbered(9, 4, payloads[3:])
        else:
            p.append(updates[:3])
            p.append(updates[3:])
        assert p.since_snapshot == len(payloads)
    assert (a / JOURNAL).read_bytes() == (b / JOURNAL).read_bytes()
