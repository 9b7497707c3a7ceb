"""Bytes a replica holds per replicated confirmed dialog (tracemalloc).

Usage (repo root):  .venv/bin/python bench/replica_memory.py [--dialogs 100000]

Method. One real confirmed dialog (sipp uac/uas bytes of bench/dialog_memory.py: INVITE with
SDP, 180, 200 with Record-Route and Contact) gives a record; it is cloned with a distinct
Call-ID, From-tag and To-tag per dialog (the tags inside From and To too) and sent through
the replication path: a "c" update per dialog then an "a"-like confirm is already in the
record, packed and unpacked (msgpack), applied by a ``Replica`` to its own ``DialogTable``.
tracemalloc's current size after the run is compared with the baseline before it (the
frames are dropped; only the replica's state remains).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dialog_memory import answer, invite
from conf.settings import Dialogs, Settings
from dialogstate.table import DialogTable
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from stateplane.replica import Publisher, Replica
from stateplane.updates import Update, pack, unpack


def replica_settings(n: int) -> Settings:
    s = Settings()
    return replace(s, dialogs=Dialogs(enabled=True, max_dialogs=max(n, 1000) * 2))


def template(now: float, wall: float) -> list[Any]:
    t = DialogTable(replica_settings(1))
    req = parse_message(invite(1, 5061))
    assert isinstance(req, Request)
    caller = ("ingress-1", ("udp", "127.0.0.1", 5061, 0, "127.0.0.1", 5060))
    callee = ("ingress-1", ("udp", "127.0.0.1", 5080, 0, "127.0.0.1", 5060))
    t.invite_forwarded(req, caller=caller, callee=callee, source_ip="127.0.0.1",
                       source_port=5061, destination="127.0.0.1:5080", now=now, wall=wall)
    for status in (180, 200):
        resp = parse_message(answer(1, 5061, status))
        assert isinstance(resp, Response)
        t.receive_response(resp, now, wall)
    (rec,) = t.snapshot(now, wall)
    return rec


def owner_records(n: int, now: float, wall: float) -> list[list[Any]]:
    """``n`` confirmed-dialog records, each with its own Call-ID and tags."""
    base = template(now, wall)
    out = []
    for i in range(n):
        rec = list(base)
        ftag, ttag = f"{i}SIPpTag00{i}", f"{i}SIPpTag01{i}"
        rec[0], rec[1], rec[2] = f"{i}-4242@127.0.0.1", ftag, ttag
        rec[5] = base[5].replace(b"1SIPpTag001", ftag.encode())
        rec[6] = base[6].replace(b"1SIPpTag011", ttag.encode())
        out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dialogs", type=int, default=100_000)
    n = ap.parse_args().dialogs
    now, wall = 1000.0, 1_700_000_000.0
    settings = replica_settings(n)
    pub = Publisher("node-a", 1)
    frames = [pack(u) for u in pub.publish(["c", *r] for r in owner_records(n, now, wall))]
    replica = Replica("node-a", lambda: DialogTable(settings), now=now)
    replica.epoch = 1  # joined, holding nothing (the first sync was empty)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for f in frames:
        msg = unpack(f)
        assert isinstance(msg, Update)
        replica.receive(msg, now, wall)
    del msg, f
    frames.clear()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(replica.table) == n and replica.seq == n
    print(f"{n} replicated confirmed dialogs: {used / n:.0f} bytes per dialog in the replica")


if __name__ == "__main__":
    main()
