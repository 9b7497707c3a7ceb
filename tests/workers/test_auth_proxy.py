"""Digest authentication in the request path (workers/proxy.py rule 11), through the proxy
cores without sockets, in both modes: challenges, credentials stripped, trusted sources and
our route sets pass, the ACK of a challenge is absorbed, nc spent once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conf.settings import Auth, AuthRealm, Proxy, RateLimit, Registrar, Route, Trusted
from tests.cachedb.helpers import run
from tests.cachedb.servers import Server
from tests.workers.auth_client import challenge_params, credentials, h
from workers.auth.admit import Authenticator
from workers.cachedb import open_cachedb
from workers.jobanswers import authenticated
from workers.proxy import Inbound, Out, StatelessProxy
from workers.refusals import Drop, Malformed
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import PORT, US, inbound, parsed_resp, request, settings

REALM = "example.com"
NOW = 1000.0
TRUSTED_SRC = "10.9.9.9"
OUR_ROUTE = f"Route: <sip:{US}:{PORT};lr>"
MODES = pytest.mark.parametrize("mode", ["stateless", "stateful"])


class Core:
    """A core of one mode with ``[auth]`` on: ``send(raw, src)`` gives what it sends."""

    def __init__(self, tmp_path: Path, mode: str, cachedb_url: str = "", file_users: bool = True,
                 **auth: object) -> None:  # fmt: skip
        (tmp_path / "secret").write_bytes(b"0123456789abcdef")
        (tmp_path / "users").write_text(
            "".join(f"alice {a} {h(a, f'alice:{REALM}:pw')}\n" for a in ("MD5", "SHA-256"))
            if file_users else "")  # fmt: skip
        s = settings(trusted=[Trusted(cidr=TRUSTED_SRC)])
        a = Auth(enabled=True, nonce_secret_file=str(tmp_path / "secret"), algorithms=["MD5"])
        s = replace(s, proxy=Proxy(mode=mode), auth=replace(a, **auth),  # type: ignore[arg-type]
                    auth_realm=[AuthRealm(realm=REALM, credentials_file=str(tmp_path / "users"),
                                          cachedb_url=cachedb_url)],
                    registrar=Registrar(enabled=mode == "stateful"))  # fmt: skip
        self.sl = StatelessProxy(s, RoutingTable(s))
        self.sl.auth = Authenticator(s, "test/worker.1", NOW - 1)
        self.sl.now = NOW
        self.sf = StatefulProxy(s, self.sl) if mode == "stateful" else None

    def send(self, raw: bytes, src: str = "10.0.0.1") -> list[Out]:
        inb: Inbound = inbound(src=src)
        try:
            if self.sf is not None:
                return self.sf.handle(raw, inb, NOW)
            return self.sl.handle(raw, inb)
        except Drop as d:
            return [("drop", [d.reason], b"")]


def answers(outs: list[Out]) -> list[bytes]:
    return [d for _, _, d in outs if d.startswith(b"SIP/2.0") and not d.startswith(b"SIP/2.0 100")]


def forwarded(outs: list[Out]) -> list[bytes]:
    return [d for i, _, d in outs if i != "drop" and not d.startswith(b"SIP/2.0")]


def auth_line(challenge: bytes, *, method: str = "INVITE", nc: int = 1,
              uri: str = "sip:bob@example.com", name: str = "Proxy-Authorization",
              password: str = "pw") -> str:  # fmt: skip
    line = next(x for x in challenge.split(b"\r\n") if b"-Authenticate:" in x)
    creds = credentials(challenge_params(line), user="alice", password=password,
                        method=method, uri=uri, nc=nc)  # fmt: skip
    return f"{name}: {creds}"


@MODES
def test_invite_challenged_then_forwarded_without_our_credentials(tmp_path: Path,
                                                                  mode: str) -> None:  # fmt: skip
    """407, then the INVITE with credentials leaves without them; another realm's stay."""
    c = Core(tmp_path, mode)
    (ch,) = answers(c.send(request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1")))
    assert parsed_resp(ch).status == 407
    other = 'Proxy-Authorization: Digest username="x", realm="far.away", nonce="n"'
    raw = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK2", cseq=2,
                  extra=(auth_line(ch), other))  # fmt: skip
    (out,) = forwarded(c.send(raw))
    assert out.count(b"Proxy-Authorization") == 1 and b"far.away" in out
    assert c.sl.auth is not None and c.sl.auth.stats()["verified"] == 1


@MODES
def test_ack_of_the_challenge_is_absorbed(tmp_path: Path, mode: str) -> None:
    """The ACK for our 407 goes nowhere (it would reach the UAS as a stray ACK)."""
    c = Core(tmp_path, mode)
    (ch,) = answers(c.send(request("INVITE")))
    to_tag = parsed_resp(ch).to.tag
    outs = c.send(request("ACK", to_tag=to_tag))
    assert forwarded(outs) == [] and answers(outs) == []


@MODES
def test_wrong_password_and_replay_are_challenged_again(tmp_path: Path, mode: str) -> None:
    c = Core(tmp_path, mode)
    (ch,) = answers(c.send(request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa")))
    bad = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKb", cseq=2,
                  extra=(auth_line(ch, password="no"),))  # fmt: skip
    assert [parsed_resp(a).status for a in answers(c.send(bad))] == [407]
    good = auth_line(ch)
    first = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc", cseq=3, extra=(good,))
    assert len(forwarded(c.send(first))) == 1
    again = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKd", cseq=4, extra=(good,))
    (replay,) = answers(c.send(again))
    assert parsed_resp(replay).status == 407 and b"stale=true" in replay


@MODES
def test_trusted_source_and_our_route_set_pass(tmp_path: Path, mode: str) -> None:
    """No challenge for a [[trusted]] source, nor for an in-dialog request through our
    Record-Route; an in-dialog request the table would route is challenged."""
    c = Core(tmp_path, mode)
    assert len(forwarded(c.send(request("INVITE"), src=TRUSTED_SRC))) == 1
    bye = request("BYE", "sip:bob@10.0.0.7:5080", to_tag="t", extra=(OUR_ROUTE,))
    assert len(forwarded(c.send(bye))) == 1
    to_us = request("INVITE", f"sip:bob@{US}:{PORT}", to_tag="t", call_id="other-call",
                    via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKreinvite")  # fmt: skip
    assert [parsed_resp(a).status for a in answers(c.send(to_us))] == [407]


@MODES
def test_malformed_credentials_get_400(tmp_path: Path, mode: str) -> None:
    c = Core(tmp_path, mode)
    raw = request("INVITE", extra=('Proxy-Authorization: Digest realm="example.com", ,',))
    assert [parsed_resp(a).status for a in answers(c.send(raw))] == [400]


def test_register_to_our_registrar_gets_401(tmp_path: Path) -> None:
    """The stateful core's registrar path: 401 with WWW-Authenticate, then registered; bob's
    address with alice's credentials gets 403 (match_user)."""
    c = Core(tmp_path, "stateful")
    uri = f"sip:{US}:{PORT}"
    reg = request("REGISTER", uri, via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKr1",
                  extra=("Contact: <sip:alice@10.0.0.1:5070>",)).replace(b"bob@", b"alice@")
    (ch,) = answers(c.send(reg))
    assert parsed_resp(ch).status == 401 and b"WWW-Authenticate: Digest" in ch
    again = request("REGISTER", uri, via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKr2", cseq=2,
                    extra=("Contact: <sip:alice@10.0.0.1:5070>",
                           auth_line(ch, method="REGISTER", uri=uri, name="Authorization")))  # fmt: skip
    c.send(again.replace(b"bob@", b"alice@"))
    assert c.sf is not None and [j.kind for j in c.sf.jobs] == ["register"]


def test_register_of_another_users_address_gets_403(tmp_path: Path) -> None:
    """alice's good credentials on a REGISTER for bob's address: 403, no registration."""
    c = Core(tmp_path, "stateful")
    uri = f"sip:{US}:{PORT}"
    reg = request("REGISTER", uri, via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKm1")
    (ch,) = answers(c.send(reg))
    again = request("REGISTER", uri, via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKm2", cseq=2,
                    extra=(auth_line(ch, method="REGISTER", uri=uri, name="Authorization"),))
    assert [parsed_resp(a).status for a in answers(c.send(again))] == [403]
    assert c.sf is not None and c.sf.jobs == []


def test_plan_runs_once_for_a_stateless_route_in_stateful_mode() -> None:
    """A stateless route of a stateful core forwards with the plan already made: a 2/s pipe
    passes 2 INVITEs, not 1 (each plan spends a token, as it spends a nonce-count)."""
    s = settings(routes=[Route(name="default", to="uas", mode="stateless")])
    s = replace(s, proxy=Proxy(mode="stateful"),
                ratelimit=[RateLimit(name="p", limit_per_s=2, window_s=1.0)])  # fmt: skip
    sl = StatelessProxy(s, RoutingTable(s))
    sf = StatefulProxy(s, sl)
    sl.now = NOW
    firsts = []
    for i in range(3):
        raw = request("INVITE", via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKp{i}", call_id=f"p{i}")
        firsts.append(sf.handle(raw, inbound(), NOW)[0][2].split(b" ", 2)[1])
    assert firsts == [b"sip:bob@example.com", b"sip:bob@example.com", b"503"]



def test_ha1_from_a_cachedb_through_an_auth_job(tmp_path: Path) -> None:
    """A user only a realm's cacheDB (a real redis) knows: the core queues an ``auth`` job,
    and the request handed back with the HA1 is forwarded; one it does not know is
    challenged again. The core is needed for the jobs even with stateless routes."""
    server = Server("redis")
    server.start()
    try:
        c = Core(tmp_path, "stateful", cachedb_url=server.url, file_users=False)
        assert c.sf is not None and c.sf.needed and c.sl.auth is not None
        auth = c.sl.auth

        async def put() -> None:
            db = open_cachedb(server.url)
            await db.set(f"ha1:{REALM}:MD5:alice", h("MD5", f"alice:{REALM}:pw").encode())
            await db.close()

        run(put)
        (ch,) = answers(c.send(request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKj1")))
        raw = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKj2", cseq=2,
                      extra=(auth_line(ch),))  # fmt: skip
        assert c.send(raw) == []
        (job,) = c.sf.jobs
        c.sf.jobs.clear()
        assert (job.kind, job.credentials) == ("auth", (REALM, "MD5", "alice"))
        found: list[str | None] = []

        async def lookup() -> None:
            found.append(await auth.store.lookup(*job.credentials, NOW))  # type: ignore[misc]
            await auth.store.aclose()

        run(lookup)
        assert found == [h("MD5", f"alice:{REALM}:pw")]
        assert len(forwarded(authenticated(c.sf, job, found[0], NOW))) == 1
        nc2 = request("INVITE", via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKj3", cseq=3,
                      extra=(auth_line(ch, nc=2),))  # fmt: skip
        assert len(forwarded(c.send(nc2))) == 1  # the answer is near-cached: no second job
        assert c.sf.jobs == []
    finally:
        server.cleanup()


@hsettings(max_examples=150, deadline=None)
@given(value=st.binary(max_size=300), name=st.sampled_from(["Proxy-Authorization", "Authorization"]),
       method=st.sampled_from(["INVITE", "REGISTER", "BYE", "ACK", "OPTIONS"]))  # fmt: skip
def test_hostile_credentials_never_raise(tmp_path_factory: pytest.TempPathFactory, value: bytes,
                                         name: str, method: str) -> None:  # fmt: skip
    """Any bytes as credentials through the stateful core: an answer, a forward or a drop,
    never another exception (400 for what is unreadable)."""
    c = _hostile_core(tmp_path_factory)
    clean = value.replace(b"\r", b" ").replace(b"\n", b" ")
    raw = request(method, f"sip:{US}:{PORT}" if method == "REGISTER" else "sip:bob@example.com",
                  via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{clean.hex()[:16]}h")  # fmt: skip
    raw = raw.replace(b"Content-Length", name.encode() + b": Digest " + clean + b"\r\nContent-Length")
    try:
        outs = c.send(raw)
    except Malformed:
        return  # the parser refused the message as a whole: not the auth's to answer
    for a in answers(outs):
        assert parsed_resp(a).status in (400, 401, 403, 404, 407, 408, 480, 500, 503)


_CORES: dict[str, Core] = {}


def _hostile_core(factory: pytest.TempPathFactory) -> Core:
    if "c" not in _CORES:
        _CORES["c"] = Core(factory.mktemp("hostile"), "stateful")
    return _CORES["c"]
