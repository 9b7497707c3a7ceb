"""What becomes of a new request the stateful core sees (``workers/stateful.py`` rule 1),
sans-IO: answered here, forwarded statelessly, refused by a call limit, or taken on as a
proxied request (``workers/proxied.py``) with the targets it tries first.

Rules:
1. The plan first (``StatelessProxy.plan``: the §16.3 checks, the route, digest auth, the
   relay rule): what it refuses is answered statelessly, as is OPTIONS for the proxy itself
   (the plan's ``local``); the answer is the same for every retransmission.
2. The dialog table sees the request once the plan has not refused it, so a refused BYE
   ends no call; whether the request belongs to a dialog held here (``known``, for the relay
   rule) is asked before, as a BYE ends its dialog there.
3. A request for an AOR of the registrar is always taken on: its targets come from a
   lookup (``workers/jobanswers.py`` ``located``). Otherwise the route's mode decides, the
   proxy's when the route has none, and a stateless route's request is forwarded at once
   with the plan already made (a plan spends rate-limit tokens and nonce-counts).
4. Call limits (dialog profiles, docs/dialogs.md) come before any target: a call over one
   is answered with the profile's status, counted (``over_limit``) and queued in
   ``refused`` for the worker to log once.
5. A request whose destination set has every destination down gets 503.
"""

from __future__ import annotations

from typing import Any

from conf.settings import Mode, Settings
from dialogstate.table import DialogTable
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from workers.proxied import UNAVAILABLE, Proxied, held
from workers.proxy import Inbound, Out, Plan, StatelessProxy
from workers.registrar.register import Registrar
from workers.targets import first_targets


class Admission:
    __slots__ = ("counters", "dialogs", "mode", "refused", "registrar", "route_mode", "sl")

    def __init__(self, settings: Settings, stateless: StatelessProxy,
                 registrar: Registrar | None, dialogs: DialogTable | None,
                 counters: dict[str, int]) -> None:  # fmt: skip
        self.sl = stateless
        self.registrar = registrar
        self.dialogs = dialogs
        self.counters = counters
        self.mode = settings.proxy.mode
        #: each route's mode, the proxy's when it has none; a reload swaps it (rule 3)
        self.route_mode: dict[str, Mode] = {r.name: r.mode or settings.proxy.mode
                                            for r in settings.route}  # fmt: skip
        #: calls refused by a call limit, for the worker to log (one event each; rule 4)
        self.refused: list[dict[str, Any]] = []

    @property
    def any_stateful(self) -> bool:
        """Whether the proxy, or some route, is stateful."""
        return self.mode == "stateful" or "stateful" in self.route_mode.values()

    def admit(self, req: Request, inb: Inbound, now: float, wall: float,
              outs: list[Out]) -> Proxied | None:  # fmt: skip
        """The context for a new request the core takes on, or None when it was answered
        or forwarded statelessly here (into ``outs``). ``wall`` is epoch seconds, for CDRs."""
        dialogs = self.dialogs
        # asked before the table sees the request, as a BYE ends its dialog there (rule 2)
        known = dialogs is not None and req.to.tag is not None and (
            not req.has_header("route")) and dialogs.knows(req)  # fmt: skip
        try:
            plan = self.sl.plan(req, inb, known)
        except SipError as exc:
            outs.append(self.sl._reply(req, inb, exc.status, exc.reason, exc.extra_headers))
            return None
        if dialogs is not None:
            dialogs.receive_request(req, now, wall)
        if plan.local is not None:
            outs.append(self.sl._reply(req, inb, 200, "OK", plan.local))
            return None
        ctx = Proxied(held(inb), req, plan)
        if self.registrar is not None and req.to.tag is None and plan.hop is None:
            ctx.aor = self.registrar.aor_of(plan.uri)
            if ctx.aor is not None:  # always stateful: targets come from a lookup (rule 3)
                return ctx if self._within_limits(req, inb, plan, outs) else None
        mode = self.route_mode.get(plan.route.name, self.mode) if plan.route else self.mode
        if mode != "stateful":
            outs.append(self.sl.request_out(req, inb, known, plan))
            return None
        if not self._within_limits(req, inb, plan, outs):
            return None
        if not first_targets(ctx, plan, req.call_id):  # every destination is down
            outs.append(self.sl._reply(req, inb, *UNAVAILABLE))
            return None
        return ctx

    def _within_limits(self, req: Request, inb: Inbound, plan: Plan, outs: list[Out]) -> bool:
        """Call limits (rule 4): False when the call was refused here."""
        if self.dialogs is None:
            return True
        route = plan.route.name if plan.route else ""
        refusal = self.dialogs.admit(req, source_ip=inb.src_ip, route=route)
        if refusal is None:
            return True
        self.counters["over_limit"] = self.counters.get("over_limit", 0) + 1
        self.refused.append({"call_id": req.call_id, "status": refusal[0], "reason": refusal[1],
                             "src": f"{inb.src_ip}:{inb.src_port}", "route": route})  # fmt: skip
        outs.append(self.sl._reply(req, inb, *refusal))
        return False
