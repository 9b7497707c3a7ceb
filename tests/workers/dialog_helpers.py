"""Builders for the dialog tests: a call's real SIP bytes, as the proxy in the middle sees them.

Alice (the caller, 10.0.0.1:5070) calls Bob (the callee, 127.0.0.1:7000) through us
(127.0.0.1:5999). ``up`` Record-Route entries stand for proxies between Alice and us,
``down`` for proxies between us and Bob.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from conf.settings import DialogProfile, Dialogs, Route, Settings
from dialogstate.table import DialogTable
from ingress.sip.message import Request, Response, Uri

from .helpers import PORT, US, parsed_req, parsed_resp, settings

OUR_RR = f"<sip:{US}:{PORT};lr>"
CALLER = ("ing-1", ("udp", "10.0.0.1", 5070, 0, US, PORT))
CALLEE = ("ing-1", ("udp", "127.0.0.1", 7000, 0, US, PORT))
T0, W0 = 1000.0, 1_700_000_000.0  # monotonic and wall clocks at the INVITE


def dialog_settings(*, profiles: list[DialogProfile] | None = None, lifetime_s: float = 3600,
                    route_lifetime_s: float = 0, max_dialogs: int = 1000) -> Settings:  # fmt: skip
    s = settings(routes=[Route(name="default", to="uas", mode="stateful",
                               dialog_lifetime_s=route_lifetime_s)])  # fmt: skip
    return replace(s, dialogs=Dialogs(enabled=True, default_lifetime_s=lifetime_s,
                                      max_dialogs=max_dialogs),
                   dialog_profile=profiles or [])  # fmt: skip


def is_us(uri: Uri) -> bool:
    return uri.host_plain == US and (uri.port or 5060) == PORT


def table(**kw: Any) -> DialogTable:
    return DialogTable(dialog_settings(**kw), is_us=is_us)


def via_for(dest: Any) -> tuple[bytes, str]:
    """The Via the proxy puts on a BYE it sends: one branch per destination."""
    return f"SIP/2.0/UDP {US}:{PORT}".encode(), f"z9hG4bK-bye-{dest[1][2]}"


@dataclass
class Call:
    n: int = 1
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    user: str = "bob"
    from_user: str = "alice"
    src: str = "10.0.0.1"

    @property
    def call_id(self) -> str:
        return f"call-{self.n}@10.0.0.1"

    @property
    def ftag(self) -> str:
        return f"a{self.n}"

    def ttag(self, fork: int = 0) -> str:
        return f"b{self.n}" + (f"f{fork}" if fork else "")

    def _alice(self, tag: bool = True) -> str:
        return f"<sip:{self.from_user}@example.com>" + (f";tag={self.ftag}" if tag else "")

    def _bob(self, tag: str | None) -> str:
        return f"<sip:{self.user}@example.com>" + (f";tag={tag}" if tag else "")

    def invite(self, *, extra: tuple[str, ...] = ()) -> Request:
        rr = [f"Record-Route: {r}" for r in self.up]
        return self._request("INVITE", f"sip:{self.user}@example.com", 1, None, True,
                             (f"Contact: <sip:{self.from_user}@{self.src}:5070>", *rr, *extra))

    def cancel(self) -> Request:
        return self._request("CANCEL", f"sip:{self.user}@example.com", 1, None, True, ())

    def _request(self, method: str, uri: str, cseq: int, to_tag: str | None, from_caller: bool,
                 extra: tuple[str, ...]) -> Request:  # fmt: skip
        if from_caller:
            via = f"SIP/2.0/UDP {self.src}:5070;branch=z9hG4bK-{method}-{cseq}"
            frm, to = self._alice(), self._bob(to_tag)
        else:
            via = f"SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-b-{method}-{cseq}"
            frm, to = self._bob(to_tag), self._alice()
        lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", f"From: {frm}",
                 f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", *extra,
                 "Content-Length: 0"]  # fmt: skip
        return parsed_req(("\r\n".join(lines) + "\r\n\r\n").encode())

    def in_dialog(self, method: str, cseq: int, *, from_caller: bool = True, fork: int = 0,
                  extra: tuple[str, ...] = ()) -> Request:  # fmt: skip
        """A request inside the dialog, from Alice (to Bob's Contact) or from Bob."""
        uri = f"sip:{self.user}@127.0.0.1:7000" if from_caller else f"sip:alice@{self.src}:5070"
        # what reaches us of each side's route set (§12.1): the entries from ours on
        rest = self.down[::-1] if from_caller else self.up
        routes = (f"Route: {', '.join([OUR_RR, *rest])}",)
        return self._request(method, uri, cseq, self.ttag(fork), from_caller, (*routes, *extra))

    def response(self, status: int, *, fork: int = 0, cseq: int = 1, method: str = "INVITE",
                 to_caller: bool = True, tag: bool = True, extra: tuple[str, ...] = (),
                 ) -> Response:  # fmt: skip
        """A response from Bob to Alice's request (``to_caller``) or from Alice to Bob's."""
        rr = [f"Record-Route: {r}" for r in [*self.down, OUR_RR, *self.up]]
        if to_caller:
            vias = [f"SIP/2.0/UDP {US}:{PORT};branch=z9hG4bK-sl{self.n}",
                    f"SIP/2.0/UDP {self.src}:5070;branch=z9hG4bK-{method}-{cseq}"]
            frm, to = self._alice(), self._bob(self.ttag(fork) if tag else None)
            contact = f"<sip:{self.user}@127.0.0.1:7000>"
        else:
            vias = [f"SIP/2.0/UDP {US}:{PORT};branch=z9hG4bK-slb{self.n}",
                    f"SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-b-{method}-{cseq}"]
            frm, to = self._bob(self.ttag(fork)), self._alice()
            contact = f"<sip:alice@{self.src}:5070>"
        lines = [f"SIP/2.0 {status} Whatever", *(f"Via: {v}" for v in vias), f"From: {frm}",
                 f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}"]  # fmt: skip
        if status > 100 and status < 300 and method in ("INVITE", "UPDATE"):
            lines += [f"Contact: {contact}", *(rr if cseq == 1 or not to_caller else [])]
        lines += [*extra, "Content-Length: 0"]
        return parsed_resp(("\r\n".join(lines) + "\r\n\r\n").encode())

    def start(self, t: DialogTable, now: float = T0, wall: float = W0, **kw: Any) -> None:
        """The INVITE forwarded to Bob."""
        dlg = t.invite_forwarded(self.invite(), caller=CALLER, callee=CALLEE,
                                 source_ip=self.src, source_port=5070,
                                 destination="127.0.0.1:7000", now=now, wall=wall, **kw)  # fmt: skip
        assert dlg is not None

    def confirmed(self, t: DialogTable, now: float = T0, wall: float = W0) -> None:
        """INVITE, 180, 200 (1 s later)."""
        self.start(t, now, wall)
        t.receive_response(self.response(180), now + 0.5, wall + 0.5)
        t.receive_response(self.response(200), now + 1, wall + 1)
