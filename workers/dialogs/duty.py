"""The stateful core's dialog work (RFC 3261 §12; the table itself is
``dialogstate/table.py``): which messages need a dialog held here (``workers/stateful.py``
rule 10) or would start one, what the table learns of a forwarded INVITE, and the BYEs of dialogs past their
lifetime, each sent in a client transaction of its own (its answer stops here).
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from dialogstate.table import DialogTable
from ingress.sip.message import Request, Response
from workers.listeners import Listeners
from workers.proxied import Dests, Proxied
from workers.proxy import BRANCH_PREFIX
from workers.transactions import TableFull, TransactionTable


class DialogDuty:
    def __init__(self, dialogs: DialogTable, table: TransactionTable, dests: Dests,
                 listeners: Listeners, counters: dict[str, int]) -> None:  # fmt: skip
        self.dialogs = dialogs
        self.table = table
        self.dests = dests
        self.listeners = listeners
        self.counters = counters
        self._bye_seq = itertools.count()
        #: makes our BYE branches unique across worker restarts
        self.instance = secrets.token_hex(3)

    def absent(self, msg: Request | Response) -> bool:
        """``msg`` would need a dialog, and none is held here (rule 10)."""
        if isinstance(msg, Response):
            if msg.cseq_method != "INVITE":
                return False
        elif msg.method == "CANCEL":
            if self.table.invite_for(msg) is not None:
                return False
        elif msg.to.tag is None:
            return False
        return self.dialogs.match(msg) is None

    @staticmethod
    def starts(msg: Request | Response) -> bool:
        """``msg`` would start a dialog here: an INVITE outside one (rule 10's claim)."""
        return isinstance(msg, Request) and msg.method == "INVITE" and msg.to.tag is None

    def forwarded(self, ctx: Proxied, req: Request, ingress: str, meta: list[Any],
                  now: float, wall: float) -> None:  # fmt: skip
        """An initial INVITE went to ``(ingress, meta)``: the table starts its dialog."""
        inb = ctx.inb
        assert inb is not None
        caller = (inb.ingress, (inb.transport, inb.src_ip, inb.src_port, inb.conn,
                                inb.local_ip, inb.local_port))  # fmt: skip
        plan = ctx.plan
        route = plan.route.name if plan is not None and plan.route is not None else ""
        # tuples, not lists: equal destinations are shared between dialogs (memory)
        self.dialogs.invite_forwarded(req, caller=caller, callee=(ingress, tuple(meta)),
                                      source_ip=inb.src_ip, source_port=inb.src_port,
                                      destination=f"{meta[1]}:{meta[2]}", now=now,
                                      wall=wall, route=route)  # fmt: skip

    def expire_key(self, call_id: str, from_tag: str, now: float, wall: float) -> None:
        """The timer service fired a dialog's lifetime: its BYEs, if it is still due."""
        expired = self.dialogs.expire_key(call_id, from_tag, now, wall, self._via_for)
        if expired is not None:
            self._send_byes(expired.byes, now)

    def expire(self, now: float, wall: float) -> None:
        """Dialogs past their lifetime (held here, no timer service) end with a BYE each way."""
        for expired in self.dialogs.expire(now, wall, self._via_for):
            self._send_byes(expired.byes, now)

    def _send_byes(self, byes: tuple[Any, ...], now: float) -> None:
        for bye in byes:
            ingress, meta = bye.dest
            try:
                self.table.send_request(bye.data, branch=bye.branch, method="BYE",
                                        reliable=meta[0] != "udp", now=now,
                                        dest=self.dests.share(ingress, meta))  # fmt: skip
            except (TableFull, ValueError):
                self.counters["table_full"] += 1

    def _via_for(self, dest: Any) -> tuple[bytes, str]:
        """Our Via (up to the branch) toward ``dest``, and a fresh branch of ours."""
        _, meta = dest
        lst = self.listeners.pick(meta[0], meta[1])
        host = f"[{meta[4]}]" if ":" in meta[4] else meta[4]
        if lst is not None:
            host = f"[{lst.address}]:{lst.port}" if ":" in lst.address else f"{lst.address}:{lst.port}"
        else:
            host = f"{host}:{meta[5]}"
        branch = f"{BRANCH_PREFIX}bye{self.instance}.{next(self._bye_seq):x}"
        return f"SIP/2.0/{meta[0].upper()} {host}".encode(), branch
