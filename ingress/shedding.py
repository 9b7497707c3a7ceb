"""Overload shedding: what an ingress stops handing to a worker whose queue fills, and in
which order (docs/design.md §3 "Protection"). Sans-IO: the fill level is an argument.

Rules:
1. The fill level is the backlog an ingress holds for one worker (messages ZeroMQ refused,
   waiting for the worker to read) over ``[bus] max_pending``. Below ``shed_start_fill`` of it
   nothing is shed.
2. From ``shed_start_fill`` on, requests that cost the most per call placed and are retried
   by their senders anyway go first: OPTIONS, REGISTER, SUBSCRIBE, PUBLISH, MESSAGE (dropped,
   counted: a 503 would cost as much as the work it saves).
3. From ``shed_invite_fill`` on, new calls (INVITEs) get 503 with Retry-After.
4. Never shed: ACK, CANCEL, BYE and responses. They end or complete calls already admitted,
   so shedding them makes overload worse (retransmissions, stuck dialogs). They may use a
   reserve above ``max_pending`` (``reserve_fill``, plus one batch: the backlog grows a
   whole batch at a time, up to ``max_batch`` messages past the limit that admitted it);
   only past that does anything drop.
5. Everything else (in-dialog requests, INFO, UPDATE, PRACK, NOTIFY, REFER ...) goes on
   until the queue is full.
"""

from __future__ import annotations

from conf.settings import Bus

ADMIT = 0
SHED = 1  # drop and count
REFUSE = 2  # a new INVITE: answer 503 with Retry-After

#: rule 2: what goes first
FIRST = frozenset({b"OPTIONS", b"REGISTER", b"SUBSCRIBE", b"PUBLISH", b"MESSAGE"})
#: rule 4: what is never shed (None stands for a response)
NEVER = frozenset({b"ACK", b"CANCEL", b"BYE", None})


class Shedder:
    __slots__ = ("invite_fill", "reserve", "start_fill")

    def __init__(self, cfg: Bus) -> None:
        self.start_fill = cfg.shed_start_fill
        self.invite_fill = cfg.shed_invite_fill
        #: how many messages over ``max_pending`` the never-shed kinds may queue (rule 4)
        self.reserve = max(1, int(cfg.max_pending * (cfg.reserve_fill - 1.0))) + cfg.max_batch

    def verdict(self, method: bytes | None, fill: float) -> int:
        """``ADMIT``, ``SHED`` or ``REFUSE`` for a message at this fill level (rules 1-5);
        an INVITE's verdict is for a new call (the caller checks for a To-tag)."""
        if fill < self.start_fill or method in NEVER:
            return ADMIT
        if method in FIRST:
            return SHED
        if method == b"INVITE" and fill >= self.invite_fill:
            return REFUSE
        return ADMIT

    def limit(self, method: bytes | None, max_pending: int) -> int:
        """The backlog a message may join: the never-shed kinds have a reserve (rule 4)."""
        return max_pending + self.reserve if method in NEVER else max_pending
