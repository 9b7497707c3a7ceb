"""The node's dialogs on disk: a snapshot plus a journal, so a node restarted alone comes back
with its calls (``docs/stateplane.md`` "Persistence").

Rules:
1. The journal is every update the state plane publishes, in order, as msgpack
   ``[epoch, seq, delta]``, written with one ``os.write`` per batch of deltas as it is
   published: a killed process loses nothing written; a power cut loses what the OS had not
   flushed since the last ``sync`` (every heartbeat, ``os.fdatasync``).
2. The snapshot is the owner mirror's records at a position ``(epoch, seq)``, built lazily in
   chunks over loop turns like a Clone snapshot, and therefore *fuzzy* in the same way
   (``snapshot.py`` rule 3): replaying every journal entry after the position over it gives
   the mirror's state. It is written to a temporary file, synced and renamed, so a snapshot
   on disk is always whole.
3. Compaction: when a snapshot starts, the journal is renamed ``.old`` (appended to an
   ``.old`` a cut-short compaction left) and a new one begun; when the snapshot is in place,
   ``.old`` is removed. A crash in between leaves the old
   snapshot, ``.old`` and the new journal: ``load`` replays both journals, skipping entries
   at or before the snapshot's position, so nothing is lost either way.
4. ``load`` stops at a torn tail (a write cut short by the crash): what was whole before it is
   kept and the tail is counted.
5. Positions compare as ``(epoch, seq)``: epochs rise across restarts (``next_epoch`` from the
   highest one on disk), so every later entry sorts after every earlier one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from dialogstate.table import DialogTable
from stateplane.snapshot import CHUNK_RECORDS
from stateplane.updates import Update

VERSION = 1
SNAPSHOT, JOURNAL = "dialogs.snap", "dialogs.journal"


@dataclass(slots=True)
class Loaded:
    """What ``load`` found: the records to restore, the highest epoch seen (the next one must
    be above it), entries replayed, and torn tails skipped."""

    records: list[list[Any]]
    epoch: int = 0
    replayed: int = 0
    torn: int = 0
    position: tuple[int, int] = (0, 0)
    files: list[str] = field(default_factory=list)


class Persistence:
    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self.since_snapshot = 0

    # -- start-up ----------------------------------------------------------------------------

    def load(self, table: DialogTable, now: float, wall: float) -> Loaded:
        """Rules 2-4: rebuild ``table`` (emptied first) from the snapshot and the journals."""
        out = Loaded([])
        table.restore([], now, wall)
        snap = self.dir / SNAPSHOT
        if snap.exists():
            with snap.open("rb") as f:
                unpacker = msgpack.Unpacker(f, raw=False, use_list=True)
                head = next(unpacker)
                _, epoch, seq, _count = head
                out.position, out.epoch = (epoch, seq), epoch
                for rec in unpacker:
                    table.apply(["c", *rec], now, wall)
            out.files.append(SNAPSHOT)
        for name in (JOURNAL + ".old", JOURNAL):
            path = self.dir / name
            if not path.exists():
                continue
            out.files.append(name)
            with path.open("rb") as f:
                unpacker = msgpack.Unpacker(f, raw=False, use_list=True)
                try:
                    for epoch, seq, delta in unpacker:
                        out.epoch = max(out.epoch, epoch)
                        if (epoch, seq) <= out.position:
                            continue
                        table.apply(delta, now, wall)
                        out.position = (epoch, seq)
                        out.replayed += 1
                except (ValueError, TypeError, msgpack.UnpackException):  # rule 4
                    out.torn += 1
            if unpacker.tell() < path.stat().st_size:  # an incomplete last object
                out.torn += 1
        out.records = table.snapshot(now, wall)
        return out

    # -- the journal -------------------------------------------------------------------------

    def open_journal(self) -> None:
        self._fd = os.open(self.dir / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, updates: list[Update]) -> None:
        """Rule 1: one write for the batch."""
        if not updates or self._fd < 0:
            return
        pack = msgpack.Packer(use_bin_type=True).pack
        os.write(self._fd, b"".join(pack([u.epoch, u.seq, u.payload]) for u in updates))
        self.since_snapshot += len(updates)

    def append_numbered(self, epoch: int, first: int, payloads: list[list[Any]]) -> None:
        """``append`` of the updates ``first``, ``first + 1`` ... of ``epoch`` carrying
        ``payloads`` (``Publisher.number``), without building them: the same bytes."""
        if not payloads or self._fd < 0:
            return
        pack = msgpack.Packer(use_bin_type=True).pack
        os.write(self._fd, b"".join([pack([epoch, first + i, p]) for i, p in enumerate(payloads)]))
        self.since_snapshot += len(payloads)

    def sync(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)

    # -- compaction --------------------------------------------------------------------------

    def snapshot(self, table: DialogTable, epoch: int, seq: int, now: float,
                 wall: float) -> Iterator[None]:  # fmt: skip
        """Rules 2-3: yields between chunks; the caller steps it once per loop turn."""
        old, cur = self.dir / (JOURNAL + ".old"), self.dir / JOURNAL
        if old.exists():  # a compaction cut short before us: keep its entries too
            with old.open("ab") as dst, cur.open("rb") as src:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            cur.unlink()
        else:
            os.replace(cur, old)
        os.close(self._fd)
        self.open_journal()
        self.since_snapshot = 0
        keys = table.keys()
        tmp = self.dir / (SNAPSHOT + ".tmp")
        pack = msgpack.Packer(use_bin_type=True).pack
        with tmp.open("wb") as f:
            f.write(pack([VERSION, epoch, seq, len(keys)]))
            for start in range(0, len(keys), CHUNK_RECORDS):
                recs = (table.record(k, now, wall) for k in keys[start : start + CHUNK_RECORDS])
                f.write(b"".join(pack(r) for r in recs if r is not None))
                yield
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / SNAPSHOT)
        old.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
