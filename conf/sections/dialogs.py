"""``[dialogs]`` and ``[[dialog_profile]]``: dialog tracking, lifetimes, CDRs, profiles and
call limits. Checked beyond their types in ``conf/checks/dialogs.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range

#: OpenSIPS and Kamailio both default a dialog's lifetime to 12 hours (``default_timeout``)
DEFAULT_DIALOG_LIFETIME_S = 43_200.0
#: longer than Timer C (180 s) plus a cancelled branch's 64*T1, so the proxy's own 408 or 487
#: always ends an unanswered call first and this is only a safety net
DEFAULT_EARLY_LIFETIME_S = 300.0
#: a written CDR waits this long for its fsync at most (workers/dialogs/cdr.py): one fsync per 20 ms
#: whatever the call rate, and a host crash loses at most 20 ms of CDRs
DEFAULT_CDR_FSYNC_MS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialogs:
    """``[dialogs]``: dialog tracking (RFC 3261 §12) of calls forwarded statefully: lifetimes,
    CDRs, the bound on live dialogs (``docs/dialogs.md``)."""

    enabled: bool = False
    """Track a dialog for every initial INVITE a stateful route forwards: early and confirmed
    states, in-dialog matching, lifetime expiry with BYE both ways, one CDR per call, profiles
    and call limits. Needs ``[proxy] record_route`` so in-dialog requests come back."""
    default_lifetime_s: float = field(
        default=DEFAULT_DIALOG_LIFETIME_S, metadata=_range(1, 604_800)
    )
    """How long a confirmed dialog lives without a Session-Expires refresh (RFC 4028) before
    the proxy sends BYE to both sides; a route's ``dialog_lifetime_s`` overrides it."""
    early_lifetime_s: float = field(
        default=DEFAULT_EARLY_LIFETIME_S, metadata=_range(1, 86_400)
    )
    """A dialog still unanswered this long is dropped (no BYE: there is no confirmed dialog to
    end) with cause ``expired``. More than ``[transactions] timer_c_s``."""
    cdr_file: str = ""
    """File CDRs are appended to, one JSON object per line; empty writes them to the log only
    (``cdr`` events; ``cdr_log`` says which go to the log as well). Each worker writes the CDRs of a loop
    iteration at its end, reopens the file when it is renamed or deleted (logrotate) or on
    SIGHUP, and creates it ``0640`` (``cdr_group``), ``0600`` without a group."""
    cdr_log: Literal["unwritten", "all"] = "unwritten"
    """Which CDRs are logged as ``cdr`` events on stdout too: ``unwritten``, those not in the
    CDR file (every one without ``cdr_file``; with one, a CDR its buffer refused or could not
    encode, and the CDRs of a loop iteration whose write failed, which wait in memory only);
    ``all``, every one (the behaviour before this key: one more JSON line per call through
    the log relay, ~80-100 µs of CPU per call, ``docs/benchmarks.md``). To follow calls,
    ``tail -F`` the CDR file: the same JSON objects, one per line."""
    cdr_fsync_ms: int = field(default=DEFAULT_CDR_FSYNC_MS, metadata=_range(0, 10_000))
    """A CDR line is durable (fsync'd) at most this long after it was written; 0: each
    batch is fsync'd as it is written. A host crash loses at most this window of CDRs; a
    crashed process loses none (``docs/dialogs.md`` "CDRs")."""
    cdr_group: str = ""
    """The group (name or number) that may read the CDR file (it is created ``0640``, that
    group's); empty: ``[node] run_group`` if set, else the owner only (``0600``)."""
    cdr_peer_files: list[str] = field(default_factory=list)
    """CDR files of the ``[stateplane] peers`` nodes that this node can read (the same host,
    or a shared mount), absolute paths: before a dialog taken over from a dead peer is made
    ours, the end of these files is read, and a dialog whose CDR the peer wrote just before
    dying is dropped instead of getting a second one. Our own ``cdr_file`` may be listed (it
    is read anyway), so both nodes of a pair can carry the same list. Empty: only our own
    file is read."""
    max_dialogs: int = field(default=1_000_000, metadata=_range(1, 100_000_000))
    """Live dialogs one worker holds at most; past it a new call gets 503 before forwarding."""
    profiles_cluster: bool = False
    """Profile limits count the live dialogs of the ``[stateplane] peers`` nodes too (their
    workers and ours exchange counts; with a ``tcp://`` peer through the state planes' relay,
    over CURVE), so a trunk limit holds across the cluster. Off, a limit holds for this node
    (its workers always share counts)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogProfile:
    """``[[dialog_profile]]``: a named group of live dialogs, counted as a whole or per value
    (OpenSIPS ``create_dialog_profiles``), with an optional call limit. Needs ``[dialogs]
    enabled``."""

    name: str
    """Name shown in statistics and ``sipline ctl``; unique. Required."""
    with_value: bool = False
    """Count dialogs per value (for example per caller) instead of as one group."""
    value_from: Literal["", "ruri_user", "from_user", "to_user", "source_ip", "route"] = ""
    """What gives a dialog its value, from the initial INVITE: the user part of the
    Request-URI, of the From or of the To URI, the source address, or the name of the route
    that forwarded it. Required with ``with_value``, empty without. A dialog whose value
    would be empty (no user part) is not counted in the profile."""
    limit: int = field(default=0, metadata=_range(0, 100_000_000))
    """Dialogs the profile (or each value of it) may hold; a new call that would go over is
    answered ``over_limit_status`` before it is forwarded. 0: no limit."""
    over_limit_status: int = field(default=486, metadata=_range(486, 503))
    """Status of a call refused by ``limit``: 486 (Busy Here) or 503 (Service Unavailable)."""
    routes: list[str] = field(default_factory=list)
    """Names of the ``[[route]]`` tables whose calls join the profile; empty: every route."""
