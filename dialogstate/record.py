"""A dialog and its record, shared by the workers that run dialogs and the state plane that
mirrors, snapshots and persists them (``dialogstate/table.py`` holds the rules).

- ``State``, ``Input`` and ``TRANSITIONS``: the machine (``docs/dialogs.md`` shows the same table).
- ``Dialog``: one dialog's compact state (table rule 8).
- ``RECORD``: the fields of a record, in order, as a snapshot, a "c" delta, an ``ADOPT``
  envelope, the state plane's journal and its ``ctl`` answers carry it; ``encode`` builds one.
  Loading one (``DialogTable`` rule 10) checks it before the table changes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from conf.envelope import OUT_LOCAL_IP
from dialogstate.profiles import Members
from ingress.sip.errors import SipError
from ingress.sip.grammar import parse_name_addr


class State(enum.IntEnum):
    """A dialog's state. Compare with ``==``/``<``, never ``is``: compiled (mypyc), a
    ``Dialog.state`` read gives the plain ``int`` equal to the member, not the member, and
    ``State(n).name`` names either."""

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
STATES = tuple(State)
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
OTHER_SIDE = {CALLER: CALLEE, CALLEE: CALLER}


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
        self.parties = join_parties(self.parties.partition(b"\n")[0], value)

    @property
    def to_tag(self) -> str:
        """The callee's tag: the last 1xx's, then the answer's; "" before either."""
        return to_tag_of(self.to_hdr)

    def __repr__(self) -> str:
        return f"Dialog({self.key!r}, {State(self.state).name}, to_tag={self.to_tag!r})"


def join_parties(from_hdr: bytes, to_hdr: bytes) -> bytes:
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


def encode(d: Dialog, now: float, wall: float) -> list[Any]:
    """The record (``RECORD`` order) of ``d``, msgpack-ready, its deadline as wall time."""
    # each of key and parties split once (their properties would split them twice): a
    # snapshot builds a million of these
    cid, _, ftag = d.key.partition("\0")
    from_hdr, _, to_hdr = d.parties.partition(b"\n")
    return [cid, ftag, to_tag_of(to_hdr), int(d.state), d.flags, from_hdr, to_hdr,
            d.caller_target, d.callee_target, d.caller_route, d.callee_route,
            d.invite_cseq, d.caller_cseq, d.callee_cseq, d.caller, d.callee,
            d.source, d.destination, d.start, d.answer, wall + d.deadline - now,
            d.lifetime, d.route, [list(m) for m in d.members]]  # fmt: skip


def freeze(value: Any) -> Any:
    """msgpack gives arrays back as lists: make them tuples again, so they can be shared.

    A list comprehension that recurses only into lists and tuples: a generator per level
    and a call per scalar were 40 % of loading a snapshot record (bench/snapshot_sync.py)."""
    if type(value) is list or type(value) is tuple:
        return tuple([freeze(v) if type(v) is list or type(v) is tuple else v for v in value])
    return value
