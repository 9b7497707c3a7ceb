"""The per-worker transaction table: matching, admission, one timer heap, one event queue.

Rules:
1. Every input to a transaction that lives in a table goes through the table (``send_request``,
   ``receive_response``, ``receive_request``, ``respond``, ``cancel``, ``transport_error``,
   ``handle_timer``), so the table can move the transaction's events to its own queue, drop it
   once Terminated and keep the heap right. ``next_event()`` yields ``(transaction, event)``.
2. Matching follows ``workers.txn.keys``. An ACK that matches no INVITE server transaction
   (the ACK for a 2xx, a new transaction of its own, §17.2.3) returns None: the TU forwards it.
   A response that matches no client transaction returns None: a proxy forwards it
   statelessly (§16.7 step 1 ... 10; §17.1.1.2 / RFC 6026 for stray 2xx).
3. A CANCEL creates its own (non-INVITE) server transaction, then is fed to the INVITE server
   transaction it cancels, if any: ``RequestReceived(cancel)`` then ``CancelReceived`` come
   out in that order. ``invite_for(cancel)`` tells the TU whether to answer 200 or forward the
   CANCEL statelessly (§16.10).
4. Bounded: at most ``max_transactions`` live transactions (client + server; held entries,
   rule 8, are bounded apart and never refuse anything). A new server transaction is refused with ``TableFull`` (the caller answers 503 statelessly) once the
   table holds ``max_transactions - reserve``; the ``reserve`` is kept for CANCEL and BYE
   (never shed, docs/design.md §3 "Protection") and for the client transactions that forward
   requests already admitted. A client transaction is refused only at ``max_transactions``;
   the TU then answers 503 on the server transaction. Retransmissions, ACKs and responses
   never need room.
5. One heap of ``(deadline, seq, book, key)`` for all timers, with lazy deletion: an entry is
   live when ``book[key]`` is a transaction whose registered deadline (``_heap_at``) is the
   entry's. Entries name the key, not the transaction, so a Terminated transaction is freed
   at once rather than held by its stale entries. A new entry is pushed only when a
   deadline moves *earlier* than the registered one; one that moves later or stops keeps its
   entry, which is re-filed (or dropped) when it surfaces. So a transaction has about one
   entry, and ``next_deadline()`` stays exact because it settles such entries first. The heap
   is rebuilt from live entries if it grows past twice the live transactions plus 64.
6. ``handle_timer(now)`` fires at most ``timer_batch`` due transactions per call, earliest
   first, and returns how many fired; the caller re-arms for ``next_deadline()`` (which is
   already past when a batch was cut short) so one busy tick cannot starve the event loop.
7. ``hold(server, client)``: once a proxied INVITE's server and client transactions are both
   in Accepted (RFC 6026), all either can still do for Timers L and M (64*T1) is absorb a
   retransmitted INVITE, let an ACK through, pass a retransmitted 2xx up and end. The pair
   is then one ``HeldPair`` under both keys (rule 8's store): ~440-510 B per call with the
   keys instead of ~1.27 KB with the two transactions, their heap entries and the TU's
   context. The TU's objects for the pair are detached: inputs through them still run, but
   the table no longer files them.
8. A transaction whose only work left is absorbing retransmissions until its wait timer
   (Completed with J, D or K; Confirmed with I) is swapped, in the call that got it there,
   for a ``workers.txn.held`` entry under the same key: its ``Terminated`` is queued then
   (the TU drops its context), and the entry re-sends the final response (J) or the ACK (D)
   when the request or the final comes again, absorbs the rest, and lets a late 2xx to an
   INVITE through unmatched (§16.7 step 5). Entries expire from FIFO lanes within the same
   ``timer_batch`` as the heap, and are bounded by ``max_held`` and ``max_held_bytes``: past
   either the entry nearest its end is evicted. A retransmission after that matches nothing,
   as RFC 3261 has it for an unknown transaction (docs/transactions.md, "Held").
9. ``abandon(txn, now)`` gives a transaction up quietly (machine rule 7: its call moved to
   another worker); ``live_servers()`` lists the live server transactions, for the TU to
   find the calls that moved (once per worker joining, never per message).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

from ingress.sip.message import Request, Response
from workers.txn.client import ClientTransaction, new_client
from workers.txn.events import Event, ResponseReceived, TableFull, Transmit
from workers.txn.held import Finished, Held, HeldPair, HeldStore, finished
from workers.txn.keys import ClientKey, ServerKey, response_key, server_key
from workers.txn.machine import State, Transaction
from workers.txn.server import ServerTransaction, new_server
from workers.txn.timers import DEFAULT_TIMERS, TimerConfig

#: Live transactions per worker: only calls in progress (a finished transaction is held apart,
#: rule 8); ~2.3 KB each in flight, so ~150 MB if all were (docs/transactions.md "Memory").
DEFAULT_MAX_TRANSACTIONS = 65536
#: Held (finished) transactions per worker: a call through a stateful proxy leaves an answered
#: INVITE pair (64*T1 = 32 s) and a BYE server (Timer J, 32 s) and client (Timer K, T4 = 5 s),
#: ~69 entries per call/s; 262144 covers ~3 800 calls/s per worker for the whole hold
#: (docs/transactions.md "Memory" has the bytes per entry this costs).
DEFAULT_MAX_HELD = 262144
#: Bytes of responses and ACKs held to re-send: a BYE's 200 or an ACK is ~300-450 bytes, so
#: 64 MiB covers the held entries above at ~250 bytes each on average, and caps what large
#: responses (a hostile peer's) can make them cost.
DEFAULT_MAX_HELD_BYTES = 64 * 2**20
#: Timers fired per ``handle_timer`` call: ~1-2 ms of work on the 2-core box.
DEFAULT_TIMER_BATCH = 256
#: Methods that may use the reserve (rule 4).
RESERVED_METHODS = frozenset({"CANCEL", "BYE"})


class TransactionTable:
    def __init__(
        self,
        timers: TimerConfig = DEFAULT_TIMERS,
        *,
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
        reserve: int | None = None,
        timer_batch: int = DEFAULT_TIMER_BATCH,
        send_trying: bool = True,
        max_held: int = DEFAULT_MAX_HELD,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
    ) -> None:
        """Args:
        max_transactions: live transactions at most (rule 4); held ones are not counted.
        reserve: room kept for CANCEL/BYE and client transactions (rule 4); default 1/8.
        send_trying: INVITE server transactions answer 100 Trying at once.
        max_held, max_held_bytes: held entries, and the bytes they keep to re-send, at most
            (rule 8: past either the entry nearest its end is evicted).
        """
        if max_transactions < 1 or timer_batch < 1:
            raise ValueError("max_transactions and timer_batch must be >= 1")
        self.timers = timers
        self.max_transactions = max_transactions
        self.reserve = max_transactions // 8 if reserve is None else reserve
        if not 0 <= self.reserve < max_transactions:
            raise ValueError("reserve must be in [0, max_transactions)")
        self.timer_batch = timer_batch
        self.send_trying = send_trying
        self._clients: dict[ClientKey, ClientTransaction | Held] = {}
        self._servers: dict[ServerKey, ServerTransaction | Held] = {}
        #: the held entries filed in the two dicts above (rules 7-8)
        self.held = HeldStore(self._servers, self._clients, max_entries=max_held,
                              max_bytes=max_held_bytes)  # fmt: skip
        self._heap: list[tuple[float, int, dict[Any, Any], Any]] = []
        self._seq = itertools.count()
        self._events: deque[tuple[Transaction | Held, Event]] = deque()
        #: requests refused with TableFull since start
        self.refused = 0

    def __len__(self) -> int:
        """Live transactions (what ``max_transactions`` bounds): held entries are not counted."""
        return len(self._clients) + len(self._servers) - self.held.keys

    # -- client side -------------------------------------------------------------------------

    def send_request(
        self,
        data: bytes,
        *,
        branch: str,
        method: str,
        reliable: bool,
        now: float,
        dest: Any = None,
        context: Any = None,
    ) -> ClientTransaction:
        """Create and start a client transaction for the request ``data``.

        Raises:
            TableFull: the table is at ``max_transactions``.
            ValueError: a live client transaction already has that branch and method (the TU
                reused a branch), or ``method`` is ACK.
        """
        key = (branch, method)
        if key in self._clients:
            raise ValueError(f"client transaction {key!r} exists")
        if len(self) >= self.max_transactions:
            self.refused += 1
            raise TableFull("transaction table full")
        txn = new_client(data, branch=branch, method=method, reliable=reliable,
                         timers=self.timers, dest=dest, context=context)  # fmt: skip
        self._clients[txn.key] = txn
        self._run(txn, txn.start, now)
        return txn

    def receive_response(self, response: Response, now: float) -> ClientTransaction | Held | None:
        """Feed a response to its client transaction; None when none matches (rule 2)."""
        key = response_key(response)
        txn = self._clients.get(key) if key is not None else None
        if txn is None:
            return None
        if isinstance(txn, ClientTransaction):
            self._run(txn, txn.receive_response, response, now)
            return txn
        status = response.status
        if isinstance(txn, HeldPair):
            if 200 <= status < 300:  # RFC 6026 §7.2: up, for the TU to forward
                self._events.append((txn, ResponseReceived(response)))
        elif isinstance(txn, Finished):
            if status >= 300 and txn.resend is not None:  # the ACK again (§17.1.1.2)
                self._events.append((txn, Transmit(txn.resend, True)))
            elif 200 <= status < 300 and txn.is_invite:
                return None  # a late fork's 2xx: forwarded statelessly (§16.7 step 5)
        return txn

    def cancel(self, txn: ClientTransaction, now: float) -> None:
        """Ask to cancel a client INVITE transaction (``SendCancel`` follows when allowed)."""
        self._run(txn, txn.cancel, now)

    def client(self, branch: str, method: str) -> ClientTransaction | Held | None:
        return self._clients.get((branch, method))

    # -- server side -------------------------------------------------------------------------

    def receive_request(
        self,
        request: Request,
        *,
        reliable: bool,
        now: float,
        dest: Any = None,
        context: Any = None,
    ) -> ServerTransaction | Held | None:
        """Match a request to its server transaction, or create one (rules 2-4, 7).

        Returns:
            The transaction the request went to; None for an ACK that matched nothing.

        Raises:
            TableFull: a new transaction is needed and there is no room (answer 503).
        """
        key = server_key(request)
        txn = self._servers.get(key)
        if txn is not None and isinstance(txn, Held):
            # absorbed: re-sent the final a Completed non-INVITE sent; for an INVITE pair the
            # ACK returns as an Accepted INVITE's, for the TU to let through (rule 8)
            if isinstance(txn, Finished) and txn.resend is not None and request.method != "ACK":
                self._events.append((txn, Transmit(txn.resend, True)))
            return txn
        if request.method == "ACK":
            if txn is not None and txn.is_invite:
                self._run(txn, txn.receive_ack, request, now)
                return txn
            return None
        if txn is not None:
            self._run(txn, txn.receive_request, request, now)
            return txn
        limit = self.max_transactions
        if request.method not in RESERVED_METHODS:
            limit -= self.reserve
        if len(self) >= limit:
            self.refused += 1
            raise TableFull("transaction table full")
        txn = new_server(request, key=key, reliable=reliable, timers=self.timers,
                         send_trying=self.send_trying, dest=dest, context=context)  # fmt: skip
        self._servers[key] = txn
        self._run(txn, txn.start, now)
        if request.method == "CANCEL":
            invite = self.invite_for(request)
            if isinstance(invite, ServerTransaction):  # too late for a held one
                self._run(invite, invite.receive_cancel, request, now)
        return txn

    def invite_for(self, cancel: Request) -> ServerTransaction | Held | None:
        """The live INVITE server transaction a CANCEL cancels (§9.2), or None."""
        txn = self._servers.get(server_key(cancel, "INVITE"))
        return txn if txn is not None and txn.is_invite else None

    def respond(self, txn: ServerTransaction, data: bytes, status: int, now: float) -> None:
        """Send a response through its server transaction.

        Raises:
            InvalidTransition: the transaction cannot take it (check ``txn.accepts(status)``).
        """
        self._run(txn, txn.respond, data, status, now)

    def server(self, key: ServerKey) -> ServerTransaction | Held | None:
        return self._servers.get(key)

    def live_servers(self) -> list[ServerTransaction]:
        """Every live (not held) server transaction, as a list the caller may change the table
        under (rule 9)."""
        return [t for t in self._servers.values() if isinstance(t, ServerTransaction)]

    def abandon(self, txn: Transaction, now: float) -> None:
        """Give ``txn`` up quietly (rule 9, ``Transaction.abandon``): nothing is sent; it ends
        now or at its own timer."""
        self._run(txn, txn.abandon, now)

    def hold(self, server: ServerTransaction, client: ClientTransaction) -> Held | None:
        """Fold an answered INVITE's two Accepted transactions into one ``Held`` (rule 7).

        Returns:
            The ``Held``; None (nothing changed) unless both are Accepted INVITEs that live
            in this table.
        """
        if not (server.is_invite and client.is_invite and server.state is State.ACCEPTED
                and client.state is State.ACCEPTED and self._servers.get(server.key) is server
                and self._clients.get(client.key) is client):  # fmt: skip
            return None
        until = max(server._wait_at, client._wait_at)
        held = HeldPair(server.key, client.key, server.dest, until)
        server._heap_at = client._heap_at = None  # their heap entries are stale now
        self.held.file(held)
        return held

    # -- both --------------------------------------------------------------------------------

    def transport_error(self, txn: Transaction, now: float) -> None:
        self._run(txn, txn.transport_error, now)

    def next_event(self) -> tuple[Transaction | Held, Event] | None:
        """The oldest ``(transaction, event)`` not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """The earliest timer of any transaction, or None (exact: stale tops are settled)."""
        held = self.held.next_deadline()
        heap = self._heap
        while heap:
            at, _, book, key = heap[0]
            txn = book.get(key)
            if txn is not None and txn._heap_at == at:
                if txn.next_deadline() == at:
                    return at if held is None or at < held else held
                self._resettle(txn, book)  # its timer moved later or stopped (rule 5)
            else:
                heapq.heappop(heap)
        return held

    def handle_timer(self, now: float, limit: int | None = None) -> int:
        """Fire the timers due at ``now``, at most ``limit`` (default ``timer_batch``) transactions.

        Returns:
            How many transactions had timers fired.
        """
        budget = self.timer_batch if limit is None else limit
        heap = self._heap
        fired = 0
        while heap and fired < budget:
            at, _, book, key = heap[0]
            if at > now:
                break
            heapq.heappop(heap)
            txn = book.get(key)
            if txn is None or txn._heap_at != at:
                continue  # stale (rule 5)
            txn._heap_at = None
            d = txn.next_deadline()
            if d is None or d > now:  # moved later since the entry was pushed: re-file it
                self._schedule(txn, book)
                continue
            fired += 1
            self._run(txn, txn.handle_timer, now)
        if fired < budget:
            fired += self.held.expire(now, budget - fired)  # Timers D, I, J, K, L, M (rule 8)
        return fired

    # -- bookkeeping -------------------------------------------------------------------------

    def _run(self, txn: Transaction, fn: Any, *args: Any) -> None:
        """Call ``fn`` on ``txn`` and then, even if it raised, collect what it left (rule 1)."""
        try:
            fn(*args)
        finally:
            self._after(txn)

    def _after(self, txn: Transaction) -> None:
        book: dict[Any, Any] = (
            self._clients if isinstance(txn, ClientTransaction) else self._servers
        )
        filed = book.get(txn.key) is txn  # False: detached by ``hold`` or a fold, or dropped
        entry = None
        if filed:
            state = txn.state
            if (state is State.COMPLETED or state is State.CONFIRMED) and txn._retx is None:
                entry = finished(txn)  # rule 8
                if entry is not None:
                    txn._heap_at = None  # its heap entry, if any, is stale now
                    txn._terminate()  # the machine is done: its Terminated goes to the TU
                    self.held.file(entry)
        ev = txn._events
        if ev is not None:
            push = self._events.append
            for e in ev:
                push((txn, e))
            txn._events = None  # an idle transaction holds no list (~90 bytes each)
        if not filed or entry is not None:
            return
        if txn.state is State.TERMINATED:
            txn._heap_at = None
            del book[txn.key]
            return
        self._schedule(txn, book)

    def _schedule(self, txn: Transaction, book: dict[Any, Any]) -> None:
        """Make sure the heap holds an entry at or before ``txn``'s deadline (rule 5).

        A deadline that moved later (or went away) keeps its earlier entry: it is re-filed
        when it surfaces, so a transaction has one entry most of the time, not one per change.
        """
        at = txn.next_deadline()
        if at is None or (txn._heap_at is not None and txn._heap_at <= at):
            return
        txn._heap_at = at
        heapq.heappush(self._heap, (at, next(self._seq), book, txn.key))
        if len(self._heap) > 2 * len(self) + 64:  # live only: held entries have none
            self._compact()

    def _resettle(self, txn: Transaction, book: dict[Any, Any]) -> None:
        heapq.heappop(self._heap)
        txn._heap_at = None
        self._schedule(txn, book)

    def _compact(self) -> None:
        # in place: handle_timer and next_deadline hold the list while they may get here
        heap = self._heap
        heap[:] = [e for e in heap if (t := e[2].get(e[3])) is not None and t._heap_at == e[0]]
        heapq.heapify(heap)
