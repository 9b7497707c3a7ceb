"""Where a worker's (or a state plane's mirror's) dialogs are kept, sans-IO: the table by key,
the heap of their deadlines, the values they share, and the records and deltas that carry them
to and from other processes (rules 8, 9 and 10 of ``dialogstate/table.py``).

``DialogTable`` (``dialogstate/table.py``) is this store plus the dialog machine: what the
messages of a call do to its dialog. Everything here acts on a dialog as a record; nothing
here reads SIP.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dialogstate.profiles import Profiles
from dialogstate.record import (
    RECORD,
    STATES,
    C,
    Dialog,
    E,
    State,
    T,
    encode,
    freeze,
    join_parties,
    on_address,
)

#: deltas queued and not yet taken at most; past it they are dropped and counted, and the
#: state plane must resnapshot (it sees the gap in its sequence)
MAX_PENDING_DELTAS = 65_536
#: values (targets, route sets, destinations, addresses) kept for sharing at most (rule 8):
#: enough for the trunks and gateways a node talks to; a value seen once per call (a user
#: agent's Contact) then costs the table little, as it starts over when full
INTERN_MAX = 4096


class DialogStore:
    """The dialogs held, keyed by "Call-ID NUL From-tag"; the records and deltas in and out."""

    def __init__(self, profiles: Profiles, *, emit_deltas: bool = True,
                 external_timers: bool = False) -> None:  # fmt: skip
        self.external_timers = external_timers
        #: ("arm", key, deadline) / ("cancel", key), in order; ``key`` is the dialog's own
        #: string (rule 8), so a timer client keyed by it holds no copy
        self.timer_ops: list[tuple[Any, ...]] = []
        self.profiles = profiles
        self._table: dict[str, Dialog] = {}
        self._heap: list[tuple[float, str]] = []
        self._intern: dict[Any, Any] = {}
        self._pending = 0  # dialogs in UNCONFIRMED or EARLY
        self.emit_deltas = emit_deltas
        self.deltas: list[list[Any]] = []
        self.counters: dict[str, int] = {
            "processed": 0, "expired": 0, "failed": 0, "cancelled": 0, "timeout": 0,
            "refused": 0, "ended": 0, "deltas_dropped": 0, "adopted": 0, "handed_back": 0,
            "adopt_refused": 0, "let_go": 0,
        }  # fmt: skip

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        """Whether the dialog ``key`` ("Call-ID NUL From-tag") is live here."""
        return key in self._table

    def get(self, call_id: str, from_tag: str) -> Dialog | None:
        return self._table.get(call_id + "\0" + from_tag)

    def next_deadline(self) -> float | None:
        """When the next dialog expires (monotonic), or None."""
        heap, table = self._heap, self._table
        while heap:
            at, key = heap[0]
            dlg = table.get(key)
            if dlg is not None and dlg.deadline >= at:
                return at  # due, or a moved deadline to re-file then (rule 9)
            heapq.heappop(heap)  # lazy deletion: the dialog ended
        return None

    # -- replication -------------------------------------------------------------------------

    def snapshot(self, now: float, wall: float) -> list[list[Any]]:
        """Every live dialog as a record (``RECORD`` order), msgpack-ready."""
        return [encode(d, now, wall) for d in self._table.values()]

    def keys(self) -> list[str]:
        """The keys of every live dialog now (a snapshot's point-in-time list)."""
        return list(self._table)

    def keys_on(self, address: str) -> list[str]:
        """The keys of the live dialogs whose caller reached us on our local ``address``."""
        return [k for k, d in self._table.items() if on_address(d.caller, address)]

    def record(self, key: str, now: float, wall: float) -> list[Any] | None:
        """The record (``RECORD`` order) of the dialog ``key`` if it is still live."""
        dlg = self._table.get(key)
        return None if dlg is None else encode(dlg, now, wall)

    # records and deltas come from other processes: typed ``Any`` where a junk one must reach
    # the checks below (compiled, a ``list[Any]`` parameter refuses a tuple or a str itself)
    def restore(self, records: Iterable[Any], now: float, wall: float) -> None:
        """Replace the whole table with ``records`` (from ``snapshot`` or "c" deltas)."""
        self._table.clear()
        self._heap.clear()
        self._pending = 0
        self.profiles.clear()
        for rec in records:
            self._load(rec, now, wall)

    def adopt(self, records: Iterable[Any], now: float, wall: float,
              place: Callable[[Any], Any] | None = None) -> int:
        """Take over dialogs another node owned (a replica's records, after a failover): they
        become ours, with their deadlines (re-armed: one past is due at once), profile
        memberships and a "c" delta each, so our state plane publishes them as ours. ``place``
        maps a side's opaque "where the proxy reached it" to one of ours. Returns the count."""
        i_caller, i_callee = RECORD.index("caller"), RECORD.index("callee")
        n = 0
        for rec in records:
            try:  # records come over a socket: one that is not one costs a count (rule 10)
                if place is not None:
                    rec[i_caller], rec[i_callee] = place(rec[i_caller]), place(rec[i_callee])
                self._load(rec, now, wall)
            except (ValueError, TypeError, KeyError, IndexError):
                self.counters["adopt_refused"] += 1
                continue
            n += 1
            if self.emit_deltas:
                self._push(["c", *rec])
        self.counters["adopted"] += n
        return n

    def release(self, address: str, wall: float) -> int:
        """Hand back the dialogs whose caller reached us on ``address`` (a failback: the peer
        that owns the address adopts them from its replica of us, docs/failover.md): each
        leaves the table with its timer and profile counts, without a CDR, and a "t" delta
        with cause ``handed_back`` tells the replicas. Returns the count."""
        return self.release_keys(self.keys_on(address), wall)

    def release_keys(self, keys: Iterable[str], wall: float, cause: str = "handed_back") -> int:
        """``release`` for these keys (the ones live here): the peer owns them after a split
        brain this node lost. Returns the count."""
        n = 0
        for key in keys:
            dlg = self._table.get(key)
            if dlg is None:
                continue
            self._remove(dlg)
            self._delta("t", dlg, cause, "", wall)
            n += 1
        self.counters["handed_back"] += n
        return n

    def let_go(self, keys: Iterable[str]) -> int:
        """Give up these dialogs to the worker that now owns their Call-IDs (it adopts them
        from the state plane's mirror, ``workers/dialogs/handover.py``): out of the table with their
        profile counts, and nothing else: no CDR, no delta (the mirror must keep them), no
        timer cancel (the new owner re-arms the same key). Returns the count."""
        n = 0
        for key in keys:
            dlg = self._table.pop(key, None)
            if dlg is None:
                continue
            self.profiles.remove(dlg.members)
            if dlg.state < C:
                self._pending -= 1
            dlg.state = T
            n += 1
        self.counters["let_go"] += n
        return n

    def forget(self, call_id: str, from_tag: str, cause: str, wall: float) -> None:
        """A dialog that came back to us (``adopt`` was about to take it) but ended already:
        its CDR is written (``workers/dialogs/cdr.py`` rule 8). Only a "t" delta, so the state plane
        and the replicas forget it too; it never enters the table, so no CDR, timer or count."""
        if self.emit_deltas:
            self._push(["t", call_id, from_tag, cause, "", wall])

    def apply(self, delta: list[Any], now: float, wall: float) -> None:
        """Apply a delta another table emitted (a replica: no CDR, no delta of its own)."""
        op, cid, ftag = delta[0], delta[1], delta[2]
        if op == "c":
            self._load(delta[1:], now, wall)
            return
        dlg = self._table.get(cid + "\0" + ftag)
        if dlg is None:
            return
        args = delta[3:]
        if op == "f":
            dlg.callee, dlg.destination = self._frozen(args[0]), self._shared(args[1])
        elif op in ("e", "a"):
            dlg.to_hdr = args[1]
            dlg.callee_target, dlg.callee_route = self._shared(args[2]), self._shared(args[3])
            if op == "a":
                dlg.answer = args[4]
                self._set_state(dlg, C)
                self._arm(dlg, now + args[5] - wall)
            else:
                self._set_state(dlg, E)
        elif op == "u":
            dlg.flags, dlg.caller_cseq, dlg.callee_cseq = args[:3]
            dlg.caller_target, dlg.callee_target = self._shared(args[3]), self._shared(args[4])
        elif op == "r":
            self._arm(dlg, now + args[0] - wall)
            dlg.caller_cseq, dlg.callee_cseq = args[1:3]
            dlg.caller_target, dlg.callee_target = self._shared(args[3]), self._shared(args[4])
        elif op == "t":
            self._remove(dlg)

    # -- records, deadlines and deltas --------------------------------------------------------

    def _remove(self, dlg: Dialog) -> None:
        if self._table.pop(dlg.key, None) is None:
            return
        if self.external_timers:
            self.timer_ops.append(("cancel", dlg.key))
        self.profiles.remove(dlg.members)
        if dlg.state < C:
            self._pending -= 1
        dlg.state = T

    def _set_state(self, dlg: Dialog, nxt: State) -> None:
        if dlg.state < C <= nxt:
            self._pending -= 1
        dlg.state = nxt

    def _arm(self, dlg: Dialog, deadline: float) -> None:
        """Rule 9: a new entry only for a new dialog or a deadline moved earlier."""
        later = 0 < dlg.deadline <= deadline
        dlg.deadline = deadline
        if self.external_timers:
            self.timer_ops.append(("arm", dlg.key, deadline))
            return
        if later:
            return
        heap = self._heap
        heapq.heappush(heap, (deadline, dlg.key))
        if len(heap) > 2 * len(self._table) + 64:
            heap[:] = [(d.deadline, k) for k, d in self._table.items()]
            heapq.heapify(heap)

    def _delta(self, op: str, dlg: Dialog, *args: Any) -> None:
        if self.emit_deltas:
            self._push([op, dlg.call_id, dlg.from_tag, *args])

    def _push(self, delta: list[Any]) -> None:
        if len(self.deltas) >= MAX_PENDING_DELTAS:
            self.counters["deltas_dropped"] += 1
            return
        self.deltas.append(delta)

    def _load(self, rec: Sequence[Any], now: float, wall: float) -> None:
        dlg = Dialog()
        (cid, ftag, _, state, dlg.flags, from_hdr, to_hdr,
         caller_target, callee_target, caller_route, callee_route,
         dlg.invite_cseq, dlg.caller_cseq, dlg.callee_cseq, caller, callee,
         source, destination, dlg.start, dlg.answer, deadline_wall,
         dlg.lifetime, dlg.route, members) = rec  # fmt: skip
        dlg.parties = join_parties(from_hdr, to_hdr)
        share = self._shared
        dlg.caller_target, dlg.callee_target = share(caller_target), share(callee_target)
        dlg.caller_route, dlg.callee_route = share(caller_route), share(callee_route)
        key = cid + "\0" + ftag
        # what a broken record breaks is found before the table changes (rule 10)
        if type(state) is not int or not 0 <= state < len(STATES):
            raise ValueError(f"state {state!r}")
        named = tuple([(str(n), str(v)) for n, v in members]) if members else ()
        due = now + deadline_wall - wall
        if due - due != 0.0:  # inf or nan would never fire, and nan breaks the heap's order
            raise ValueError(f"deadline {deadline_wall!r}")
        old = self._table.get(key)
        if old is not None:
            self._remove(old)
        dlg.key, dlg.state, dlg.deadline = key, STATES[state], 0.0
        dlg.caller, dlg.callee = self._frozen(caller), self._frozen(callee)
        dlg.source, dlg.destination = self._shared(source), self._shared(destination)
        dlg.members = self.profiles.intern(named) if named else ()
        self.profiles.add(dlg.members)
        self._table[key] = dlg
        if dlg.state < C:
            self._pending += 1
        self._arm(dlg, due)

    def _frozen(self, value: Any) -> Any:
        """``_shared(freeze(value))``; a tuple (a record built in this process, or a second
        dialog of a destination already held) is looked up first, without copying it."""
        if type(value) is tuple:
            held = self._intern.get(value)
            if held is not None:
                return held
        return self._shared(freeze(value))

    def _shared(self, value: Any) -> Any:
        """``value``, or an equal one already held (rule 8); unhashable values as they are."""
        try:
            held = self._intern.get(value)
        except TypeError:
            return value
        if held is not None:
            return held
        if len(self._intern) >= INTERN_MAX:
            self._intern.clear()  # start over: what is held stays shared, new values share next
        self._intern[value] = value
        return value
