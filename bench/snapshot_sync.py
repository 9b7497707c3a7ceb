"""Late-joiner sync through the pure code path: records built from the owner's table, packed
in chunks, unpacked, and loaded into the joiner's staging table (no sockets).

Usage (repo root):  .venv/bin/python bench/snapshot_sync.py [--dialogs 100000 1000000]

The owner's table is filled with ``restore`` from records cloned from one real confirmed
dialog (sipp-like bytes of bench/dialog_memory.py), each with its own Call-ID and tags, so
nothing is shared that a live table would not share. Timed: ``serve`` (records, chunks) →
``pack`` → ``unpack`` → ``SnapshotClient.receive`` (apply) → ``Replica`` swap, each message
under ``collector_paused`` as the state plane runs it; the owner's heap is frozen first,
since in a deployment it lives in another process and costs the joiner no GC scans.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replica_memory import owner_records, replica_settings
from dialogstate.table import DialogTable
from stateplane.replica import Publisher, Replica
from stateplane.snapshot import collector_paused, serve
from stateplane.updates import pack, unpack

NOW, WALL = 1000.0, 1_700_000_000.0


def run(n: int) -> tuple[float, float]:
    settings = replica_settings(n)
    owner = DialogTable(settings)
    owner.restore(owner_records(n, NOW, WALL), NOW, WALL)
    # The owner is another process in real life: keep its heap out of the joiner's GC scans.
    gc.collect()
    gc.freeze()
    pub = Publisher("node-a", 1)
    replica = Replica("node-a", lambda: DialogTable(settings), now=NOW)
    (ask,) = replica.start(NOW)
    wire_s = 0.0
    t0 = time.perf_counter()
    answer = serve(ask.ask, pub, owner, NOW, WALL)  # type: ignore[attr-defined]
    while True:
        with collector_paused():  # what the state plane does per message (snapshot.py)
            msg = next(answer, None)
            if msg is None:
                break
            w = time.perf_counter()
            frames = pack(msg)
            got = unpack(frames)
            wire_s += time.perf_counter() - w
            replica.receive_snapshot(got, NOW, WALL)  # type: ignore[arg-type]
    total = time.perf_counter() - t0
    gc.unfreeze()
    assert len(replica.table) == n and not replica.syncing
    return total, wire_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dialogs", type=int, nargs="+", default=[100_000, 1_000_000])
    for n in ap.parse_args().dialogs:
        total, wire_s = run(n)
        print(f"{n:>9} dialogs: {total:.2f} s end to end (pure path), of which pack+unpack "
              f"{wire_s:.2f} s; {n / total:,.0f} dialogs/s")


if __name__ == "__main__":
    main()
