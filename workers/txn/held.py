"""Finished transactions that only absorb retransmissions: compact entries in FIFO lanes.

A transaction whose final response is behind it still waits on a timer (J, I, D or K; L and
M for an answered INVITE, RFC 6026) only to absorb what the network repeats. For that it
needs its key, where it sends, and at most one message to send again. The table swaps the
whole machine for one of these entries and files the entry under the machine's key, so
matching stays one dict lookup.

Rules:
1. What each entry does, per RFC 3261 §17 for the state it replaces:

   ========================  ================  ============================================
   entry (replaces)          timer (UDP)       input -> effect
   ========================  ================  ============================================
   ``Completed`` non-INVITE  J = 64*T1         request retransmission -> re-send ``resend``
   server                                      (the final response)
   ``Confirmed`` INVITE      I = T4            INVITE retransmission, ACK -> absorbed
   server
   ``Completed`` INVITE      D (``timer_d``)   300-699 retransmission -> re-send ``resend``
   client                                      (the hop-by-hop ACK); 1xx absorbed; a 2xx
                                               matches nothing (the proxy forwards it
                                               statelessly, §16.7 step 5 / RFC 6026)
   ``Completed`` non-INVITE  K = T4            any response -> absorbed
   client
   ``HeldPair`` (both        L and M = 64*T1   INVITE absorbed, ACK let through, 2xx passed
   ``Accepted`` INVITEs)                       up (``TransactionTable.hold``)
   ========================  ================  ============================================

   Over TCP/TLS Timers D, I, J and K are zero: those transactions end at once and are never
   held. An entry never changes after it is filed: nothing it does depends on the clock.
2. Every entry of one kind is held for the same time, so entries sit in a few FIFO lanes,
   one per duration (64*T1, T4, Timer D), each in deadline order. Expiry pops lane fronts,
   O(1) per entry, with no heap and no timer object per entry. An entry filed with a deadline
   earlier than the one before it in its lane (a pair whose two sides were answered apart,
   a caller's clock that went back) waits behind it: it may expire late, never early.
3. Bounded apart from the live transactions, and never by refusing: at most ``max_entries``
   entries and ``max_bytes`` bytes to re-send. Filing one past either evicts the entry
   nearest its deadline (the front of the lane whose front ends first) and counts it in
   ``evicted``. What becomes of a retransmission after its entry is gone is what RFC 3261
   says for one that matches no transaction (docs/transactions.md, "Held").
4. Sans-IO: no clock, no logging. ``expire(now, budget)`` and ``next_deadline()`` are the
   table's ``handle_timer``/``next_deadline`` for this part.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from workers.txn.client import ClientTransaction
from workers.txn.keys import ClientKey, ServerKey
from workers.txn.machine import State, Transaction
from workers.txn.server import ServerTransaction

#: lanes (rule 2): entries of one lane are all held for the same time
LANE_TIMEOUT, LANE_T4, LANE_D = 0, 1, 2


class Held:
    """Base of every held entry: where it sends and when it ends. It reads as a transaction
    with no context to the TU (``state``, ``is_invite``, ``dest``)."""

    __slots__ = ("dest", "until")
    state: ClassVar[State] = State.ACCEPTED
    is_invite: ClassVar[bool] = True
    context: ClassVar[None] = None
    _heap_at: ClassVar[None] = None  # never in the heap: a stale entry for its key is skipped
    lane: ClassVar[int] = LANE_TIMEOUT
    #: dict slots the entry takes in the table (one per key)
    keys: ClassVar[int] = 1

    def __init__(self, dest: Any, until: float) -> None:
        self.dest, self.until = dest, until

    def size(self) -> int:
        """Bytes kept to send again (the store's byte bound counts these)."""
        return 0

    def unfile(self, servers: dict[Any, Any], clients: dict[Any, Any]) -> None:
        """Remove the entry from the table's dicts, where it is still the one filed."""


class HeldPair(Held):
    """A proxied INVITE answered 2xx while Timers L and M run: the two Accepted
    transactions' keys, where the server side sends, and when both end."""

    __slots__ = ("ckey", "skey")
    keys = 2

    def __init__(self, skey: ServerKey, ckey: ClientKey, dest: Any, until: float) -> None:
        super().__init__(dest, until)
        self.skey, self.ckey = skey, ckey

    def unfile(self, servers: dict[Any, Any], clients: dict[Any, Any]) -> None:
        if servers.get(self.skey) is self:
            del servers[self.skey]
        if clients.get(self.ckey) is self:
            del clients[self.ckey]

    def __repr__(self) -> str:
        return f"<held INVITE {self.skey!r} {self.ckey!r}>"


class Finished(Held):
    """One finished transaction: its key, where it sends, what it re-sends (or None)."""

    __slots__ = ("key", "resend")
    server: ClassVar[bool] = True
    kind: ClassVar[str] = "finished transaction"

    def __init__(self, key: Any, dest: Any, resend: bytes | None, until: float) -> None:
        super().__init__(dest, until)
        self.key, self.resend = key, resend

    def size(self) -> int:
        r = self.resend
        return 0 if r is None else len(r)

    def unfile(self, servers: dict[Any, Any], clients: dict[Any, Any]) -> None:
        book = servers if self.server else clients
        if book.get(self.key) is self:
            del book[self.key]

    def __repr__(self) -> str:
        return f"<held {self.kind} {self.key!r}>"


class FinishedNonInviteServer(Finished):
    """Completed, Timer J: answers a retransmitted request with ``resend``."""

    __slots__ = ()
    state = State.COMPLETED
    is_invite = False
    kind = "non-INVITE server"


class FinishedInviteServer(Finished):
    """Confirmed, Timer I: absorbs INVITE and ACK retransmissions."""

    __slots__ = ()
    state = State.CONFIRMED
    lane = LANE_T4
    kind = "INVITE server"


class FinishedInviteClient(Finished):
    """Completed, Timer D: re-sends the hop-by-hop ACK for a retransmitted 300-699."""

    __slots__ = ()
    state = State.COMPLETED
    server = False
    lane = LANE_D
    kind = "INVITE client"


class FinishedNonInviteClient(Finished):
    """Completed, Timer K: absorbs response retransmissions."""

    __slots__ = ()
    state = State.COMPLETED
    is_invite = False
    server = False
    lane = LANE_T4
    kind = "non-INVITE client"


def finished(txn: Transaction) -> Finished | None:
    """The entry that can stand for ``txn`` from now on (rule 1), or None while the machine
    still has work of its own (a timer that retransmits or reports, a TU input to take).

    Call with the transaction's last input done; it reads the buffers ``_terminate`` drops.
    """
    if txn._wait is None or txn._retx is not None:
        return None  # nothing to wait for (it ends now), or still retransmitting
    state, until = txn.state, txn._wait_at
    if isinstance(txn, ServerTransaction):
        if state is State.COMPLETED and not txn.is_invite:
            return FinishedNonInviteServer(txn.key, txn.dest, txn._last, until)
        if state is State.CONFIRMED:
            return FinishedInviteServer(txn.key, txn.dest, None, until)
        return None  # an INVITE in Completed waits for its ACK (Timer H reports)
    if isinstance(txn, ClientTransaction) and state is State.COMPLETED:
        if txn.is_invite:
            return FinishedInviteClient(txn.key, txn.dest, txn._ack, until)
        return FinishedNonInviteClient(txn.key, txn.dest, None, until)
    return None


class HeldStore:
    """The lanes and the bounds of the held entries filed in a table's two dicts (rules 2-3)."""

    def __init__(self, servers: dict[Any, Any], clients: dict[Any, Any], *,
                 max_entries: int, max_bytes: int) -> None:  # fmt: skip
        if max_entries < 1 or max_bytes < 0:
            raise ValueError("max_held must be >= 1 and max_held_bytes >= 0")
        self._servers, self._clients = servers, clients
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._lanes: tuple[deque[Held], deque[Held], deque[Held]] = (deque(), deque(), deque())
        self.entries = 0
        #: dict slots the entries take in the table (a pair takes two)
        self.keys = 0
        #: bytes held to send again
        self.bytes = 0
        #: entries dropped before their deadline to make room (rule 3)
        self.evicted = 0

    def __len__(self) -> int:
        return self.entries

    def stats(self) -> dict[str, int]:
        """For the worker's ``load_stats`` and ``ctl stats``."""
        return {"entries": self.entries, "bytes": self.bytes, "evicted": self.evicted}

    def file(self, entry: Held) -> None:
        """File ``entry`` under its key(s) (replacing the transaction there) and in its lane,
        evicting the entries nearest their deadlines while a bound is passed."""
        if isinstance(entry, HeldPair):
            self._servers[entry.skey] = self._clients[entry.ckey] = entry
        elif isinstance(entry, Finished):
            (self._servers if entry.server else self._clients)[entry.key] = entry
        self._lanes[entry.lane].append(entry)
        self.entries += 1
        self.keys += entry.keys
        self.bytes += entry.size()
        while (self.entries > self.max_entries or self.bytes > self.max_bytes) and self.entries:
            self._drop(self._first())
            self.evicted += 1

    def next_deadline(self) -> float | None:
        first = self._first()
        return None if first < 0 else self._lanes[first][0].until

    def expire(self, now: float, budget: int) -> int:
        """Drop at most ``budget`` entries whose deadline is at or before ``now``, earliest
        first. Returns how many."""
        done = 0
        lanes = self._lanes
        while done < budget and self.entries:
            lane = self._first()
            if lanes[lane][0].until > now:
                break
            self._drop(lane)
            done += 1
        return done

    def _first(self) -> int:
        """The lane whose front ends first; -1 when every lane is empty."""
        best, at = -1, 0.0
        for i, lane in enumerate(self._lanes):
            if lane and (best < 0 or lane[0].until < at):
                best, at = i, lane[0].until
        return best

    def _drop(self, lane: int) -> None:
        entry = self._lanes[lane].popleft()
        entry.unfile(self._servers, self._clients)
        self.entries -= 1
        self.keys -= entry.keys
        self.bytes -= entry.size()
