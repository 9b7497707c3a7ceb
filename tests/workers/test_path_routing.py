"""Requests to a contact registered through an edge proxy (RFC 3327 Path): the stateful core
routes them loosely through the Path (workers/jobanswers.py ``located``), as Kamailio's
``lookup()`` does. The core in memory, its lookup job answered by hand; the location store
and the wire are in tests/workers/test_location.py and tests/e2e/test_path.py."""

from __future__ import annotations

from dataclasses import replace

from conf.settings import Registrar
from ingress.sip.serialize import build_response
from workers.jobanswers import located, resolved
from workers.proxy import Out, StatelessProxy
from workers.registrar.register import Source
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import inbound, parsed_req, parsed_resp, request, settings

CONTACT = "sip:bob@192.168.1.20:5062;transport=udp"
SOURCE = Source("udp", "127.0.0.50", 5080)  # where the REGISTER came from: the edge proxy


def core() -> StatefulProxy:
    s = replace(settings(), registrar=Registrar(enabled=True, domains=["example.com"]))
    return StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))


def call(path: tuple[str, ...], contacts: int = 1) -> tuple[StatefulProxy, list[Out]]:
    """An INVITE to bob@example.com, its lookup answered with ``contacts`` bindings of
    ``path``: what the core sends."""
    p = core()
    p.handle(request("INVITE", "sip:bob@example.com"), inbound(), 0.0)
    (job,) = [j for j in p.jobs if j.kind == "lookup"]
    p.jobs.clear()
    found = [(CONTACT.replace("bob@", f"bob{i}@"), SOURCE, path) for i in range(contacts)]
    return p, located(p, job, found, (480, "Temporarily Unavailable"), 0.0)


def downstream(outs: list[Out]) -> list[tuple[str, int, bytes]]:
    return [(meta[1], meta[2], data) for _, meta, data in outs if data.startswith(b"INVITE")]


def test_path_becomes_routes_and_the_first_hop() -> None:
    """Two Path URIs: both become the top Routes, in order, and the INVITE goes to the
    first (not to the REGISTER's source, not to the contact); the Request-URI is the
    contact."""
    _, outs = call(("<sip:127.0.0.61:5091;lr>", "<sip:127.0.0.62:5092;lr;transport=udp>"))
    ((ip, port, data),) = downstream(outs)
    assert (ip, port) == ("127.0.0.61", 5091)
    fwd = parsed_req(data)
    assert fwd.uri.raw == "sip:bob0@192.168.1.20:5062;transport=udp"
    assert fwd.header_values("route") == [b"<sip:127.0.0.61:5091;lr>",
                                          b"<sip:127.0.0.62:5092;lr;transport=udp>"]  # fmt: skip


def test_without_path_the_contact_goes_to_its_source() -> None:
    """The control: no Path, the INVITE goes where the REGISTER came from, with no Route."""
    _, outs = call(())
    ((ip, port, data),) = downstream(outs)
    assert (ip, port) == ("127.0.0.50", 5080) and not parsed_req(data).header_values("route")


def test_cancel_and_ack_keep_the_path_routes() -> None:
    """The CANCEL of a branch routed through a Path carries the same Route set (§9.1), and
    so does the ACK of its non-2xx (§17.1.1.3): both reach the edge proxy."""
    p, outs = call(("<sip:127.0.0.61:5091;lr>",))
    ((_, _, data),) = downstream(outs)
    fwd = parsed_req(data)
    ringing = build_response(fwd, 180, "Ringing", to_tag="t1")
    p.handle(ringing, inbound(src="127.0.0.61", port=5091), 0.1)
    cancel = request("CANCEL", "sip:bob@example.com", cseq_method="CANCEL")
    sent = p.handle(cancel, inbound(), 0.2)
    (c,) = [(m, d) for _, m, d in sent if d.startswith(b"CANCEL")]
    assert (c[0][1], c[0][2]) == ("127.0.0.61", 5091)
    assert parsed_req(c[1]).header_values("route") == [b"<sip:127.0.0.61:5091;lr>"]
    final = build_response(fwd, 487, "Request Terminated", to_tag="t1")
    sent = p.handle(final, inbound(src="127.0.0.61", port=5091), 0.3)
    (a,) = [(m, d) for _, m, d in sent if d.startswith(b"ACK")]
    assert (a[0][1], a[0][2]) == ("127.0.0.61", 5091)
    assert parsed_req(a[1]).header_values("route") == [b"<sip:127.0.0.61:5091;lr>"]


def test_path_host_name_goes_to_the_resolver() -> None:
    """A Path hop named by a host name is resolved like any next hop (a resolve job), and
    the addresses it resolves to keep the Path's Routes."""
    p, outs = call(("<sip:edge.example.net;lr>",))
    assert downstream(outs) == []
    (job,) = [j for j in p.jobs if j.kind == "resolve"]
    assert job.target is not None and job.target[0].host == "edge.example.net"
    outs = resolved(p, job, [("udp", "127.0.0.63", 5093)], None, 0.1)
    ((ip, port, data),) = downstream(outs)
    assert (ip, port) == ("127.0.0.63", 5093)
    assert parsed_req(data).header_values("route") == [b"<sip:edge.example.net;lr>"]


def test_forged_path_in_the_record_skips_the_contact() -> None:
    """A stored Path that does not parse as SIP URIs (a forged record) is never sent: with
    no other contact the caller gets the lookup's miss, not a request with a bad Route."""
    p, outs = call(("<tel:+15551234>",))
    assert downstream(outs) == []
    (status,) = [parsed_resp(d).status for _, _, d in outs if d.startswith(b"SIP/2.0 4")]
    assert status == 480 and p.counters["bad_path"] == 1
