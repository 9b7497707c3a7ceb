"""Transaction-stateful proxying (RFC 3261 §16 over the §17 transactions), sans-IO.

The transaction user (TU) of ``workers.transactions``: it decides, the table keeps state and
timers, and ``StatelessProxy`` does the parsing, the checks (§16.3), the route processing
(§16.4-16.5) and the edits of each forwarded copy (§16.6).

Rules:
1. A request of a stateful route creates a server transaction: its retransmissions are
   absorbed (the last response is re-sent), an INVITE gets 100 Trying at once. Requests the
   proxy refuses (§16.3 checks, no route, a route's ``reject``, a relay: proxy rule 10) and
   OPTIONS for the proxy itself are answered statelessly, as their answer is the same for
   every retransmission. The dialog table sees an in-dialog request only once it is not
   refused, so a refused BYE ends no call; one without a Route that matches a dialog we hold
   is ``known`` to the relay rule (asked before the table sees it). What becomes of each new
   request is ``workers/admission.py``'s decision.
2. Each attempt to forward a request is a client transaction with its own branch. A final
   response that the destination set's failover covers (408, 5xx by default), a timeout
   (Timer B/F) or a transport failure moves on to the next destination of the set (serial
   forking); once none is left the best answer goes upstream: the response, or 408 for a
   timeout, 503 for a transport failure.
3. Provisional responses except 100 and every 2xx go upstream at once (§16.7 step 5); a 2xx
   arriving after a final was sent is forwarded statelessly, as are responses that match no
   client transaction (2xx retransmissions after Timer M, strays: ``StatelessProxy``).
4. ACK: for a non-2xx final it matches the INVITE server transaction and is absorbed (the
   client transaction sent its own hop-by-hop ACK downstream); an ACK for a 2xx is a
   transaction of its own and is forwarded statelessly (§16.11 rules apply to it).
5. CANCEL (§16.10): with a matching INVITE server transaction it is answered 200 and the
   branch in progress is cancelled (its 487 goes upstream as the final); without one it is
   forwarded statelessly.
6. Timer C (§16.6 step 11): an INVITE branch with no final after ``timer_c`` seconds is
   cancelled and the caller gets 408.
7. Out of room (``TableFull``) a request gets 503 statelessly; nothing here grows without
   bound beyond the table (contexts live only as long as their transactions).
8. What a call's transactions keep for their 32 s after the final (RFC 6026 Timers L and M)
   is shared where it repeats: a context's ``Inbound`` strings are interned, and equal
   destinations are one tuple (a bounded table that starts over when full).
9. An INVITE answered 2xx by the attempt in progress is folded into one ``Held`` by the
   table (``TransactionTable.hold``) and its context is dropped: for the 32 s of Timers L
   and M a retransmitted INVITE is absorbed, the ACK goes on (rule 4), and a retransmitted
   2xx goes upstream where the 2xx went. A call costs ~470 B in that time instead of ~1.27 KB.
10. A message that needs a dialog this worker does not hold (an in-dialog request, a CANCEL
   without its INVITE here, a response to an INVITE) is shown to ``screen`` first, when the
   worker sets one: while dialogs move between workers it raises ``Withheld`` or
   ``Forward`` (``workers/dialogs/handover.py``) instead of letting the message go on statelessly.
   A request that would start a call (an INVITE outside a dialog) is shown to ``claim``,
   dialogs or not, which raises ``Forward`` when another worker owns its Call-ID: the call
   starts where its responses, CANCEL, ACK and in-dialog requests will go (with dialogs, its
   dialog and CDR; without, a transaction here would meet the edge's routing by Call-ID as
   rule 12 says). A caller's INVITE retransmission after rule 12 gave the call up is one.
11. Failure routing (docs/routing.md, ``workers/targets.py``): once the set in use is done
   with a call (none of it left, or a final its failover does not cover) and the last
   outcome is one its rule routes on (``failure_codes``; no answer with
   ``failure_on_timeout``), the rule's next ``failure_sets`` entry takes the call, as rule 2
   within it; a set with nothing usable is skipped as a 503. A CANCEL or a full table ends
   the search.
12. A call whose Call-ID another worker now owns (a worker joined: ``let_calls_go``, from
   ``workers/dialogs/owners.py`` rule 2) has its responses, CANCEL and ACK routed there by
   the edge: this worker can no longer be its response context (§16.7), and its Timer C
   would send a CANCEL and a 408 for a call answered meanwhile (§16.8). So an INVITE or
   other request with an attempt in progress is given up quietly: no final upstream, Timer C
   stopped, its server transaction ended, its client transaction ended when Proceeding (the
   callee has the request) or left to retransmit otherwise (``MOVED``: what it still gets
   goes on statelessly, as the new owner forwards the rest, rule 3; an INVITE's first
   response or Timer B, a non-INVITE's Timer F, ends it).
13. A request waiting on a job when its Call-ID moved (a location lookup, an RFC 3263
   resolution: no attempt in progress for rule 12 to give up) is handed to ``pass_on`` when
   the job answers, before anything is sent for it: when another worker owns the Call-ID
   now, the request as it came goes there (a ``FWD``; that worker serves it as a new
   request, with its own 100 Trying and lookup) and is given up here quietly as in rule 12,
   its server transaction ended with no final (it sent only 100 Trying). Forwarding it from
   here would start its dialog after this worker's ``y`` marker (a call with no CDR) and
   leave a transaction whose answers go elsewhere (Timer C's CANCEL and 408). A request one
   failover attempt already tried is tried from the start there. An INVITE handed back by
   its HA1 read is shown to ``pass_on`` as ``claim`` would see it. A ``FWD`` that could not
   leave keeps the request here, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from conf.settings import Mode, Settings
from dialogstate.table import DialogTable
from ingress.sip.errors import SipError
from ingress.sip.message import Request, Response
from ingress.sip.serialize import build_response
from workers.admission import Admission
from workers.auth.admit import NeedsHa1
from workers.coreevents import Event, Job, collect
from workers.dialogs.duty import DialogDuty
from workers.listeners import is_ip
from workers.proxied import MOVED, TIMEOUT, UNAVAILABLE, Dests, Proxied
from workers.proxy import Inbound, Out, Plan, StatelessProxy
from workers.registrar.natping import NATPING_BRANCH_PREFIX, NatPinger
from workers.registrar.register import Registrar
from workers.routing.dispatcher import Dispatcher
from workers.routing.probes import PROBE_BRANCH_PREFIX
from workers.targets import fails_over, next_set
from workers.timerc import TimerC
from workers.transactions import (
    CancelReceived,
    ClientTransaction,
    Held,
    RequestReceived,
    ResponseReceived,
    SendCancel,
    ServerTransaction,
    State,
    TableFull,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    TransactionTable,
    Transmit,
    TransportFailed,
    server_key,
)

#: an attempt a call moving away leaves in progress (rule 12)
_ATTEMPTING = frozenset({State.CALLING, State.TRYING, State.PROCEEDING})


class StatefulProxy:
    """The stateful TU. ``handle``/``handle_timer`` return what to send; the caller arms one
    timer for ``next_deadline()``."""

    def __init__(self, settings: Settings, stateless: StatelessProxy,
                 table: TransactionTable | None = None, *,
                 external_timers: bool = False) -> None:  # fmt: skip
        """Args:
        external_timers: dialog lifetimes are held by the timer service: the worker hands
            ``dialogs.timer_ops`` to its ``TimerClient`` and fires to ``dialog_expired``.
        """
        t = settings.transactions
        timers = TimerConfig(t1=t.t1_ms / 1000, t2=t.t2_ms / 1000, t4=t.t4_ms / 1000)
        self.table = table or TransactionTable(timers, max_transactions=t.max_transactions,
                                               send_trying=t.send_trying, max_held=t.max_held,
                                               max_held_bytes=t.max_held_bytes)  # fmt: skip
        self.sl = stateless
        self.timer_c_s = t.timer_c_s
        self.cancel_wait_s = 64 * timers.t1
        self.dispatcher = stateless.routing.dispatcher
        reg = settings.registrar
        hosts = [lst.address for lst in settings.listen]
        #: the registrar when enabled: its REGISTERs and lookups become ``jobs``
        self.registrar = Registrar(reg, hosts) if reg.enabled else None
        #: keep-alives to registered contacts behind NAT (docs/nat.md)
        self.natping = NatPinger(settings.nat, settings.listen, instance=self.dispatcher.instance,
                                 owns=self.dispatcher.owns,
                                 ) if reg.enabled and settings.nat.ping_interval_s > 0 else None  # fmt: skip
        self.nat_tests = frozenset(settings.nat.detect)
        self._resp_from: tuple[Response, Inbound] | None = None
        self.jobs: list[Job] = []
        #: dialog tracking (RFC 3261 §12): CDRs, profiles and limits, lifetimes
        self.dialogs = DialogTable(settings, is_us=stateless.listeners.uri_is_us,
                                   emit_deltas=False, external_timers=external_timers,
                                   ) if settings.dialogs.enabled else None  # fmt: skip
        self.wall = 0.0  # wall-clock time of the current input, for CDRs (set by ``handle``)
        #: rule 10: called with the Call-ID of a message whose dialog is not here
        self.screen: Callable[[str], None] | None = None
        #: rule 10: called with the Call-ID of a request that would start a call here
        self.claim: Callable[[str], None] | None = None
        #: rule 13: passes a request a job held on to its Call-ID's owner if that is another
        #: worker now (True), as a ``FWD``
        self.pass_on: Callable[[Request, Inbound], bool] | None = None
        #: destination health changes for the worker to log (dispatcher ``HealthChanged``)
        self.health_events: list[Any] = []
        self.timer_c = TimerC()  # rule 6
        self._outs: list[Out] = []
        self.dests = Dests()  # rule 8
        self._events: deque[Event] = deque()
        #: counters the worker adds to its load statistics
        self.counters: dict[str, int] = {"absorbed": 0, "bad_path": 0, "failover": 0,
                                         "failure_route": 0, "timeout": 0, "table_full": 0,
                                         "timer_c": 0, "calls_moved": 0,
                                         "calls_passed": 0}  # fmt: skip
        #: rule 1: what becomes of a new request
        self.admission = Admission(settings, stateless, self.registrar, self.dialogs,
                                   self.counters)  # fmt: skip
        #: the dialog work beside the transactions (rule 10, lifetimes and their BYEs)
        self.duty = DialogDuty(self.dialogs, self.table, self.dests, stateless.listeners,
                               self.counters) if self.dialogs is not None else None  # fmt: skip

    def use_routing(self, dispatcher: Dispatcher, route_modes: dict[str, Mode]) -> None:
        """A reload swapped the worker's routing (``workers/routing/reload.py``): transactions
        in progress keep the sets they hold; new ones use these."""
        self.dispatcher = dispatcher
        self.admission.route_mode = route_modes

    @property
    def needed(self) -> bool:
        """Whether the worker needs this core: some route is stateful, the registrar is on, a
        destination set is probed (probe answers come back here), or credentials are read from
        a cacheDB (its ``auth`` jobs)."""
        return (self.admission.any_stateful or self.registrar is not None or self.dialogs is not None
                or any(ds.probing for ds in self.dispatcher.sets.values())
                or (self.sl.auth is not None and self.sl.auth.store.uses_cachedb))  # fmt: skip

    # -- events ------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None. The outboxes the inputs fill (``jobs``, the
        dialog table's ``timer_ops`` and ``cdrs``, ``refused``, ``health_events``) are taken
        into one queue in that order when it runs dry, so a caller that takes every event
        after each input sees each once, and a CDR before anything it takes after it."""
        ev = self._events
        if not ev:
            collect(ev, self.jobs, self.dialogs, self.admission.refused, self.health_events)
        return ev.popleft() if ev else None

    # -- inputs ------------------------------------------------------------------------------

    def begin(self) -> list[Out]:
        """A fresh list for what this input sends: every input (``handle``, ``handle_timer``,
        a job's answer: ``workers/jobanswers.py``) starts with one and ends with ``drain``."""
        self._outs = []
        return self._outs

    def handle(self, raw: bytes, inb: Inbound, now: float, wall: float = 0.0) -> list[Out]:
        """Process one message (``Drop``/``Malformed`` as ``StatelessProxy.handle``); ``wall``
        is epoch seconds, for CDRs."""
        msg = self.sl.parse(raw, inb)
        duty = self.duty
        if self.screen is not None and duty is not None and duty.absent(msg):
            self.screen(msg.call_id)
        elif self.claim is not None and DialogDuty.starts(msg):
            self.claim(msg.call_id)  # dialogs or not (rule 10)
        self.wall = wall
        outs = self.begin()
        if isinstance(msg, Response):
            self._on_response(msg, inb, now)
        else:
            self.receive_request(msg, inb, now)
        self.drain(now)
        return outs

    def next_deadline(self) -> float | None:
        """The earliest of the transactions', the dialogs', the probes', the keep-alives' and
        Timer C's deadlines (once per batch, not per message)."""
        dialogs, natping = self.dialogs, self.natping
        due = [self.table.next_deadline(), self.dispatcher.next_deadline(),
               self.timer_c.next_deadline(),
               dialogs.next_deadline() if dialogs is not None else None,
               natping.next_deadline() if natping is not None else None]  # fmt: skip
        return min((d for d in due if d is not None), default=None)

    def handle_timer(self, now: float, wall: float = 0.0) -> list[Out]:
        outs = self.begin()
        self.wall = wall
        self.table.handle_timer(now)
        if self.duty is not None:
            self.duty.expire(now, self.wall)
        for ctx in self.timer_c.due(now):
            self._timer_c_fired(ctx, now)
        self.drain(now)
        return outs

    def probes(self, now: float) -> list[Out]:
        """OPTIONS probes due now, as outs for ``ingress`` (the worker fills the ingress)."""
        self.health_events.extend(self.dispatcher.handle_timer(now))
        pings: list[Out] = self.natping.due(now) if self.natping is not None else []
        return pings + [("", [p.transport, p.host, p.port, 0, p.listener.address, p.listener.port],
                 p.data) for p in self.dispatcher.due_probes(now)]  # fmt: skip

    def receive_request(self, req: Request, inb: Inbound, now: float) -> None:
        """A request, new or handed back by its ``auth`` job: one whose HA1 must first be read
        from a cacheDB becomes that job (``workers/jobanswers.py`` ``authenticated``)."""
        try:
            self._on_request_now(req, inb, now)
        except NeedsHa1 as exc:  # nothing changed yet: handled again once the HA1 is read
            self.jobs.append(Job("auth", None, None, req, inb, credentials=exc.key))

    def _on_request_now(self, req: Request, inb: Inbound, now: float) -> None:
        table, reliable = self.table, inb.transport != "udp"
        method = req.method
        if method == "ACK":
            txn = table.receive_request(req, reliable=reliable, now=now)
            if txn is None or txn.state is State.ACCEPTED:
                self._outs.append(self.sl.request_out(req, inb))  # rule 4
            else:
                self.counters["absorbed"] += 1
            return
        if method == "CANCEL" and table.invite_for(req) is None:
            self._outs.append(self.sl.request_out(req, inb))  # rule 5
            return
        if method != "CANCEL" and table.server(server_key(req)) is not None:
            self.counters["absorbed"] += 1
            table.receive_request(req, reliable=reliable, now=now)
            return
        ctx = None
        register = method == "REGISTER" and self.registrar is not None and (
            self.registrar.serves(req.uri))  # fmt: skip
        if register and self.sl.auth is not None:
            try:  # the registrar's 401 (docs/auth.md); proxied REGISTERs meet it in plan()
                self.sl.auth.admit(req, False, False, self.sl.now)
            except SipError as exc:
                self._outs.append(self.sl._reply(req, inb, exc.status, exc.reason,
                                                 exc.extra_headers))  # fmt: skip
                return
        if self.dialogs is not None and (method == "CANCEL" or register):
            self.dialogs.receive_request(req, now, self.wall)
        if method != "CANCEL" and not register:
            ctx = self.admission.admit(req, inb, now, self.wall, self._outs)
            if ctx is None:
                return
        dest = self.dests.share(inb.ingress, self.sl.reply_meta(inb, req))
        try:
            txn = table.receive_request(req, reliable=reliable, now=now, dest=dest, context=ctx)
        except TableFull:
            self.counters["table_full"] += 1
            self._outs.append(self.sl._reply(req, inb, *UNAVAILABLE))
            return
        if ctx is not None and isinstance(txn, ServerTransaction):
            ctx.server = txn
        if register and isinstance(txn, ServerTransaction):
            self.jobs.append(Job("register", txn, None, req, inb))

    def _on_response(self, resp: Response, inb: Inbound, now: float) -> None:
        if self.dialogs is not None:
            self.dialogs.receive_response(resp, now, self.wall)
        branch = resp.vias[0].branch or ""
        if branch.startswith(NATPING_BRANCH_PREFIX):
            if self.natping is not None:
                self.natping.answered(branch, now)
            return
        if branch.startswith(PROBE_BRANCH_PREFIX):
            if resp.status >= 200:
                self.health_events.extend(self.dispatcher.probe_answered(branch, resp.status, now))
            return
        self._resp_from = (resp, inb)  # for _upstream, as the table hands the response back
        if self.table.receive_response(resp, now) is None:
            self._outs.append(self.sl.response_out(resp, inb))  # rule 3

    def _upstream(self, resp: Response) -> bytes:
        """``resp`` as it goes upstream: our Via off, its Contact fixed (docs/nat.md)."""
        held = self._resp_from
        return self.sl.pop_via(resp, held[1] if held is not None and held[0] is resp else None)

    # -- events ------------------------------------------------------------------------------

    def drain(self, now: float) -> None:
        """Carry out what the transaction table's events ask, into the list ``begin`` made."""
        table, outs = self.table, self._outs
        while (item := table.next_event()) is not None:
            txn, ev = item
            if isinstance(ev, Transmit):
                ingress, meta = txn.dest
                outs.append((ingress, meta, ev.data))
            elif isinstance(ev, ResponseReceived):
                self._on_client_response(txn, ev.response, now)
            elif isinstance(txn, Held):
                continue  # a Held only passes a 2xx up (workers/txn/table.py rule 7)
            elif isinstance(ev, RequestReceived):
                self._on_server_request(txn, ev.request, now)
            elif isinstance(ev, CancelReceived):
                self._on_cancelled(txn, now)
            elif isinstance(ev, SendCancel):
                self._send_cancel(txn, ev.data, now)
            elif isinstance(ev, (TimedOut, TransportFailed)):
                self._on_attempt_failed(txn, isinstance(ev, TimedOut), now)
            elif isinstance(ev, Terminated):
                txn.context = None

    def _on_server_request(self, txn: Transaction, req: Request, now: float) -> None:
        if req.method == "ACK":
            return  # RFC 6026 ACK in Accepted: forwarded where it arrived (rule 4)
        if req.method == "CANCEL":
            data = build_response(req, 200, "OK")
            self.table.respond(txn, data, 200, now)  # type: ignore[arg-type]
            return
        ctx: Proxied | None = txn.context
        if ctx is None:
            return  # a REGISTER: its job is queued already
        if ctx.aor is not None:
            assert isinstance(txn, ServerTransaction) and ctx.inb is not None
            self.jobs.append(Job("lookup", txn, ctx, req, ctx.inb))
            return
        self.try_next(ctx, now)

    def try_next(self, ctx: Proxied, now: float) -> None:
        """Forward to the next target left; answer upstream when none is (rule 2)."""
        req, plan, inb = ctx.request, ctx.plan, ctx.inb
        assert req is not None and plan is not None and inb is not None
        while self._forward_next(ctx, req, plan, inb, now):  # True: this set is used up
            taken = 0 if ctx.cancelled else next_set(ctx)
            self.counters["failure_route"] += taken
            if not taken:
                break
        else:
            return  # an attempt is under way (or a DNS job will go on with it)
        self._answer_best(ctx, now)

    def _forward_next(self, ctx: Proxied, req: Request, plan: Plan, inb: Inbound,
                      now: float) -> bool:  # fmt: skip
        """Forward to the first target left that takes the request (False); True when
        none is left."""
        while ctx.targets and not ctx.cancelled:
            target = ctx.targets.pop(0)
            hop, ruri, ctx.current, pre = target
            if not is_ip(hop.host_plain) and ctx.server is not None:
                # RFC 3263: the worker resolves it beside the loop, then ``resolved`` goes on
                self.jobs.append(Job("resolve", ctx.server, ctx, req, inb, target))
                return False
            p = plan if ruri is None else replace(plan, uri=ruri, uri_changed=True)
            if pre:  # a contact's Path: loose routing through its edge proxy (RFC 3327 §5.3)
                p = replace(p, routes=[*pre, *p.routes], changed=True)
            try:
                (ingress, meta, data), branch = self.sl.forward(req, inb, p, hop, ctx.attempt)
            except SipError as exc:
                ctx.fallback = (exc.status, exc.reason)
                ctx.outcome = exc.status
                ctx.attempt += 1
                continue
            ctx.attempt += 1
            try:
                client = self.table.send_request(
                    data, branch=branch, method=req.method, reliable=meta[0] != "udp",
                    now=now, dest=self.dests.share(ingress, meta), context=ctx,
                )  # fmt: skip
            except TableFull:
                self.counters["table_full"] += 1
                ctx.fallback = UNAVAILABLE
                ctx.next_sets = ()  # no room for another set's attempt either
                break
            except ValueError:  # the branch is in use: a request looped through us
                ctx.fallback = (482, "Loop Detected")
                continue
            ctx.client = client
            if req.method == "INVITE":
                self.timer_c.arm(ctx, now + self.timer_c_s)
                if self.duty is not None and req.to.tag is None:
                    self.duty.forwarded(ctx, req, ingress, meta, now, self.wall)
            return False
        return True

    def dialog_expired(self, call_id: str, from_tag: str, now: float, wall: float) -> list[Out]:
        """The timer service fired a dialog's lifetime: its BYEs, if it is still due."""
        assert self.duty is not None
        outs = self.begin()
        self.wall = wall
        self.duty.expire_key(call_id, from_tag, now, wall)
        self.drain(now)
        return outs

    def let_calls_go(self, moved: Callable[[str], bool], now: float) -> int:
        """Rule 12: give up quietly the requests in progress whose Call-ID ``moved`` says
        another worker owns now. Called between inputs or from ``screen`` (before the input's
        own work): the Terminated events wait for the next ``drain``. Returns the count."""
        table, n = self.table, 0
        for srv in table.live_servers():
            ctx = srv.context
            if not isinstance(ctx, Proxied) or ctx.done or ctx.request is None:
                continue
            client = ctx.client
            if client is None or client.state not in _ATTEMPTING or not moved(ctx.request.call_id):
                continue  # no attempt under way: a job's answer passes it on (rule 13)
            self._give_up(ctx)
            srv.context = client.context = MOVED
            table.abandon(srv, now)
            table.abandon(client, now)
            n += 1
        self.counters["calls_moved"] += n
        return n

    def passed_on(self, ctx: Proxied, now: float) -> bool:
        """Rule 13: a job answered for ``ctx``'s request, and its Call-ID's owner is another
        worker now: the request went there (``pass_on``) and is given up here quietly, its
        server transaction ended with no final. False: it stays here (no other owner, or
        the ``FWD`` could not leave)."""
        req, inb, srv = ctx.request, ctx.inb, ctx.server
        if srv is None or req is None or inb is None or not self.passes_on(req, inb):
            return False
        self._give_up(ctx)
        srv.context = MOVED
        if ctx.client is not None:  # an attempt before it ended (a failover's resolution)
            ctx.client.context = MOVED
        if srv.state in (State.TRYING, State.PROCEEDING):
            self.table.abandon(srv, now)
        return True

    def _give_up(self, ctx: Proxied) -> None:
        """Rules 12-13: ``ctx``'s call is another worker's now; nothing more is done for it
        here (no target, no failover, no Timer C)."""
        ctx.done = True
        ctx.inb = ctx.request = ctx.plan = ctx.best = None
        ctx.targets.clear()
        ctx.next_sets = ()
        self.timer_c.arm(ctx, None)

    def passes_on(self, req: Request, inb: Inbound) -> bool:
        """Rule 13: ``req`` went to its Call-ID's owner, another worker now (counted)."""
        pass_on = self.pass_on
        if pass_on is None or not pass_on(req, inb):
            return False
        self.counters["calls_passed"] += 1
        return True

    def _timer_c_fired(self, ctx: Proxied, now: float) -> None:
        """Timer C, or the 64*T1 a cancelled branch gets to answer (§9.1: after that "the
        client SHOULD consider the transaction cancelled" and destroy it)."""
        client = ctx.client
        live = client is not None and client.state in (State.CALLING, State.PROCEEDING)
        if not ctx.done:
            self.counters["timer_c"] += 0 if ctx.cancelled else 1
            ctx.targets.clear()
            if live:
                self.table.cancel(client, now)  # type: ignore[arg-type]
            status = (487, "Request Terminated") if ctx.cancelled else TIMEOUT
            self.local_final(ctx, *status, now)
        else:
            if live:
                self.table.transport_error(client, now)  # type: ignore[arg-type]
            self.timer_c.arm(ctx, None)

    def _on_client_response(self, txn: Transaction | Held, resp: Response, now: float) -> None:
        if isinstance(txn, Held):  # a 2xx retransmission while Timer M runs (rule 9)
            ingress, meta = txn.dest
            self._outs.append((ingress, meta, self._upstream(resp)))
            return
        ctx: Proxied | None = txn.context
        status = resp.status
        if ctx is MOVED:  # rule 12: as the worker that owns the call now would (rule 3)
            held = self._resp_from
            if status != 100 and held is not None and held[0] is resp:
                self._outs.append(self.sl.response_out(resp, held[1]))
            if txn.state is State.PROCEEDING and isinstance(txn, ClientTransaction):
                self.table.abandon(txn, now)  # the callee has it now: an INVITE ends here
            return
        if ctx is None or status == 100:
            return  # a CANCEL's own answer, or 100 Trying (never forwarded, §16.7 step 3)
        if ctx.client is not txn or ctx.done:
            if 200 <= status < 300:
                self._send_upstream(ctx, self._upstream(resp), status, now)
            return
        if status < 300:
            self._send_upstream(ctx, self._upstream(resp), status, now)
            return
        self._report(ctx, status, resp, now)
        if ctx.best is None or status < ctx.best_status or status >= 600:
            ctx.best, ctx.best_status = self._upstream(resp), status  # §16.7 step 6, roughly
        ctx.outcome = status
        if ctx.targets and not ctx.cancelled and fails_over(ctx, status):
            self.counters["failover"] += 1
            self.try_next(ctx, now)
            return
        if ctx.next_sets and not ctx.cancelled:  # this set is done with the call (rule 11)
            ctx.targets.clear()
            self.try_next(ctx, now)
            return
        self._answer_best(ctx, now)

    def _report(self, ctx: Proxied, status: int | None, resp: Response | None, now: float) -> None:
        """Tell the dispatcher how the destination did (its health counts failures)."""
        d = ctx.current
        # d's own set: a prefix table's list spans several (docs/prefix_tables.md)
        ds = self.dispatcher.sets.get(d.set_name) if d is not None else None
        if d is None or ds is None or ctx.dset is None or not ds.probing:
            return
        retry = None
        if resp is not None and status == 503:
            value = resp.header("retry-after")
            head = value.split(b";")[0].strip() if value else b""
            retry = float(head) if head.isdigit() else None
        self.health_events.extend(self.dispatcher.report(d, status, now, retry))

    def _on_attempt_failed(self, txn: Transaction, timed_out: bool, now: float) -> None:
        ctx: Proxied | None = txn.context
        if ctx is None or not isinstance(txn, ClientTransaction) or ctx.client is not txn:
            return  # Timer H, a server transport error, a CANCEL's own timeout
        if ctx.done:
            return
        if timed_out:
            self.counters["timeout"] += 1
        self._report(ctx, None, None, now)
        ctx.fallback = TIMEOUT if timed_out else UNAVAILABLE
        ctx.outcome = None
        if not fails_over(ctx, None):
            ctx.targets.clear()
        elif ctx.targets and not ctx.cancelled:
            self.counters["failover"] += 1
        self.try_next(ctx, now)

    def _on_cancelled(self, txn: Transaction, now: float) -> None:
        ctx: Proxied | None = txn.context
        if ctx is None or ctx.done:
            return
        ctx.cancelled = True
        ctx.targets.clear()
        client = ctx.client
        if client is not None and client.state is not State.TERMINATED:
            self.table.cancel(client, now)  # a SendCancel follows once it may (§9.1)
            self.timer_c.arm(ctx, now + self.cancel_wait_s)
        else:
            self.local_final(ctx, 487, "Request Terminated", now)

    def _send_cancel(self, txn: Transaction, data: bytes, now: float) -> None:
        assert isinstance(txn, ClientTransaction)
        try:
            self.table.send_request(data, branch=txn.branch, method="CANCEL",
                                    reliable=txn.reliable, now=now, dest=txn.dest)  # fmt: skip
        except (TableFull, ValueError):
            self.counters["table_full"] += 1  # Timer C or B ends the branch anyway

    # -- answers upstream --------------------------------------------------------------------

    def _answer_best(self, ctx: Proxied, now: float) -> None:
        if ctx.best is not None:
            self._send_upstream(ctx, ctx.best, ctx.best_status, now)
        else:
            self.local_final(ctx, *ctx.fallback, now)

    def local_final(self, ctx: Proxied, status: int, reason: str, now: float) -> None:
        """Answer ``ctx``'s request upstream with a final of our own."""
        if ctx.request is not None:
            data = build_response(ctx.request, status, reason)
            self._send_upstream(ctx, data, status, now, local=True)

    def _send_upstream(self, ctx: Proxied, data: bytes, status: int, now: float,
                       local: bool = False) -> None:  # fmt: skip
        srv = ctx.server
        if (status >= 300 and not ctx.done and ctx.request is not None
                and self.dialogs is not None):  # fmt: skip
            self.dialogs.final_sent(ctx.request, status, now, self.wall, local=local)
        if srv is not None and srv.accepts(status):
            self.table.respond(srv, data, status, now)
        elif srv is not None and 200 <= status < 300:
            ingress, meta = srv.dest  # a 2xx after our final: forwarded all the same (rule 3)
            self._outs.append((ingress, meta, data))
        if status >= 200 and not ctx.done:
            ctx.done = True
            ctx.inb = ctx.request = ctx.plan = ctx.best = None
            ctx.targets.clear()
            client = ctx.client
            pending = client is not None and client.state in (State.CALLING, State.PROCEEDING)
            self.timer_c.arm(ctx, now + self.cancel_wait_s if pending else None)
            if (srv is not None and client is not None and 200 <= status < 300
                    and self.table.hold(srv, client) is not None):  # fmt: skip
                srv.context = client.context = None  # rule 9: the context goes with them
