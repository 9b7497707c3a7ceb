"""Dialog tracking (RFC 3261 §12) for the stateful proxy, sans-IO: no sockets, clock or logging.

The stateful core (``workers/stateful.py``) hands this table the messages of calls it forwards
statefully, with ``now`` (monotonic seconds, for deadlines) and ``wall`` (epoch seconds, for
CDR timestamps); the table says which dialogs exist, when each expires, builds the BYEs that
end an expired one (``dialogstate/msgs.py``), and queues one CDR per finished call and a
compact delta per state change for the state plane. What holds the dialogs (the table by key,
the deadline heap, shared values, records and deltas in and out: rules 8 to 10) is its base,
``DialogStore`` in ``dialogstate/store.py``; this module is the machine over it.

Rules:
1. One dialog per initial INVITE forwarded statefully, keyed by (Call-ID, From-tag). Forked
   early dialogs collapse into it: the To-tag is the last one a 1xx carried, and the 2xx that
   answers fixes it. A 2xx from another fork afterwards does not match (its To-tag differs);
   the caller ACKs and BYEs that fork on its own, through us, untracked.
2. The machine is a table, ``TRANSITIONS[(State, Input)] = (effect, next)``, defined for every
   pair: a peer cannot raise here. ``docs/dialogs.md`` shows the same table (a test compares).
3. In-dialog messages match by Call-ID and tags in either direction: From-tag = caller's tag
   (the caller sent the request), or From-tag = the callee's To-tag (the callee did). Before
   the answer the callee's tag is not checked (any fork's early dialog matches).
4. Terminated means: removed from the table, profile memberships released, the CDR queued,
   the "t" delta queued — all in one place (``_end``), so each happens exactly once.
5. A CANCEL does not end the dialog at once: the INVITE's final does (487 or any failure:
   cause "cancel"), and a 2xx that crossed the CANCEL confirms the call instead (§9.1).
6. Failures (>= 300) of the initial INVITE come from what the proxy sends upstream
   (``final_sent``), not from what a destination answers: a 503 that fails over to the next
   destination does not end the call.
7. Lifetime: a dialog expires at ``deadline`` (monotonic). Unanswered, it lives
   ``early_lifetime_s`` (a safety net behind Timer C); answered, the route's lifetime or the
   default, replaced by Session-Expires (RFC 4028) when the 2xx, or a re-INVITE/UPDATE or its
   2xx, carries one. Expiry of a confirmed dialog builds a BYE to each side.
8. State per dialog is compact: one slotted object of bytes, str, int and float; the key is
   one string (Call-ID NUL From-tag) shared by the table, the heap and the timer client
   (``timer_ops`` carry it); From and To are one bytes object, and the To-tag is read from it;
   equal remote targets, route sets, destinations and addresses (a trunk's are the same for
   every call) are shared through a bounded intern table, which starts over when full.
   Nothing else refers to a dialog: the heap holds keys.
9. The heap holds about one ``(deadline, key)`` per dialog. A deadline that moves earlier gets
   a new entry; one that moves later keeps its entry, which is re-filed when it surfaces
   (lazy deletion). So ``next_deadline()`` is never later than the next expiry, and at times
   earlier (``expire`` then finds nothing due). Past twice the live dialogs plus 64 entries
   the heap is rebuilt from the table.
10. Records from elsewhere (a replica's snapshot or "c" deltas, an ``ADOPT`` envelope) are
   checked before the table changes: a state out of range, a deadline that is not finite or
   members that are not pairs raise ``ValueError`` (or the ``TypeError`` of a value of the
   wrong type) with the table as it was. ``adopt`` skips such a record and counts it
   (``adopt_refused``): an envelope on the worker's socket cannot end the loop's work there.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Any

from conf.settings import Settings
from dialogstate.msgs import build_bye, make_cdr, record_route_sides, session_expires, target
from dialogstate.profiles import Profiles
from dialogstate.record import (
    CALLEE,
    CALLER,
    CANCELLING,
    FIRE_TOLERANCE_S,
    OTHER_SIDE,
    TRANSITIONS,
    Bye,
    C,
    Dialog,
    Expired,
    I,
    Input,
    State,
    encode,
    join_parties,
)
from dialogstate.store import DialogStore
from ingress.sip.errors import SipError
from ingress.sip.grammar import parse_uri
from ingress.sip.message import Message, Request, Response, Uri

#: dialogs expired per ``expire`` call at most, so a burst cannot starve the loop
DEFAULT_EXPIRE_BATCH = 256


#: ``via_for(dest) -> (Via value up to the branch, e.g. b"SIP/2.0/UDP 192.0.2.1:5060", branch)``
ViaFor = Callable[[Any], tuple[bytes, str]]


def _never(uri: Uri) -> bool:
    return False


class DialogTable(DialogStore):
    """The dialogs of one worker. Feed it messages; take ``cdrs`` and ``deltas`` after each
    call (``take_cdrs``, ``take_deltas``); call ``expire`` at ``next_deadline``."""

    def __init__(self, settings: Settings, *, is_us: Callable[[Uri], bool] = _never,
                 emit_deltas: bool = True, external_timers: bool = False) -> None:  # fmt: skip
        """Args:
        external_timers: lifetimes are held by the timer service (timers/): every deadline
            set or cleared becomes an entry of ``timer_ops`` for the caller to hand to its
            ``TimerClient``, and a fire comes back through ``expire_key``; the table keeps no
            heap of its own then.
        """
        super().__init__(Profiles(settings.dialog_profile), emit_deltas=emit_deltas,
                         external_timers=external_timers)  # fmt: skip
        d = settings.dialogs
        self.default_lifetime_s = d.default_lifetime_s
        self.early_lifetime_s = d.early_lifetime_s
        self.max_dialogs = d.max_dialogs
        self.node = settings.node.name
        self._route_lifetime = {r.name: r.dialog_lifetime_s for r in settings.route
                                if r.dialog_lifetime_s}  # fmt: skip
        self._is_us = is_us
        self.cdrs: list[dict[str, Any]] = []

    # -- admission and creation --------------------------------------------------------------

    def admit(self, req: Request, *, source_ip: str, route: str = "") -> tuple[int, str] | None:
        """Whether a new call may be forwarded: None, or the (status, reason) to refuse it
        with: 503 when the table is full, the profile's status when over a limit."""
        if req.method != "INVITE" or req.to.tag is not None:
            return None
        if len(self._table) >= self.max_dialogs:
            self.counters["refused"] += 1
            return (503, "Service Unavailable")
        refusal = self.profiles.check(self.profiles.members(req, source_ip, route))
        if refusal is not None:
            self.counters["refused"] += 1
        return refusal

    def invite_forwarded(self, req: Request, *, caller: Hashable, callee: Hashable,
                         source_ip: str, source_port: int, destination: str, now: float,
                         wall: float, route: str = "", lifetime_s: float | None = None,
                         ) -> Dialog | None:  # fmt: skip
        """The initial INVITE ``req`` left for ``callee`` (``destination`` its "ip:port").
        The first attempt creates the dialog; a failover attempt moves its callee side.
        ``caller`` is where ``req`` came from (``source_ip``:``source_port``). None when the
        request creates no dialog (not an initial INVITE, or the table is full)."""
        if req.method != "INVITE" or req.to.tag is not None:
            return None
        key = req.call_id + "\0" + (req.from_.tag or "")
        dlg = self._table.get(key)
        if dlg is not None:
            dlg.callee, dlg.destination = self._shared(callee), self._shared(destination)
            self._delta("f", dlg, dlg.callee, dlg.destination)
            return dlg
        if len(self._table) >= self.max_dialogs:
            self.counters["refused"] += 1
            return None
        dlg = Dialog()
        dlg.key, dlg.state, dlg.flags, dlg.deadline = key, State.UNCONFIRMED, 0, 0.0
        dlg.parties = join_parties(req.from_.raw, req.to.raw)
        caller_target = target(req) or req.from_.uri.raw.encode("utf-8", "surrogateescape")
        dlg.caller_target, dlg.callee_target = self._shared(caller_target), b""
        dlg.caller_route = self._shared(b", ".join(req.header_values("record-route")))
        dlg.callee_route = b""
        dlg.invite_cseq = dlg.caller_cseq = req.cseq
        dlg.callee_cseq = 0
        dlg.caller, dlg.callee = self._shared(caller), self._shared(callee)
        host = f"[{source_ip}]" if ":" in source_ip else source_ip
        dlg.source = self._shared(f"{host}:{source_port}")
        dlg.destination = self._shared(destination)
        dlg.start, dlg.answer = wall, 0.0
        if lifetime_s is None:
            lifetime_s = self._route_lifetime.get(route, self.default_lifetime_s)
        dlg.lifetime, dlg.route = lifetime_s, route
        dlg.members = self.profiles.members(req, source_ip, route)
        self.profiles.add(dlg.members)
        self._table[key] = dlg
        self._pending += 1
        self.counters["processed"] += 1
        self._arm(dlg, now + self.early_lifetime_s)
        if self.emit_deltas:
            self._push(["c", *encode(dlg, now, wall)])
        return dlg

    # -- messages ----------------------------------------------------------------------------

    def match(self, msg: Message) -> tuple[Dialog, str] | None:
        """The dialog of ``msg`` and who sent the request (``"caller"``/``"callee"``) it is
        or answers (rule 3)."""
        cid, ftag, ttag = msg.call_id, msg.from_.tag, msg.to.tag
        table = self._table
        dlg = table.get(cid + "\0" + (ftag or ""))
        if dlg is not None and (ttag is None or dlg.state < C or ttag == dlg.to_tag):
            return dlg, CALLER
        if ttag is not None:
            dlg = table.get(cid + "\0" + ttag)
            if dlg is not None and (dlg.state < C or ftag == dlg.to_tag):
                return dlg, CALLEE
        return None

    def knows(self, req: Request) -> bool:
        """Whether ``req`` is a request of a dialog held here, sent to the remote target
        this table holds for the other side (host and port): an in-dialog request that
        came without our Route may go on (``workers/proxy.py`` rule 10)."""
        found = self.match(req)
        if found is None:
            return False
        dlg, side = found
        target = dlg.callee_target if side == CALLER else dlg.caller_target
        try:
            uri = parse_uri(target.decode("utf-8", "surrogateescape"))
        except SipError:
            return False  # none yet (an early dialog without a Contact), or one we cannot read
        ruri = req.uri
        return (uri.host_plain.lower(), uri.port or 5060) == (ruri.host_plain.lower(),
                                                               ruri.port or 5060)  # fmt: skip

    def receive_request(self, req: Request, now: float, wall: float) -> Dialog | None:
        """A request received from either side (before the transaction layer sees it):
        CANCEL of an initial INVITE, BYE, and other in-dialog requests. Returns its dialog."""
        method = req.method
        if method == "ACK" or (req.to.tag is None and method != "CANCEL"):
            return None
        found = self.match(req)
        if found is None:
            return None
        dlg, side = found
        if method == "CANCEL":
            if side == CALLER and req.cseq == dlg.invite_cseq:
                self._step(dlg, I.CANCEL, now, wall, req, side)
        elif method == "BYE":
            self._step(dlg, I.BYE, now, wall, req, side, by=side)
        elif method in ("INVITE", "UPDATE") and session_expires(req):
            self._step(dlg, I.REFRESH, now, wall, req, side)
        else:
            self._step(dlg, I.REQUEST, now, wall, req, side)
        return dlg

    def receive_response(self, resp: Response, now: float, wall: float) -> Dialog | None:
        """A response received from either side (before the transaction layer sees it):
        1xx/2xx of the initial INVITE, and the answers to in-dialog requests."""
        found = self.match(resp)
        if found is None:
            return None
        dlg, side = found  # ``side`` sent the request; the other side answers
        status, responder = resp.status, OTHER_SIDE[side]
        if side == CALLER and resp.cseq_method == "INVITE" and resp.cseq == dlg.invite_cseq:
            if resp.to.tag is None or status == 100 or status >= 300:
                return dlg  # failures end the call as the proxy answers upstream (rule 6)
            inp = I.PROVISIONAL if status < 200 else I.ANSWER
            self._step(dlg, inp, now, wall, resp, responder)
        elif status == 408 or status == 481:
            self._step(dlg, I.TIMEOUT, now, wall, resp, responder, by=responder)
        elif 200 <= status < 300 and resp.cseq_method in ("INVITE", "UPDATE"):
            inp = I.REFRESH if session_expires(resp) else I.REQUEST
            self._step(dlg, inp, now, wall, resp, responder)
        return dlg

    def final_sent(self, req: Request, status: int, now: float, wall: float, *,
                   local: bool = False) -> Dialog | None:  # fmt: skip
        """The proxy sent the final ``status`` upstream for ``req`` (``local``: the proxy's
        own answer, such as 408 after Timer C or 503 with no destination left). A failure of
        the initial INVITE ends its dialog; a 408/481 to an in-dialog request too."""
        if status < 300:
            return None
        found = self.match(req)
        if found is None:
            return None
        dlg, side = found
        by = "proxy" if local else OTHER_SIDE[side]
        if req.to.tag is None:
            if req.method == "INVITE" and side == CALLER and req.cseq == dlg.invite_cseq:
                self._step(dlg, I.FAILURE, now, wall, None, side, by=by, status=status)
        elif status == 408 or status == 481:
            self._step(dlg, I.TIMEOUT, now, wall, None, side, by=by)
        return dlg

    # -- timers ------------------------------------------------------------------------------

    def expire(self, now: float, wall: float, via_for: ViaFor,
               max_batch: int = DEFAULT_EXPIRE_BATCH) -> list[Expired]:  # fmt: skip
        """End the dialogs whose deadline is due (at most ``max_batch``; when it cuts the
        batch short ``next_deadline()`` is already past and the loop calls again). A
        confirmed dialog comes with its two BYEs; their Vias come from ``via_for(dest)``."""
        heap, table = self._heap, self._table
        out: list[Expired] = []
        while heap and heap[0][0] <= now and len(out) < max_batch:
            at, key = heapq.heappop(heap)
            dlg = table.get(key)
            if dlg is None or dlg.deadline < at:
                continue  # ended, or an older entry of a deadline moved earlier
            if dlg.deadline > at:
                heapq.heappush(heap, (dlg.deadline, key))  # moved later: re-file (rule 9)
                continue
            byes = self.build_byes(dlg, via_for) if dlg.state == C else ()
            self._step(dlg, I.EXPIRE, now, wall, None, CALLER, by="proxy")
            out.append(Expired(dlg.call_id, dlg.from_tag, byes))
        return out

    def expire_key(self, call_id: str, from_tag: str, now: float, wall: float,
                   via_for: ViaFor) -> Expired | None:  # fmt: skip
        """A lifetime timer fired (``external_timers``): end the dialog if it is still due;
        None when it ended already or was refreshed since (it is armed again)."""
        dlg = self._table.get(call_id + "\0" + from_tag)
        if dlg is None:
            return None
        if dlg.deadline > now + FIRE_TOLERANCE_S:
            self.timer_ops.append(("arm", dlg.key, dlg.deadline))
            return None
        byes = self.build_byes(dlg, via_for) if dlg.state == C else ()
        self._step(dlg, I.EXPIRE, now, wall, None, CALLER, by="proxy")
        return Expired(dlg.call_id, dlg.from_tag, byes)

    def build_byes(self, dlg: Dialog, via_for: ViaFor) -> tuple[Bye, ...]:
        """The BYE to the caller and the BYE to the callee that end ``dlg``."""
        byes = []
        for side, dest in ((CALLER, dlg.caller), (CALLEE, dlg.callee)):
            via, branch = via_for(dest)
            byes.append(Bye(side, dest, build_bye(dlg, side, via, branch), branch))
        return tuple(byes)

    # -- outputs -----------------------------------------------------------------------------

    def take_cdrs(self) -> list[dict[str, Any]]:
        """The CDRs of the calls that ended since the last call (one per call, ever)."""
        out, self.cdrs = self.cdrs, []
        return out

    def take_deltas(self) -> list[list[Any]]:
        """The state changes since the last call, oldest first, as msgpack-ready lists."""
        out, self.deltas = self.deltas, []
        return out

    def stats(self) -> dict[str, Any]:
        """Counts for ``load_stats`` and ``sipline ctl stats``."""
        return {"node": self.node, "active": len(self._table), "early": self._pending,
                **self.counters, "profiles": self.profiles.view(),
                "limits": self.profiles.limit_view()}  # fmt: skip

    def listing(self, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` live dialogs for an operator (OpenSIPS ``dlg_list``), oldest first
        by start; what identifies the call and where it stands, not what builds its BYEs."""
        rows = []
        for d in sorted(self._table.values(), key=lambda d: d.start)[:max(0, limit)]:
            rows.append({"call_id": d.call_id, "from_tag": d.from_tag, "to_tag": d.to_tag,
                         "state": State(d.state).name.lower(), "start": d.start, "answer": d.answer,
                         "source": d.source, "destination": d.destination, "route": d.route,
                         "profiles": ["/".join(m) if m[1] else m[0] for m in d.members]})  # fmt: skip
        return rows

    def profile_sizes(self) -> dict[str, int | dict[str, int]]:
        """Every profile's size (``sipline ctl``): a count, or ``{value: count}``."""
        return self.profiles.view()

    # -- the machine -------------------------------------------------------------------------

    def _step(self, dlg: Dialog, inp: Input, now: float, wall: float, msg: Message | None,
              sender: str, *, by: str = "", status: int = 0) -> None:  # fmt: skip
        effect, nxt = TRANSITIONS[(dlg.state, inp)]
        if effect == "early" or effect == "confirm":
            assert isinstance(msg, Response)
            self._learn_callee(dlg, msg, now, wall, answered=effect == "confirm")
        elif effect == "update" or effect == "refresh":
            assert msg is not None
            self._update(dlg, msg, sender, now, wall, refresh=effect == "refresh")
        elif effect == "cancelling":
            dlg.flags |= CANCELLING
            self._delta("u", dlg, dlg.flags, dlg.caller_cseq, dlg.callee_cseq,
                        dlg.caller_target, dlg.callee_target)  # fmt: skip
        elif effect == "end":
            self._end(dlg, inp, wall, by, status)
            return
        self._set_state(dlg, nxt)

    def _learn_callee(self, dlg: Dialog, resp: Response, now: float, wall: float,
                      answered: bool) -> None:  # fmt: skip
        dlg.to_hdr = resp.to.raw
        callee_target = target(resp) or resp.to.uri.raw.encode("utf-8", "surrogateescape")
        dlg.callee_target = self._shared(callee_target)
        dlg.callee_route = self._shared(record_route_sides(resp, dlg.caller_route, self._is_us))
        if not answered:
            self._delta("e", dlg, resp.to.tag, dlg.to_hdr, dlg.callee_target, dlg.callee_route)
            return
        dlg.answer = wall
        self._arm(dlg, now + (session_expires(resp) or dlg.lifetime))
        self._delta("a", dlg, resp.to.tag, dlg.to_hdr, dlg.callee_target, dlg.callee_route,
                    dlg.answer, wall + dlg.deadline - now)  # fmt: skip

    def _update(self, dlg: Dialog, msg: Message, sender: str, now: float, wall: float,
                refresh: bool) -> None:  # fmt: skip
        """CSeq of the sender's requests and target refreshes (§12.2.1.2, §12.2.2)."""
        if isinstance(msg, Request):
            if sender == CALLER:
                dlg.caller_cseq = max(dlg.caller_cseq, msg.cseq)
            else:
                dlg.callee_cseq = max(dlg.callee_cseq, msg.cseq)
        if msg.cseq_method in ("INVITE", "UPDATE"):
            contact = target(msg)
            if contact is not None and sender == CALLER:
                dlg.caller_target = self._shared(contact)
            elif contact is not None:
                dlg.callee_target = self._shared(contact)
        args = (dlg.caller_cseq, dlg.callee_cseq, dlg.caller_target, dlg.callee_target)
        if refresh:
            self._arm(dlg, now + session_expires(msg))
            self._delta("r", dlg, wall + dlg.deadline - now, *args)
        else:
            self._delta("u", dlg, dlg.flags, *args)

    def _end(self, dlg: Dialog, inp: Input, wall: float, by: str, status: int) -> None:
        """Rule 4: the one way out of the table for a dialog this table owns."""
        c = self.counters
        if inp is I.FAILURE and dlg.flags & CANCELLING:
            cause, by = "cancel", CALLER
            c["cancelled"] += 1
        elif inp is I.FAILURE:
            cause = f"failure:{status}"
            c["failed"] += 1
        elif inp is I.EXPIRE:
            cause = "expired"
            c["expired"] += 1
        elif inp is I.TIMEOUT:
            cause = "timeout"
            c["timeout"] += 1
        else:
            cause = "bye"
        c["ended"] += 1
        self._remove(dlg)
        self.cdrs.append(make_cdr(dlg, wall, cause, by))
        self._delta("t", dlg, cause, by, wall)
