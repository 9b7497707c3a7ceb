"""Builders for the proxy and routing tests: settings, an inbound context, SIP requests."""

from __future__ import annotations

from conf.settings import DestinationSet, Listener, Proxy, Route, Settings, Trusted
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from workers.proxy import Inbound, Out, StatelessProxy
from workers.routing.table import RoutingTable

US = "127.0.0.1"
PORT = 5999
UAS = "127.0.0.1:7000"


def settings(
    *,
    listen: list[Listener] | None = None,
    sets: list[DestinationSet] | None = None,
    routes: list[Route] | None = None,
    proxy: Proxy | None = None,
    trusted: list[Trusted] | None = None,
) -> Settings:
    return Settings(
        listen=listen
        or [
            Listener(transport="udp", address=US, port=PORT),
            Listener(transport="tcp", address=US, port=PORT),
        ],
        destination_set=sets
        if sets is not None
        else [DestinationSet(name="uas", destinations=[f"sip:{UAS}"])],
        route=routes if routes is not None else [Route(name="default", to="uas")],
        proxy=proxy or Proxy(),
        trusted=trusted or [],
    )


def proxy(**kw: object) -> StatelessProxy:
    s = settings(**kw)  # type: ignore[arg-type]
    return StatelessProxy(s, RoutingTable(s))


def inbound(transport: str = "udp", src: str = "10.0.0.1", port: int = 5070, conn: int = 0,
            ingress: str = "ing-1") -> Inbound:  # fmt: skip
    return Inbound(ingress, transport, src, port, conn, US, PORT)


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@example.com",
    *,
    via: str = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc",
    extra: tuple[str, ...] = (),
    max_forwards: int | None = 70,
    to_tag: str | None = None,
    call_id: str = "call-1@10.0.0.1",
    cseq: int = 1,
    cseq_method: str | None = None,
    body: bytes = b"",
    content_length: bool = True,
    trailer: bytes = b"",
) -> bytes:
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [
        "From: <sip:alice@example.com>;tag=fromtag",
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *extra,
    ]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body + trailer


def response(status: int, vias: list[str], *, method: str = "INVITE", reason: str = "OK") -> bytes:
    lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {v}" for v in vias)]
    lines += [
        "From: <sip:alice@example.com>;tag=fromtag",
        "To: <sip:bob@example.com>;tag=totag",
        "Call-ID: call-1@10.0.0.1",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def one(outs: list[Out]) -> tuple[str, list[object], bytes]:
    assert len(outs) == 1
    return outs[0]


def parsed_req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def parsed_resp(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def status(data: bytes) -> int:
    return parsed_resp(data).status
