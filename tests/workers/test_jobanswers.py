"""The answers of the stateful core's jobs (workers/jobanswers.py) handed back by hand, the
way workers/jobs.py hands them back after the cacheDB or the resolver: the core in memory,
time as numbers. The jobs themselves against a real store are in tests/workers/test_location.py
and tests/workers/test_auth_proxy.py; Path and resolution in tests/workers/test_path_routing.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conf.settings import Registrar
from ingress.sip.serialize import build_response
from workers.coreevents import Job
from workers.jobanswers import auth_failed, located, registered, resolved
from workers.proxy import Out, StatelessProxy
from workers.registrar.register import Source
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import inbound, parsed_req, parsed_resp, request, settings

CONTACT = b"Contact: <sip:alice@10.0.0.1:5070>;expires=60"
MISS = (480, "Temporarily Unavailable")
#: what a lookup found, as workers/jobs.py passes it: (contact URI, its REGISTER's source, Path)
Found = list[tuple[str, Any, tuple[str, ...]]]


def core() -> StatefulProxy:
    s = replace(settings(), registrar=Registrar(enabled=True, domains=["example.com"]))
    return StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))


def take(p: StatefulProxy, kind: str) -> Job:
    (job,) = [j for j in p.jobs if j.kind == kind]
    p.jobs.clear()
    return job


def upstream(outs: list[Out]) -> list[int]:
    """The statuses sent back to the caller (10.0.0.1), 100 Trying left out."""
    return [parsed_resp(d).status for _, meta, d in outs
            if meta[1] == "10.0.0.1" and d.startswith(b"SIP/2.0 ") and d[8:11] != b"100"]  # fmt: skip


def downstream(outs: list[Out]) -> list[bytes]:
    return [d for _, meta, d in outs if meta[1] != "10.0.0.1"]


def register(p: StatefulProxy) -> tuple[bytes, Job]:
    raw = request("REGISTER", "sip:example.com", extra=(CONTACT.decode(),), cseq_method="REGISTER")
    assert p.handle(raw, inbound(), 0.0) == []
    return raw, take(p, "register")


def invite(p: StatefulProxy) -> Job:
    p.handle(request("INVITE", "sip:bob@example.com"), inbound(), 0.0)
    return take(p, "lookup")


class TestRegistered:
    def test_answer_goes_upstream_and_is_sent_again_for_a_retransmission(self) -> None:
        """The store's 200 goes back to the UA with the store's Contact; the REGISTER
        retransmitted afterwards gets the same 200 from its transaction, with no new job."""
        p = core()
        raw, job = register(p)
        outs = registered(p, job, 200, "OK", (CONTACT,), 0.1)
        assert upstream(outs) == [200]
        assert parsed_resp(outs[0][2]).header("contact") == CONTACT.split(b": ", 1)[1]
        again = p.handle(raw, inbound(), 0.2)
        assert [d for _, _, d in again] == [outs[0][2]] and p.jobs == []

    def test_store_failure_answers_its_status(self) -> None:
        """A cacheDB that failed (workers/jobs.py ``_failed``) answers the REGISTER 503."""
        p = core()
        _, job = register(p)
        assert upstream(registered(p, job, 503, "Service Unavailable", (), 0.1)) == [503]


class TestLocated:
    def test_no_contact_answers_the_miss(self) -> None:
        """A lookup that found no binding answers the miss and forwards nothing."""
        p = core()
        outs = located(p, invite(p), [], MISS, 0.1)
        assert upstream(outs) == [480] and downstream(outs) == []

    def test_contacts_are_tried_in_turn(self) -> None:
        """The first contact found (highest q) gets the INVITE; its 503 moves the call on to
        the second, each at the address its REGISTER came from."""
        p = core()
        found: Found = [(f"sip:bob@192.168.1.2{i}:5062",
                         Source("udp", f"127.0.0.5{i}", 5080), ()) for i in (0, 1)]  # fmt: skip
        (first,) = downstream(located(p, invite(p), found, MISS, 0.1))
        assert parsed_req(first).uri.raw == "sip:bob@192.168.1.20:5062"
        busy = build_response(parsed_req(first), 503, "Service Unavailable", to_tag="t1")
        outs = p.handle(busy, inbound(src="127.0.0.50", port=5080), 0.2)
        (second,) = [(m[1], d) for _, m, d in outs if d.startswith(b"INVITE")]
        assert second[0] == "127.0.0.51"
        assert parsed_req(second[1]).uri.raw == "sip:bob@192.168.1.21:5062"

    def test_after_the_callers_cancel_goes_nowhere(self) -> None:
        """The caller cancelled while the lookup ran: it has had its 487, and the contacts
        found afterwards get no INVITE and the caller no second final."""
        p = core()
        job = invite(p)
        cancel = request("CANCEL", "sip:bob@example.com", cseq_method="CANCEL")
        assert sorted(upstream(p.handle(cancel, inbound(), 0.05))) == [200, 487]
        found: Found = [("sip:bob@127.0.0.50:5080", Source("udp", "127.0.0.50", 5080), ())]
        assert located(p, job, found, MISS, 0.1) == []


class TestResolved:
    def call(self) -> tuple[StatefulProxy, Job]:
        """A lookup whose only contact sits behind a Path named by a host name."""
        p = core()
        found: Found = [("sip:bob@192.168.1.20:5062", Source("udp", "127.0.0.50", 5080),
                         ("<sip:edge.example.net;lr>",))]  # fmt: skip
        assert downstream(located(p, invite(p), found, MISS, 0.1)) == []
        return p, take(p, "resolve")

    def test_failure_with_no_target_left_is_the_answer(self) -> None:
        """A name that does not resolve, and nothing else to try: the caller gets 478."""
        p, job = self.call()
        outs = resolved(p, job, [], (478, "Unresolvable destination"), 0.2)
        assert upstream(outs) == [478] and downstream(outs) == []

    def test_after_the_callers_cancel_goes_nowhere(self) -> None:
        """Addresses that come back after a CANCEL get no INVITE."""
        p, job = self.call()
        cancel = request("CANCEL", "sip:bob@example.com", cseq_method="CANCEL")
        assert sorted(upstream(p.handle(cancel, inbound(), 0.15))) == [200, 487]
        assert resolved(p, job, [("udp", "127.0.0.63", 5093)], None, 0.2) == []


def test_auth_store_failure_answers_its_status() -> None:
    """An HA1 read whose cacheDB failed answers the request with the job's status."""
    p = core()
    req = parsed_req(request("INVITE", "sip:bob@example.com"))
    job = Job("auth", None, None, req, inbound(), credentials=("example.com", "MD5", "alice"))
    outs = auth_failed(p, job, 503, "Service Unavailable", 0.0)
    assert upstream(outs) == [503] and downstream(outs) == []
