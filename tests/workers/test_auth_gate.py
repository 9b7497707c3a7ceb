"""The auth gate: who is challenged, and the verdict on credentials (RFC 3261 §22, RFC 7616)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.settings import Auth, AuthRealm, Settings
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from tests.workers.auth_client import challenge_params, credentials, h
from tests.workers.helpers import parsed_req, request
from workers.auth import digest
from workers.auth.admit import Authenticator, ProxyAuthRequired
from workers.auth.gate import AuthGate, Challenge, Pending, Refusal, Verified

SECRET = b"s3cret-s3cret-s3cret"
T0 = 1_800_000_000.0
REALM = "example.com"
USERS = {("alice", "MD5"): "wonderland", ("alice", "SHA-256"): "wonderland"}


REALMS = [AuthRealm(realm=REALM, credentials_file="/unused"),
          AuthRealm(realm="other.org", domains=["other.org", "OTHER.net"],
                    credentials_file="/unused")]  # fmt: skip


def cfg(**kw: object) -> Auth:
    base = Auth(enabled=True, nonce_secret_file="/unused")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def gate(**kw: object) -> AuthGate:
    return AuthGate(cfg(**kw), REALMS, SECRET, "sipline/worker.1", T0 - 1)


def lookup(realm: str, algorithm: str, user: str) -> str | None:
    password = USERS.get((user, algorithm))
    return None if password is None else h(algorithm, f"{user}:{realm}:{password}")


def req(method: str = "INVITE", *extra: str, uri: str = "sip:bob@example.com",
        to_tag: str | None = None, call_id: str = "call-1") -> Request:  # fmt: skip
    raw = request(method, uri, extra=extra, to_tag=to_tag, call_id=call_id)
    if method == "REGISTER":  # alice registers her own address (gate rule 6)
        raw = raw.replace(b"To: <sip:bob@", b"To: <sip:alice@")
    return parsed_req(raw)


def answer(g: AuthGate, first: Request, *, method: str = "INVITE", password: str = "wonderland",
           nc: int = 1, algorithm_index: int = 0, uri: str = "sip:bob@example.com",
           status: int = 407, call_id: str = "call-1", now: float = T0,
           ) -> tuple[Request, Challenge]:  # fmt: skip
    """Challenge ``first``, then build the request answering it."""
    ch = g.check(first, status, lookup, now)
    assert isinstance(ch, Challenge)
    params = challenge_params(ch.headers[algorithm_index])
    header = "Proxy-Authorization" if status == 407 else "Authorization"
    value = credentials(params, user="alice", password=password, method=method, uri=uri, nc=nc)
    return req(method, f"{header}: {value}", uri=uri, call_id=call_id), ch


class TestWhoIsChallenged:
    def test_register_gets_401(self) -> None:
        """REGISTER is challenged by the registrar's 401 even from a trusted source."""
        assert gate().status_for(req("REGISTER"), trusted=True, follows_route=False) == 401

    def test_initial_request_from_untrusted_gets_407(self) -> None:
        """INVITE, MESSAGE, OPTIONS ... with no To-tag from an untrusted source: 407."""
        g = gate()
        for m in ("INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE"):
            assert g.status_for(req(m), trusted=False, follows_route=False) == 407

    def test_trusted_ack_cancel_and_disabled_are_not_challenged(self) -> None:
        """Rule 1 exemptions, and nothing at all when disabled."""
        g = gate()
        assert g.status_for(req("INVITE"), trusted=True, follows_route=False) == 0
        assert g.status_for(req("ACK"), trusted=False, follows_route=False) == 0
        assert g.status_for(req("CANCEL"), trusted=False, follows_route=False) == 0
        assert gate(enabled=False).status_for(req("REGISTER"), False, False) == 0

    def test_in_dialog_following_our_route_passes_else_challenged(self) -> None:
        """A BYE with a To-tag that popped our Route passes; one routed by the table does not."""
        g = gate()
        assert g.status_for(req("BYE", to_tag="t"), trusted=False, follows_route=True) == 0
        assert g.status_for(req("BYE", to_tag="t"), trusted=False, follows_route=False) == 407

    def test_methods_and_switches(self) -> None:
        """``methods`` narrows 407; ``proxy``/``register`` off turn each kind off."""
        assert gate(methods=["INVITE"]).status_for(req("MESSAGE"), False, False) == 0
        assert gate(methods=["INVITE"]).status_for(req("INVITE"), False, False) == 407
        assert gate(proxy=False).status_for(req("INVITE"), False, False) == 0
        assert gate(register=False).status_for(req("REGISTER"), False, False) == 0

    def test_realm_by_from_host_else_first(self) -> None:
        """Rule 2: From host (To for REGISTER) picks the realm, case-insensitively."""
        g = gate()
        other = parsed_req(request("INVITE").replace(b"<sip:alice@example.com>",
                                                     b"<sip:alice@Other.NET>"))  # fmt: skip
        assert g.realm_for(other).realm == "other.org"
        assert g.realm_for(req("INVITE")).realm == REALM
        stranger = parsed_req(request("INVITE").replace(b"<sip:alice@example.com>",
                                                        b"<sip:alice@nowhere.test>"))  # fmt: skip
        assert g.realm_for(stranger).realm == REALM


class TestVerdicts:
    def test_challenge_offers_each_algorithm_with_one_nonce(self) -> None:
        """407 with one Proxy-Authenticate per algorithm, SHA-256 first, qop=auth."""
        ch = gate().check(req(), 407, lookup, T0)
        assert isinstance(ch, Challenge) and ch.status == 407 and ch.why == "no_credentials"
        assert ch.reason == "Proxy Authentication Required"
        assert [line.split(b":")[0] for line in ch.headers] == [b"Proxy-Authenticate"] * 2
        p = [challenge_params(line) for line in ch.headers]
        assert [x["algorithm"] for x in p] == ["SHA-256", "MD5"]
        assert p[0]["nonce"] == p[1]["nonce"] and p[0]["qop"] == "auth"
        assert p[0]["realm"] == REALM and "stale" not in p[0]

    @pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
    def test_right_password_verifies_and_strips(self, index: int) -> None:
        """Good credentials in either algorithm pass; the span is the credentials line."""
        g = gate()
        second, _ = answer(g, req(), algorithm_index=index)
        v = g.check(second, 407, lookup, T0 + 1)
        assert isinstance(v, Verified) and v.username == "alice" and v.realm == REALM
        assert v.strip is not None
        assert second.raw[v.strip[0] : v.strip[1]].startswith(b"Proxy-Authorization: Digest")

    def test_register_uses_authorization(self) -> None:
        """401 flow: WWW-Authenticate out, Authorization in."""
        g = gate()
        second, ch = answer(g, req("REGISTER", uri="sip:example.com"), method="REGISTER",
                            uri="sip:example.com", status=401)  # fmt: skip
        assert ch.headers[0].startswith(b"WWW-Authenticate: Digest ")
        assert isinstance(g.check(second, 401, lookup, T0 + 1), Verified)

    def test_no_strip_unless_consumed(self) -> None:
        g = gate(consume_credentials=False)
        second, _ = answer(g, req())
        v = g.check(second, 407, lookup, T0)
        assert isinstance(v, Verified) and v.strip is None

    def test_wrong_password_and_unknown_user_look_alike(self) -> None:
        """Both get a fresh challenge without stale (rule 3)."""
        g = gate()
        second, _ = answer(g, req(), password="guess")
        wrong = g.check(second, 407, lookup, T0)
        assert isinstance(wrong, Challenge) and wrong.why == "wrong_response"
        unknown = g.check(second, 407, lambda *_: None, T0)
        assert isinstance(unknown, Challenge) and unknown.why == "unknown_user"
        for ch in (wrong, unknown):
            assert "stale" not in challenge_params(ch.headers[0])

    def test_replay_is_refused_with_stale(self) -> None:
        """The same (nonce, nc) twice: the second gets stale=true; nc+1 passes."""
        g = gate()
        first = req()
        second, ch = answer(g, first)
        assert isinstance(g.check(second, 407, lookup, T0), Verified)
        replay = g.check(second, 407, lookup, T0 + 1)
        assert isinstance(replay, Challenge) and replay.why == "replayed"
        assert challenge_params(replay.headers[0])["stale"] == "true"
        params = challenge_params(ch.headers[0])
        value = credentials(params, user="alice", password="wonderland", method="INVITE",
                            uri="sip:bob@example.com", nc=2)  # fmt: skip
        assert isinstance(g.check(req("INVITE", f"Proxy-Authorization: {value}"), 407, lookup,
                                  T0 + 2), Verified)  # fmt: skip

    def test_expired_nonce_is_stale(self) -> None:
        g = gate()
        second, _ = answer(g, req())
        v = g.check(second, 407, lookup, T0 + 31)
        assert isinstance(v, Challenge) and v.why == "stale"
        assert challenge_params(v.headers[0])["stale"] == "true"

    def test_nonce_from_another_call_or_worker_is_foreign(self) -> None:
        """A right response over a nonce minted for another Call-ID or worker: stale=true."""
        g = gate()
        second, _ = answer(g, req(), call_id="another-call")
        v = g.check(second, 407, lookup, T0)
        assert isinstance(v, Challenge) and v.why == "foreign_nonce"
        other = AuthGate(cfg(), REALMS, SECRET, "sipline/worker.2", T0 - 1)
        third, _ = answer(g, req())
        assert isinstance(other.check(third, 407, lookup, T0), Challenge)

    def test_credentials_for_another_realm_are_ignored(self) -> None:
        """Another proxy's credentials: a challenge of ours, theirs left in place."""
        g = gate()
        ch = g.check(req("INVITE", 'Proxy-Authorization: Digest username="x", realm="far.away"'),
                     407, lookup, T0)  # fmt: skip
        assert isinstance(ch, Challenge) and ch.why == "no_credentials"

    def test_algorithm_not_offered_gets_a_challenge(self) -> None:
        """MD5 credentials when only SHA-256 is offered: challenge, not verification."""
        g = gate()
        second, _ = answer(g, req(), algorithm_index=1)
        ch = gate(algorithms=["SHA-256"]).check(second, 407, lookup, T0)
        assert isinstance(ch, Challenge) and ch.why == "algorithm"

    @pytest.mark.parametrize(
        "header",
        [
            'Proxy-Authorization: Digest username="alice", realm="example.com"',
            'Proxy-Authorization: Digest username="alice, realm="example.com"',
            "Proxy-Authorization: Digest ,,,",
        ],
    )
    def test_malformed_gets_400(self, header: str) -> None:
        assert isinstance(gate().check(req("INVITE", header), 407, lookup, T0), Refusal)

    def test_uri_other_than_request_uri_gets_400(self) -> None:
        """RFC 7616 §3.4.6: digest-uri must be the Request-URI."""
        g = gate()
        second, _ = answer(g, req())
        moved = parsed_req(
            second.raw.replace(b"INVITE sip:bob@example.com ", b"INVITE sip:eve@example.com ")
        )
        assert isinstance(g.check(moved, 407, lookup, T0), Refusal)
        lax = gate(check_uri=False)
        second, _ = answer(lax, req())
        moved = parsed_req(second.raw.replace(b"INVITE sip:bob@example.com ", b"INVITE sip:eve@example.com "))
        assert isinstance(lax.check(moved, 407, lookup, T0), Verified)

    def test_forged_nc_does_not_burn_the_clients_count(self) -> None:
        """Rule 5: a wrong response with nc 1 does not stop the client's own nc 1."""
        g = gate()
        ch = g.check(req(), 407, lookup, T0)
        assert isinstance(ch, Challenge)
        params = challenge_params(ch.headers[0])
        bad = credentials(params, user="alice", password="nope", method="INVITE",
                          uri="sip:bob@example.com")  # fmt: skip
        assert isinstance(g.check(req("INVITE", f"Proxy-Authorization: {bad}"), 407, lookup, T0),
                          Challenge)  # fmt: skip
        good = credentials(params, user="alice", password="wonderland", method="INVITE",
                           uri="sip:bob@example.com")  # fmt: skip
        assert isinstance(g.check(req("INVITE", f"Proxy-Authorization: {good}"), 407, lookup, T0),
                          Verified)  # fmt: skip

    def test_credentials_of_another_user_get_403(self) -> None:
        """Rule 6: bob's credentials on alice's From (or REGISTER To) are refused before any
        lookup; match_user off lets them through."""
        g = gate()
        ch = g.check(req(), 407, lookup, T0)
        assert isinstance(ch, Challenge)
        params = challenge_params(ch.headers[0])
        bob = credentials(params, user="bob", password="x", method="INVITE", uri="sip:bob@example.com")
        asked: list[str] = []

        def spy(realm: str, algorithm: str, user: str) -> str | None:
            asked.append(user)
            return lookup(realm, algorithm, user)

        out = g.check(req("INVITE", f"Proxy-Authorization: {bob}"), 407, spy, T0)
        assert isinstance(out, Refusal) and (out.status, out.why) == (403, "user_mismatch")
        assert asked == []
        lax = gate(match_user=False)
        out = lax.check(req("INVITE", f"Proxy-Authorization: {bob}"), 407, spy, T0)
        assert isinstance(out, Challenge) and out.why == "unknown_user" and asked == ["bob"]

    def test_inspect_then_verify_is_check(self) -> None:
        """The two-step form a cacheDB lookup uses gives the same verdict."""
        g = gate()
        second, _ = answer(g, req())
        p = g.inspect(second, 407, T0)
        assert isinstance(p, Pending) and (p.realm, p.algorithm, p.username) == (
            REALM, "SHA-256", "alice")  # fmt: skip
        assert isinstance(
            g.verify(second, p, lookup(p.realm, p.algorithm, p.username), T0), Verified
        )


def test_rfc7616_example_responses() -> None:
    """RFC 7616 §3.9.1 worked example, both algorithms."""
    args = {"nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "nc": "00000001",
            "qop": "auth", "method": "GET", "uri": "/dir/index.html"}  # fmt: skip
    for algorithm, expected in (
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ):
        ha1 = digest.ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
        assert digest.response(algorithm, ha1, **args) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_credentials_bytes_get_a_verdict(data: bytes) -> None:
    """Hostile input: whatever follows ``Proxy-Authorization: Digest``, a verdict, no exception."""
    raw = request("INVITE").replace(
        b"Content-Length",
        b'Proxy-Authorization: Digest realm="example.com", '
        + data.replace(b"\r", b"").replace(b"\n", b"")
        + b"\r\nContent-Length",
    )
    try:
        r = parsed_req(raw)
    except SipError:  # the parser refusing it is not what is tested here
        return
    out = gate().check(r, 407, lookup, T0)
    assert isinstance(out, Challenge | Refusal)



def authenticator(tmp_path: Path) -> Authenticator:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "users").write_text("", encoding="utf-8")
    realm = AuthRealm(realm=REALM, credentials_file=str(tmp_path / "users"))
    s = Settings(auth=cfg(nonce_secret_file=str(tmp_path / "secret")), auth_realm=[realm])
    return Authenticator(s, "sipline/worker.1", T0)


def test_ack_of_our_challenge_is_recognised(tmp_path: Path) -> None:
    """The ACK carries the To-tag of our 407 (same Call-ID, From-tag, CSeq): absorbed;
    another Call-ID or To-tag is not ours."""
    a = authenticator(tmp_path)
    invite = req()
    with pytest.raises(ProxyAuthRequired) as info:
        a.admit(invite, trusted=False, follows_route=False, now=T0)
    assert info.value.extra_headers[0].startswith(b"Proxy-Authenticate: Digest")
    tag = a.reply_tag(invite)
    assert a.acks_challenge(req("ACK", to_tag=tag))
    assert not a.acks_challenge(req("ACK", to_tag=tag, call_id="other"))
    assert not a.acks_challenge(req("ACK", to_tag="ac" + "0" * 14))
    assert not a.acks_challenge(req("ACK", to_tag="ac-x"))
    assert not a.acks_challenge(req("ACK"))


class TestMoreVerdicts:
    def test_qop_auth_int_gets_a_challenge(self) -> None:
        """qop=auth-int is not offered: a fresh challenge, counted as ``qop``."""
        g = gate()
        second, _ = answer(g, req())
        raw = second.raw.replace(b"qop=auth,", b"qop=auth-int,")
        out = g.check(parsed_req(raw), 407, lookup, T0)
        assert isinstance(out, Challenge) and out.why == "qop"

    def test_nc_is_hexadecimal(self) -> None:
        """nc 0000000a is ten: it passes, then 00000010 (sixteen); a replay of ten fails; 0x50
        moves the window so that 0x12 (62 below, inside it) still passes once."""
        g = gate()
        first = req()
        ch = g.check(first, 407, lookup, T0)
        assert isinstance(ch, Challenge)
        params = challenge_params(ch.headers[0])
        for nc, ok in ((10, True), (16, True), (10, False), (0x50, True), (0x12, True)):
            value = credentials(params, user="alice", password="wonderland", method="INVITE",
                                uri="sip:bob@example.com", nc=nc)  # fmt: skip
            out = g.check(req("INVITE", f"Proxy-Authorization: {value}"), 407, lookup, T0)
            assert isinstance(out, Verified) is ok, (nc, out)

    def test_foreign_nonce_is_stale(self) -> None:
        g = gate()
        second, _ = answer(g, req(), call_id="elsewhere")
        out = g.check(second, 407, lookup, T0)
        assert isinstance(out, Challenge) and out.why == "foreign_nonce"
        assert challenge_params(out.headers[0])["stale"] == "true"

    def test_register_realm_and_identity_come_from_to(self) -> None:
        """REGISTER: the To URI names the realm and whose credentials count (third-party
        registration: bob's phone registering alice needs alice's credentials)."""
        g = gate()
        raw = request("REGISTER", "sip:example.com", call_id="reg-1")
        raw = raw.replace(b"From: <sip:alice@example.com>", b"From: <sip:bob@other.org>")
        raw = raw.replace(b"To: <sip:bob@example.com>", b"To: <sip:alice@example.com>")
        first = parsed_req(raw)
        assert g.realm_for(first).realm == REALM
        ch = g.check(first, 401, lookup, T0)
        assert isinstance(ch, Challenge)
        value = credentials(challenge_params(ch.headers[0]), user="alice", password="wonderland",
                            method="REGISTER", uri="sip:example.com")  # fmt: skip
        ok = g.check(parsed_req(raw.replace(b"Content-Length", f"Authorization: {value}\r\nContent-Length".encode())),
                     401, lookup, T0)  # fmt: skip
        assert isinstance(ok, Verified)
        swapped = raw.replace(b"To: <sip:alice@example.com>", b"To: <sip:carol@example.com>")
        out = g.check(parsed_req(swapped.replace(b"Content-Length", f"Authorization: {value}\r\nContent-Length".encode())),
                      401, lookup, T0)  # fmt: skip
        assert isinstance(out, Refusal) and (out.status, out.reason) == (403, "Forbidden")

    def test_counters_count_each_verdict(self) -> None:
        """What ``sipline ctl stats`` shows: one count per verdict."""
        g = gate()
        g.check(req(), 407, lookup, T0)
        second, _ = answer(g, req())
        g.check(second, 407, lookup, T0)
        g.check(second, 407, lookup, T0)
        g.check(req("INVITE", "Proxy-Authorization: Digest ,"), 407, lookup, T0)
        g.check(req("INVITE", "Proxy-Authorization: Digest ;"), 407, lookup, T0)
        bob = second.raw.replace(b'username="alice"', b'username="bob"')
        g.check(parsed_req(bob), 407, lookup, T0)
        g.check(parsed_req(bob), 407, lookup, T0)
        assert g.counters == {"no_credentials": 2, "verified": 1, "replayed": 1, "malformed": 2,
                              "user_mismatch": 2}  # fmt: skip

    def test_each_nonce_has_its_own_counts(self) -> None:
        """Two calls, two nonces: nc 1 passes once with each."""
        g = gate()
        a, _ = answer(g, req(call_id="call-a"), call_id="call-a")
        b, _ = answer(g, req(call_id="call-b"), call_id="call-b")
        assert isinstance(g.check(a, 407, lookup, T0), Verified)
        assert isinstance(g.check(b, 407, lookup, T0), Verified)
        assert len(g.counts) == 2
