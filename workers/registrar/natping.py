"""Keep-alives to registered contacts behind NAT (nathelper ``natping``), sans-IO.

Rules:
1. The worker that answered a contact's REGISTER pings it: all REGISTERs of one Call-ID reach
   one worker, and a UA keeps its Call-ID across refreshes (RFC 3261 §10.2.4), so each
   contact has one pinger. A contact refreshed from a new source is pinged there; one that is
   removed, expires, or registers again not behind NAT is forgotten. A worker that restarts
   pings its contacts again after their next REGISTER.
2. Pings go to the address the REGISTER came from, through the ingress and connection it came
   on (a TCP contact is pinged on its own connection), never to what the Contact says.
3. Spread: a contact's first ping comes at a point of the interval its key hashes to, and then
   every interval from the schedule (not from "now", so nothing drifts and pings stay spread).
   At most ``ping_max_per_tick`` leave per call; the rest wait ``TICK_S``.
4. Bounded: at most ``max_pinged_contacts`` entries (further ones are refused and counted),
   one OPTIONS outstanding per entry, the heap rebuilt when stale items outnumber live ones.
5. OPTIONS: any response counts as alive. An OPTIONS still unanswered when the next is due is
   a miss; ``ping_drop_after`` misses in a row put the binding in ``drops`` for the worker to
   remove from the location service, and the entry goes. The answer must reach this worker:
   its Call-ID is one this worker owns (``owns``), as the dispatcher's probes.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conf.settings import Listener, Nat
from ingress.sip.grammar import parse_uri
from ingress.sip.message import Request
from workers import nat
from workers.registrar.register import Plan, Registrar
from workers.routing.dispatcher import OWNED_CALL_ID_TRIES
from workers.routing.probes import build_options

if TYPE_CHECKING:
    from workers.proxy import Inbound

#: every NAT ping's branch starts so (probes use ``z9hG4bK-dp``, proxied requests ``-sl``)
NATPING_BRANCH_PREFIX = "z9hG4bK-np"
TICK_S = 0.1
#: RFC 5626 §3.5.1 keep-alive on a stream; the same four bytes as a UDP datagram
CRLF_PING = b"\r\n\r\n"

#: (ingress id, out meta as in conf.envelope, bytes): ``workers.proxy.Out``
Out = tuple[str, list[object], bytes]


@dataclass(frozen=True, slots=True)
class Dest:
    """Where a contact's REGISTER came from: the way back to it (rule 2)."""

    ingress: str
    transport: str
    ip: str
    port: int
    conn: int


@dataclass(slots=True)
class _Entry:
    aor: str
    contact: str  # the contact URI as registered (the OPTIONS Request-URI)
    dest: Dest
    expires_at: float
    next_at: float
    missed: int = 0
    pending: str | None = None  # the branch of the OPTIONS not yet answered


class NatPinger:
    """The contacts one worker keeps alive; see the module rules."""

    def __init__(self, cfg: Nat, listeners: Sequence[Listener], *, instance: str,
                 owns: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.listeners = list(listeners)
        self.instance = instance
        self.owns = owns
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self._by_branch: dict[str, tuple[str, str]] = {}
        self._seq = 0
        self._throttle_until = 0.0
        #: (aor, contact URI) of bindings to remove (rule 5), taken by the worker
        self.drops: list[tuple[str, str]] = []
        self.counters: dict[str, int] = {"nat_pings": 0, "nat_ping_answers": 0,
                                         "nat_ping_misses": 0, "nat_ping_table_full": 0,
                                         "nat_ping_drops": 0}  # fmt: skip

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, aor: str, contact: str, key: str, dest: Dest, expires_s: float,
             now: float) -> bool:  # fmt: skip
        """A REGISTER from behind NAT bound ``contact`` (comparison key ``key``) for
        ``expires_s``: ping it until then. False when the table is full (rule 4)."""
        k = (aor, key)
        e = self._entries.get(k)
        if e is not None:
            e.contact, e.dest, e.expires_at = contact, dest, now + expires_s
            return True
        if len(self._entries) >= self.cfg.max_pinged_contacts:
            self.counters["nat_ping_table_full"] += 1
            return False
        phase = (zlib.crc32(f"{aor}\n{key}".encode("utf-8", "surrogateescape")) % 4096) / 4096
        e = _Entry(aor, contact, dest, now + expires_s, now + self.cfg.ping_interval_s * phase)
        self._entries[k] = e
        self._push(e, k)
        return True

    def forget(self, aor: str, key: str | None = None) -> None:
        """Stop pinging ``key`` of ``aor``, or all of its contacts (``Contact: *``)."""
        keys = [k for k in self._entries if k[0] == aor] if key is None else [(aor, key)]
        for k in keys:
            e = self._entries.pop(k, None)
            if e is not None and e.pending is not None:
                self._by_branch.pop(e.pending, None)

    def next_deadline(self) -> float | None:
        if not self._heap:
            return None
        return max(self._heap[0][0], self._throttle_until)

    def answered(self, branch: str, now: float) -> None:
        """A response to the OPTIONS with ``branch`` came back: its contact is alive."""
        k = self._by_branch.pop(branch, None)
        e = self._entries.get(k) if k is not None else None
        if e is not None and e.pending == branch:
            e.pending, e.missed = None, 0
            self.counters["nat_ping_answers"] += 1

    def due(self, now: float) -> list[Out]:
        """The pings due by ``now``, at most ``ping_max_per_tick`` (rule 3)."""
        if now < self._throttle_until:
            return []
        outs: list[Out] = []
        heap, cap = self._heap, self.cfg.ping_max_per_tick
        while heap and heap[0][0] <= now:
            if len(outs) >= cap:
                self._throttle_until = now + TICK_S
                break
            at, _, k = heapq.heappop(heap)
            e = self._entries.get(k)
            if e is None or e.next_at != at:
                continue  # stale: forgotten or rescheduled
            out = self._ping(e, k, now)
            if out is not None:
                outs.append(out)
        if len(heap) > 2 * len(self._entries) + 64:  # rule 4: drop stale items
            self._heap = [(e.next_at, i, k) for i, (k, e) in enumerate(self._entries.items())]
            heapq.heapify(self._heap)
        return outs

    # -- internals -----------------------------------------------------------------------

    def _push(self, e: _Entry, k: tuple[str, str]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (e.next_at, self._seq, k))

    def _ping(self, e: _Entry, k: tuple[str, str], now: float) -> Out | None:
        if e.expires_at <= now:
            self.forget(*k)
            return None
        if e.pending is not None:
            self._by_branch.pop(e.pending, None)
            e.pending = None
            e.missed += 1
            self.counters["nat_ping_misses"] += 1
            if 0 < self.cfg.ping_drop_after <= e.missed:
                self.forget(*k)
                self.drops.append((e.aor, e.contact))
                self.counters["nat_ping_drops"] += 1
                return None
        e.next_at += self.cfg.ping_interval_s
        if e.next_at <= now:  # far behind (a stalled loop): resume from now, keep the phase
            skipped = int((now - e.next_at) // self.cfg.ping_interval_s) + 1
            e.next_at += skipped * self.cfg.ping_interval_s
        self._push(e, k)
        d = e.dest
        lst = self._listener(d)
        if lst is None:
            return None
        meta: list[object] = [d.transport, d.ip, d.port, d.conn, lst.address, lst.port]
        self.counters["nat_pings"] += 1
        if self.cfg.ping_method == "crlf":
            return (d.ingress, meta, CRLF_PING)
        branch, call_id = self._ids()
        e.pending = branch
        self._by_branch[branch] = k
        data = build_options(
            e.contact, lst, branch, call_id, tag=branch[len(NATPING_BRANCH_PREFIX) :]
        )
        return (d.ingress, meta, data)

    def _ids(self) -> tuple[str, str]:
        self._seq += 1
        token = f"{self.instance}.{self._seq:x}"
        call_id = f"np-{token}@sipline"
        if self.owns is not None:
            for n in range(OWNED_CALL_ID_TRIES):
                if self.owns(call_id):
                    break
                call_id = f"np-{token}.{n:x}@sipline"
        return NATPING_BRANCH_PREFIX + token, call_id

    def _listener(self, d: Dest) -> Listener | None:
        v6 = ":" in d.ip
        for lst in self.listeners:
            if lst.transport == d.transport and (":" in lst.address) == v6:
                return lst
        return None


def note_nat(pinger: NatPinger, registrar: Registrar | None, req: Request, inb: Inbound,
             tests: frozenset[str], now: float) -> None:  # fmt: skip
    """A REGISTER was answered 200: ping its contacts when it came from behind NAT, forget
    the ones it removed or that no longer are (rule 1)."""
    if registrar is None:
        return
    plan = registrar.prepare(req)
    if not isinstance(plan, Plan) or plan.is_query or plan.path:
        return  # with Path (RFC 3327, 5626) the edge proxy it names keeps its UAs alive
    if plan.star:
        pinger.forget(plan.aor)
        return
    src = nat.Seen(inb.transport, inb.src_ip, inb.src_port)
    dest = Dest(inb.ingress, inb.transport, inb.src_ip, inb.src_port, inb.conn)
    for c in plan.contacts:
        if c.expires_s > 0 and nat.behind_nat(req, src, tests, [parse_uri(c.uri)]):
            pinger.note(plan.aor, c.uri, c.key, dest, c.expires_s, now)
        else:
            pinger.forget(plan.aor, c.key)
