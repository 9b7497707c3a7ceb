"""stateplane/persist.py: snapshot plus journal on disk, real files in a temporary directory."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from stateplane.persist import JOURNAL, SNAPSHOT, Persistence
from stateplane.replica import Publisher

from ..workers.dialog_helpers import T0, W0, table
from .helpers import NODE, call_op, state

OPS = ["invite", "180", "200", "reinvite", "bye", "fail"]


class Owner:
    """The owner mirror's side: a table, its publisher, and the journal they feed."""

    def __init__(self, directory: Path, epoch: int = 7) -> None:
        self.table = table()
        self.pub = Publisher(NODE, epoch)
        self.persist = Persistence(str(directory))
        self.persist.open_journal()

    def step(self, n: int, op: str, now: float) -> None:
        call_op(self.table, n, op, now)
        self.persist.append(self.pub.publish(self.table.take_deltas()))


def reloaded(directory: Path, now: float) -> tuple[list[object], object]:
    t = table()
    loaded = Persistence(str(directory)).load(t, now, W0 + now - T0)
    return state(t, now), loaded


def test_journal_alone_restores_the_table(tmp_path: Path) -> None:
    o = Owner(tmp_path)
    for n in range(6):
        for i, op in enumerate(["invite", "180", "200"][: 1 + n % 3]):
            o.step(n, op, T0 + i)
    o.step(2, "bye", T0 + 4)  # call 2 was answered
    got, loaded = reloaded(tmp_path, T0 + 5)
    assert got == state(o.table, T0 + 5) and len(got) == 5
    assert loaded.epoch == 7 and loaded.replayed == o.pub.seq and loaded.torn == 0  # type: ignore[attr-defined]


def test_fuzzy_snapshot_with_updates_between_chunks(tmp_path: Path, monkeypatch: object) -> None:
    """A snapshot built while calls go on, then more journal: the same table."""
    from stateplane import persist

    monkeypatch.setattr(persist, "CHUNK_RECORDS", 2)  # type: ignore[attr-defined]
    o = Owner(tmp_path)
    for n in range(7):
        o.step(n, "invite", T0)
    steps = o.persist.snapshot(o.table, o.pub.epoch, o.pub.seq, T0 + 1, W0 + 1)
    next(steps)
    for n in range(7):
        o.step(n, "200" if n % 2 else "fail", T0 + 2)  # between chunks
        next(steps, None)
    list(steps)  # the rest of the snapshot
    assert (tmp_path / SNAPSHOT).exists() and not (tmp_path / (JOURNAL + ".old")).exists()
    o.step(9, "invite", T0 + 3)
    got, loaded = reloaded(tmp_path, T0 + 4)
    assert got == state(o.table, T0 + 4)
    assert loaded.files == [SNAPSHOT, JOURNAL]  # type: ignore[attr-defined]


def test_a_torn_tail_keeps_what_was_whole(tmp_path: Path) -> None:
    o = Owner(tmp_path)
    for n in range(3):
        o.step(n, "invite", T0)
    whole = state(o.table, T0)
    o.persist.close()
    with (tmp_path / JOURNAL).open("ab") as f:
        f.write(b"\x93\xcf\x00\x00")  # the start of an entry the crash cut
    got, loaded = reloaded(tmp_path, T0)
    assert got == whole and loaded.torn == 1  # type: ignore[attr-defined]


def test_a_compaction_cut_short_loses_nothing(tmp_path: Path) -> None:
    """Crash after the journal was rotated but before the snapshot was in place, then a
    restart that journals more and compacts again: every state is recoverable."""
    o = Owner(tmp_path)
    for n in range(4):
        o.step(n, "invite", T0)
    steps = o.persist.snapshot(o.table, o.pub.epoch, o.pub.seq, T0, W0)
    next(steps)  # rotated, snapshot half written: the process dies here
    o.step(1, "200", T0 + 1)
    got, _ = reloaded(tmp_path, T0 + 2)
    assert got == state(o.table, T0 + 2)
    o.step(5, "invite", T0 + 2)
    list(o.persist.snapshot(o.table, o.pub.epoch, o.pub.seq, T0 + 2, W0 + 2))  # to its end
    o.step(2, "fail", T0 + 3)
    got, _ = reloaded(tmp_path, T0 + 3)
    assert got == state(o.table, T0 + 3)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(OPS)), max_size=40),
       st.integers(0, 40), st.integers(0, 2**32))  # fmt: skip
def test_any_history_and_snapshot_point_restores(tmp_path_factory: object, ops: list[tuple[int, str]],
                                                  snap_at: int, seed: int) -> None:  # fmt: skip
    directory = tmp_path_factory.mktemp("p")  # type: ignore[attr-defined]
    rng = random.Random(seed)
    o = Owner(directory)
    steps = None
    for i, (n, op) in enumerate(ops):
        if i == snap_at:
            steps = o.persist.snapshot(o.table, o.pub.epoch, o.pub.seq, T0 + i, W0 + i)
        o.step(n, op, T0 + i)
        if steps is not None and rng.random() < 0.5:
            next(steps, None)
    got, _ = reloaded(directory, T0 + len(ops))
    assert got == state(o.table, T0 + len(ops))
