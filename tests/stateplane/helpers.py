"""A publisher and a replica in memory (aioquic ``client_and_server``): the test moves the
frames between them, and may drop, duplicate or reorder them on the way.

The owner's dialogs are a real ``DialogTable`` driven with real SIP bytes
(``tests/workers/dialog_helpers.py``); its ``take_deltas()`` are published, packed, unpacked
and applied to the replica's own table.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from dialogstate.table import DialogTable
from stateplane.replica import Event, Publisher, Replica, Resnapshot
from stateplane.snapshot import TableSource, serve
from stateplane.updates import Message, pack, unpack

from ..workers.dialog_helpers import T0, W0, Call, table, via_for

NODE = "node-a"


def call_op(t: DialogTable, n: int, op: str, now: float) -> None:
    """One step of call ``n`` on the owner's table, with real SIP bytes."""
    c, wall = Call(n, from_user=f"u{n}"), W0 + now - T0
    if op == "invite":
        if t.get(c.call_id, c.ftag) is None:
            c.start(t, now, wall)
    elif op == "180":
        t.receive_response(c.response(180), now, wall)
    elif op == "200":
        t.receive_response(c.response(200), now, wall)
    elif op == "reinvite":
        t.receive_request(c.in_dialog("INVITE", 2, extra=("Session-Expires: 90",)), now, wall)
    elif op == "bye":
        t.receive_request(c.in_dialog("BYE", 3), now, wall)
    elif op == "fail":
        t.final_sent(c.invite(), 480, now, wall)


def wire(msg: Message) -> Message:
    return unpack(pack(msg))


def state(t: DialogTable, now: float) -> list[Any]:
    """The table's dialogs, comparable across tables (floats rounded: deadlines cross clocks)."""
    recs = t.snapshot(now, W0 + now - T0)
    return sorted([round(v, 3) if isinstance(v, float) else v for v in r] for r in recs)


def byes(t: DialogTable) -> dict[str, Any]:
    return {k: t.build_byes(d, via_for) for k, d in t._table.items()}


class CountingTable:
    """A dialog table whose ``apply`` counts into ``pair.applied`` by the replica's (epoch,
    seq); everything else is the table's. A wrapper, not a subclass or a patched method:
    compiled (conf/compiled.py), ``DialogTable`` takes neither."""

    def __init__(self, pair: Pair, t: DialogTable) -> None:
        object.__setattr__(self, "_pair", pair)
        object.__setattr__(self, "_t", t)

    def apply(self, delta: list[Any], now: float, wall: float) -> None:
        rep = getattr(self._pair, "replica", None)
        if rep is not None and rep.table is self:
            self._pair.applied[(rep.epoch, rep.seq + 1)] += 1
        self._t.apply(delta, now, wall)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._t, name, value)

    def __len__(self) -> int:
        return len(self._t)

    def __contains__(self, key: object) -> bool:
        return key in self._t


class Pair:
    """Owner table + publisher on one side, a replica on the other."""

    def __init__(self, epoch: int = 1, backlog: int = 16_384, **table_kw: Any) -> None:
        self._table_kw = table_kw
        self.owner = table(**table_kw)
        self.pub = Publisher(NODE, epoch, backlog=backlog, now=T0)
        self.applied: Counter[tuple[int, int]] = Counter()
        self.replica = Replica(NODE, self._table, now=T0)
        self.events: list[Event] = []

    def _table(self) -> DialogTable:
        """A replica table that counts every update applied to it, by (epoch, seq): the
        replica applies update seq + 1 of its epoch, never anything else."""
        return cast(DialogTable, CountingTable(self, table(**self._table_kw)))

    def step(self, n: int, op: str, now: float) -> list[list[bytes]]:
        """Drive call ``n`` on the owner; the frames its deltas became."""
        call_op(self.owner, n, op, now)
        return [pack(u) for u in self.pub.publish(self.owner.take_deltas())]

    def deliver(self, frames: list[list[bytes]], now: float) -> list[Event]:
        out: list[Event] = []
        for f in frames:
            msg = unpack(f)
            out += self.replica.receive(msg, now, W0 + now - T0)  # type: ignore[arg-type]
        self.events += out
        return out

    def answer(self, events: list[Event], now: float, chunk: int = 3) -> list[Event]:
        """Serve every Resnapshot in ``events`` (and any the answer itself causes)."""
        out: list[Event] = []
        todo = [e for e in events if isinstance(e, Resnapshot)]
        while todo:
            ask = todo.pop(0).ask
            src = TableSource(self.owner)
            for m in serve(ask, self.pub, src, now, W0 + now - T0, chunk_records=chunk):
                evs = self.replica.receive_snapshot(wire(m), now, W0 + now - T0)  # type: ignore[arg-type]
                out += evs
                todo += [e for e in evs if isinstance(e, Resnapshot)]
        self.events += out
        return out

    def converged(self, now: float) -> bool:
        return state(self.owner, now) == state(self.replica.table, now)
