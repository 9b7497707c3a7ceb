"""Dialog tracking (RFC 3261 §12) for the stateful proxy, sans-IO: no sockets, clock or logging.

The stateful core (``workers/stateful.py``) hands this table the messages of calls it forwards
statefully, with ``now`` (monotonic seconds, for deadlines) and ``wall`` (epoch seconds, for
CDR timestamps); the table says which dialogs exist, when each expires, builds the BYEs that
end an expired one (``workers/dialog_msgs.py``), and queues one CDR per finished call and a
compact delta per state change for the state plane.

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

import enum
import heapq
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from conf.envelope import OUT_LOCAL_IP
from conf.settings import Settings
from ingress.sip.errors import SipError
from ingress.sip.grammar import parse_name_addr, parse_uri
from ingress.sip.message import Message, Request, Response, Uri
from workers.dialog_msgs import build_bye, make_cdr, record_route_sides, session_expires, target
from workers.profiles import Members, Profiles

#: deltas queued and not yet taken at most; past it they are dropped and counted, and the
#: state plane must resnapshot (it sees the gap in its sequence)
MAX_PENDING_DELTAS = 65_536
#: values (targets, route sets, destinations, addresses) kept for sharing at most (rule 8):
#: enough for the trunks and gateways a node talks to; a value seen once per call (a user
#: agent's Contact) then costs the table little, as it starts over when full
INTERN_MAX = 4096
#: dialogs expired per ``expire`` call at most, so a burst cannot starve the loop
DEFAULT_EXPIRE_BATCH = 256


class State(enum.IntEnum):
    UNCONFIRMED = 0  # the INVITE went out; nothing with a To-tag came back
    EARLY = 1  # a 1xx with a To-tag came back
    CONFIRMED = 2  # a 2xx came back
    TERMINATED = 3


class Input(enum.Enum):
    PROVISIONAL = "1xx with To-tag"
    ANSWER = "2xx to the INVITE"
    FAILURE = "final >= 300 sent upstream"
    CANCEL = "CANCEL"
    BYE = "BYE"
    REQUEST = "in-dialog request"
    REFRESH = "Session-Expires"
    TIMEOUT = "408/481 in dialog"
    EXPIRE = "deadline"


#: ``State(n)`` without the enum's ``__call__`` (one per loaded record); an unknown n is an
#: IndexError, which a replica treats as a broken stream like any bad delta
_STATES = tuple(State)
U, E, C, T = State.UNCONFIRMED, State.EARLY, State.CONFIRMED, State.TERMINATED
I = Input

#: (state, input) -> (effect, next state); effect None means "nothing changes" (rule 2)
TRANSITIONS: dict[tuple[State, Input], tuple[str | None, State]] = {
    (U, I.PROVISIONAL): ("early", E),
    (U, I.ANSWER): ("confirm", C),
    (U, I.FAILURE): ("end", T),
    (U, I.CANCEL): ("cancelling", U),
    (U, I.BYE): (None, U),  # a BYE needs a To-tag: none can match yet
    (U, I.REQUEST): (None, U),
    (U, I.REFRESH): (None, U),
    (U, I.TIMEOUT): (None, U),
    (U, I.EXPIRE): ("end", T),
    (E, I.PROVISIONAL): ("early", E),  # another fork, or an update of the same one
    (E, I.ANSWER): ("confirm", C),
    (E, I.FAILURE): ("end", T),
    (E, I.CANCEL): ("cancelling", E),
    (E, I.BYE): ("end", T),  # §15: the caller may BYE an early dialog
    (E, I.REQUEST): ("update", E),  # PRACK, UPDATE, INFO in the early dialog
    (E, I.REFRESH): ("refresh", E),
    (E, I.TIMEOUT): (None, E),  # the INVITE's own final ends it
    (E, I.EXPIRE): ("end", T),  # no BYE: the proxy's transaction layer owns the INVITE
    (C, I.PROVISIONAL): (None, C),  # a late 1xx
    (C, I.ANSWER): (None, C),  # a 2xx retransmission
    (C, I.FAILURE): (None, C),  # another fork's failure after the answer
    (C, I.CANCEL): (None, C),  # too late (§9.1)
    (C, I.BYE): ("end", T),
    (C, I.REQUEST): ("update", C),
    (C, I.REFRESH): ("refresh", C),
    (C, I.TIMEOUT): ("end", T),  # §12.2.1.2
    (C, I.EXPIRE): ("end", T),  # with a BYE to each side (``expire``)
    **{(T, i): (None, T) for i in Input},
}

#: flags
CANCELLING = 1

CALLER, CALLEE = "caller", "callee"
_OTHER = {CALLER: CALLEE, CALLEE: CALLER}


class Dialog:
    """One dialog: what building its BYEs and its CDR needs, and nothing else (rule 8).

    ``*_target`` is the remote target (Contact URI) of that side, ``*_route`` the Route value
    of a request sent *to* that side (b"" when none), ``*_cseq`` the highest CSeq that side
    sent, ``caller``/``callee`` where the proxy reached that side (opaque to this module).
    """

    __slots__ = (
        "answer",
        "callee",
        "callee_cseq",
        "callee_route",
        "callee_target",
        "caller",
        "caller_cseq",
        "caller_route",
        "caller_target",
        "deadline",
        "destination",
        "flags",
        "invite_cseq",
        "key",
        "lifetime",
        "members",
        "parties",
        "route",
        "source",
        "start",
        "state",
    )  # fmt: skip

    key: str  # Call-ID NUL From-tag (rule 8)
    state: State
    flags: int
    #: the From value, LF, the To value: one object for two that every dialog has (rule 8); a
    #: header value never holds an LF (the parser collapses folding, refuses bare CR or LF)
    parties: bytes
    caller_target: bytes
    callee_target: bytes
    caller_route: bytes
    callee_route: bytes
    invite_cseq: int
    caller_cseq: int
    callee_cseq: int
    caller: Any
    callee: Any
    source: str
    destination: str
    start: float
    answer: float
    deadline: float
    lifetime: float
    route: str
    members: Members

    @property
    def call_id(self) -> str:
        return self.key.partition("\0")[0]

    @property
    def from_tag(self) -> str:
        return self.key.partition("\0")[2]

    @property
    def from_hdr(self) -> bytes:
        """The caller's From value, as the INVITE carried it."""
        return self.parties.partition(b"\n")[0]

    @property
    def to_hdr(self) -> bytes:
        """The To value: the INVITE's, then the last 1xx's or the answer's (with the tag)."""
        return self.parties.partition(b"\n")[2]

    @to_hdr.setter
    def to_hdr(self, value: bytes) -> None:
        self.parties = _join_parties(self.parties.partition(b"\n")[0], value)

    @property
    def to_tag(self) -> str:
        """The callee's tag: the last 1xx's, then the answer's; "" before either."""
        return to_tag_of(self.to_hdr)

    def __repr__(self) -> str:
        return f"Dialog({self.key!r}, {self.state.name}, to_tag={self.to_tag!r})"


def _join_parties(from_hdr: bytes, to_hdr: bytes) -> bytes:
    """``Dialog.parties`` from its two values. Raises ValueError for a value with an LF (only
    a broken record from a peer can have one: the replica resnapshots)."""
    if b"\n" in from_hdr or b"\n" in to_hdr:
        raise ValueError("a From or To value with an LF")
    return from_hdr + b"\n" + to_hdr


#: a header parameter ``tag`` after the closing ">" of a name-addr (RFC 3261 §25.1: the
#: parameters of To follow the addr-spec; a parameter name is case-insensitive)
_TAG_AFTER_ADDR = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*([^; \t\r\n,]+)", re.IGNORECASE)


def to_tag_of(to_hdr: bytes) -> str:
    """The tag parameter of a To (or From) value, "" when it has none or does not parse.

    Every in-dialog match and every snapshot record reads it, so the common form
    ``... <uri>;tag=x`` is read with one regex over what follows the ">"; anything else (an
    addr-spec without brackets, a quoted parameter value) takes the full parse.
    """
    close = to_hdr.rfind(b">")
    if close >= 0 and b'"' not in to_hdr[close:]:
        m = _TAG_AFTER_ADDR.search(to_hdr, close)
        return "" if m is None else m.group(1).decode("utf-8", "surrogateescape")
    try:
        return parse_name_addr(to_hdr).tag or ""
    except SipError:
        return ""


#: the fields of a snapshot record, in order (``snapshot``/``restore`` and the "c" delta);
#: a fire this close to the deadline counts (another process's monotonic reading, and
#: uvloop's loop time is cached per iteration)
FIRE_TOLERANCE_S = 0.05
#: ``deadline`` travels as wall time, since monotonic clocks differ between hosts
RECORD = (
    "call_id", "from_tag", "to_tag", "state", "flags", "from_hdr", "to_hdr",
    "caller_target", "callee_target", "caller_route", "callee_route",
    "invite_cseq", "caller_cseq", "callee_cseq", "caller", "callee",
    "source", "destination", "start", "answer", "deadline", "lifetime", "route", "members",
)  # fmt: skip


def on_address(side: Any, address: str) -> bool:
    """Whether a dialog side, as the proxy keeps it (``(ingress, out meta)``), was reached on
    our local ``address``."""
    try:
        return bool(side[1][OUT_LOCAL_IP] == address)
    except (TypeError, IndexError):
        return False


@dataclass(frozen=True, slots=True)
class Bye:
    """A BYE to send for an expired dialog: to ``side``, at ``dest`` (what the proxy handed
    in), with the branch of its Via (the caller of ``expire`` chose it)."""

    side: str
    dest: Any
    data: bytes
    branch: str


@dataclass(frozen=True, slots=True)
class Expired:
    """A dialog that reached its deadline; ``byes`` is empty if it was never answered."""

    call_id: str
    from_tag: str
    byes: tuple[Bye, ...]


#: ``via_for(dest) -> (Via value up to the branch, e.g. b"SIP/2.0/UDP 192.0.2.1:5060", branch)``
ViaFor = Callable[[Any], tuple[bytes, str]]


def _never(uri: Uri) -> bool:
    return False


class DialogTable:
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
        d = settings.dialogs
        self.external_timers = external_timers
        #: ("arm", key, deadline) / ("cancel", key), in order; ``key`` is the dialog's own
        #: string (rule 8), so a timer client keyed by it holds no copy
        self.timer_ops: list[tuple[Any, ...]] = []
        self.default_lifetime_s = d.default_lifetime_s
        self.early_lifetime_s = d.early_lifetime_s
        self.max_dialogs = d.max_dialogs
        self.node = settings.node.name
        self._route_lifetime = {r.name: r.dialog_lifetime_s for r in settings.route
                                if r.dialog_lifetime_s}  # fmt: skip
        self._is_us = is_us
        self.profiles = Profiles(settings.dialog_profile)
        self._table: dict[str, Dialog] = {}
        self._heap: list[tuple[float, str]] = []
        self._intern: dict[Any, Any] = {}
        self._pending = 0  # dialogs in UNCONFIRMED or EARLY
        self.emit_deltas = emit_deltas
        self.cdrs: list[dict[str, Any]] = []
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
        dlg.parties = _join_parties(req.from_.raw, req.to.raw)
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
            self._push(["c", *self._record(dlg, now, wall)])
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
        elif req.to.tag is None:
            pass
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
        status, responder = resp.status, _OTHER[side]
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
        by = "proxy" if local else _OTHER[side]
        if req.to.tag is None:
            if req.method == "INVITE" and side == CALLER and req.cseq == dlg.invite_cseq:
                self._step(dlg, I.FAILURE, now, wall, None, side, by=by, status=status)
        elif status == 408 or status == 481:
            self._step(dlg, I.TIMEOUT, now, wall, None, side, by=by)
        return dlg

    # -- timers ------------------------------------------------------------------------------

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
                         "state": d.state.name.lower(), "start": d.start, "answer": d.answer,
                         "source": d.source, "destination": d.destination, "route": d.route,
                         "profiles": ["/".join(m) if m[1] else m[0] for m in d.members]})  # fmt: skip
        return rows

    def profile_sizes(self) -> dict[str, int | dict[str, int]]:
        """Every profile's size (``sipline ctl``): a count, or ``{value: count}``."""
        return self.profiles.view()

    # -- replication -------------------------------------------------------------------------

    def snapshot(self, now: float, wall: float) -> list[list[Any]]:
        """Every live dialog as a record (``RECORD`` order), msgpack-ready."""
        return [self._record(d, now, wall) for d in self._table.values()]

    def keys(self) -> list[str]:
        """The keys of every live dialog now (a snapshot's point-in-time list)."""
        return list(self._table)

    def keys_on(self, address: str) -> list[str]:
        """The keys of the live dialogs whose caller reached us on our local ``address``."""
        return [k for k, d in self._table.items() if on_address(d.caller, address)]

    def record(self, key: str, now: float, wall: float) -> list[Any] | None:
        """The record (``RECORD`` order) of the dialog ``key`` if it is still live."""
        dlg = self._table.get(key)
        return None if dlg is None else self._record(dlg, now, wall)

    def restore(self, records: Iterable[list[Any]], now: float, wall: float) -> None:
        """Replace the whole table with ``records`` (from ``snapshot`` or "c" deltas)."""
        self._table.clear()
        self._heap.clear()
        self._pending = 0
        self.profiles.clear()
        for rec in records:
            self._load(rec, now, wall)

    def adopt(self, records: Iterable[list[Any]], now: float, wall: float,
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
        from the state plane's mirror, ``workers/handover.py``): out of the table with their
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
        its CDR is written (``workers/cdr.py`` rule 8). Only a "t" delta, so the state plane
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

    # -- records and deltas ------------------------------------------------------------------

    def _delta(self, op: str, dlg: Dialog, *args: Any) -> None:
        if self.emit_deltas:
            self._push([op, dlg.call_id, dlg.from_tag, *args])

    def _push(self, delta: list[Any]) -> None:
        if len(self.deltas) >= MAX_PENDING_DELTAS:
            self.counters["deltas_dropped"] += 1
            return
        self.deltas.append(delta)

    def _record(self, d: Dialog, now: float, wall: float) -> list[Any]:
        # each of key and parties split once (their properties would split them twice): a
        # snapshot builds a million of these
        cid, _, ftag = d.key.partition("\0")
        from_hdr, _, to_hdr = d.parties.partition(b"\n")
        return [cid, ftag, to_tag_of(to_hdr), int(d.state), d.flags, from_hdr, to_hdr,
                d.caller_target, d.callee_target, d.caller_route, d.callee_route,
                d.invite_cseq, d.caller_cseq, d.callee_cseq, d.caller, d.callee,
                d.source, d.destination, d.start, d.answer, wall + d.deadline - now,
                d.lifetime, d.route, [list(m) for m in d.members]]  # fmt: skip

    def _load(self, rec: list[Any], now: float, wall: float) -> None:
        dlg = Dialog()
        (cid, ftag, _, state, dlg.flags, from_hdr, to_hdr,
         caller_target, callee_target, caller_route, callee_route,
         dlg.invite_cseq, dlg.caller_cseq, dlg.callee_cseq, caller, callee,
         source, destination, dlg.start, dlg.answer, deadline_wall,
         dlg.lifetime, dlg.route, members) = rec  # fmt: skip
        dlg.parties = _join_parties(from_hdr, to_hdr)
        share = self._shared
        dlg.caller_target, dlg.callee_target = share(caller_target), share(callee_target)
        dlg.caller_route, dlg.callee_route = share(caller_route), share(callee_route)
        key = cid + "\0" + ftag
        # what a broken record breaks is found before the table changes (rule 10)
        if type(state) is not int or not 0 <= state < len(_STATES):
            raise ValueError(f"state {state!r}")
        named = tuple([(str(n), str(v)) for n, v in members]) if members else ()
        due = now + deadline_wall - wall
        if due - due != 0.0:  # inf or nan would never fire, and nan breaks the heap's order
            raise ValueError(f"deadline {deadline_wall!r}")
        old = self._table.get(key)
        if old is not None:
            self._remove(old)
        dlg.key, dlg.state, dlg.deadline = key, _STATES[state], 0.0
        dlg.caller, dlg.callee = self._frozen(caller), self._frozen(callee)
        dlg.source, dlg.destination = self._shared(source), self._shared(destination)
        dlg.members = self.profiles.intern(named) if named else ()
        self.profiles.add(dlg.members)
        self._table[key] = dlg
        if dlg.state < C:
            self._pending += 1
        self._arm(dlg, due)

    def _frozen(self, value: Any) -> Any:
        """``_shared(_freeze(value))``; a tuple (a record built in this process, or a second
        dialog of a destination already held) is looked up first, without copying it."""
        if type(value) is tuple:
            held = self._intern.get(value)
            if held is not None:
                return held
        return self._shared(_freeze(value))

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


def _freeze(value: Any) -> Any:
    """msgpack gives arrays back as lists: make them tuples again, so they can be shared.

    A list comprehension that recurses only into lists and tuples: a generator per level
    and a call per scalar were 40 % of loading a snapshot record (bench/snapshot_sync.py)."""
    if type(value) is list or type(value) is tuple:
        return tuple([_freeze(v) if type(v) is list or type(v) is tuple else v for v in value])
    return value
