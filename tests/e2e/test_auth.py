"""Digest authentication through a real node (docs/auth.md): sipp's ``[authentication]``
(``-au``/``-ap``) answers the challenges; a UDP socket of the test sends what sipp cannot
(replays, SHA-256, malformed credentials)."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cachedb.helpers import run
from tests.cachedb.servers import Server
from tests.workers.auth_client import challenge_params, credentials, h
from workers.cachedb import open_cachedb

from .conftest import StartNode
from .node import LOCALHOST, Node, Proc, sipp_uac
from .test_ctl import ctl
from .test_stateful import uas_done, uas_stats

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

USER, PASSWORD, REALM = "alice", "wonder-land", "sipline.test"
TRUSTED = "127.0.0.2"  # a [[trusted]] source; the UACs of the other tests are on 127.0.0.1
ANSWER_WITHIN_S = 5.0
MODES = {"stateless": "", "stateful": '[proxy]\nmode = "stateful"\n'}


def auth_conf(tmp_path: Path, algorithms: str = '["MD5"]', extra: str = "",
              cachedb_url: str = "") -> str:  # fmt: skip
    """[auth] with a fresh secret and alice's lines for both algorithms (in the file, or
    only in ``cachedb_url`` when given)."""
    secret, users = tmp_path / "nonce.secret", tmp_path / "users"
    secret.write_bytes(uuid.uuid4().hex.encode())
    lines = "".join(f"{USER} {a} {h(a, f'{USER}:{REALM}:{PASSWORD}')}\n" for a in ("MD5", "SHA-256"))
    users.write_text("" if cachedb_url else lines, encoding="utf-8")
    db = f'cachedb_url = "{cachedb_url}"\n' if cachedb_url else ""
    return (f'[auth]\nenabled = true\nnonce_secret_file = "{secret}"\n'
            f"algorithms = {algorithms}\n\n"
            f'[[auth_realm]]\nrealm = "{REALM}"\ncredentials_file = "{users}"\n{db}\n'
            f'[[trusted]]\ncidr = "{TRUSTED}"\n\n{extra}')  # fmt: skip


REGISTRAR = "[registrar]\nenabled = true\n"


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        yield s


def register(sock: socket.socket, node: Node, call_id: str, cseq: int,
             authorization: str = "") -> bytes:  # fmt: skip
    ip, port = sock.getsockname()
    uri = f"sip:{LOCALHOST}:{node.port}"
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:{USER}@{LOCALHOST}:{node.port}>;tag=t1",
        f"To: <sip:{USER}@{LOCALHOST}:{node.port}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{USER}@{ip}:{port}>",
        *([f"Authorization: {authorization}"] if authorization else []),
        "Expires: 60",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final(sock: socket.socket, node: Node, data: bytes) -> bytes:
    """The final response the node sends to ``data`` (provisionals skipped)."""
    sock.sendto(data, (LOCALHOST, node.port))
    end = time.monotonic() + ANSWER_WITHIN_S
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        reply = sock.recv(65535)
        if int(reply.split(b" ", 2)[1]) >= 200:
            return reply
    raise AssertionError("no final response")


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def challenges(reply: bytes, name: bytes = b"www-authenticate") -> list[dict[str, str]]:
    return [challenge_params(line) for line in reply.split(b"\r\n")
            if line.lower().startswith(name + b":")]  # fmt: skip


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_register_is_challenged_then_accepted(start_node: StartNode, tmp_path: Path,
                                              transport: str) -> None:  # fmt: skip
    """sipp REGISTERs, gets 401, answers with -au/-ap and gets 200, over UDP and TCP."""
    node = start_node(9, "worker=2", auth_conf(tmp_path, extra=REGISTRAR))
    res = sipp_uac(node.port, transport, 3, 3, tmp_path, scenario="register_auth",
                   extra=("-au", USER, "-ap", PASSWORD))  # fmt: skip
    assert (res.successful, res.failed) == (3, 0), res.output


def test_credentials_from_redis(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """alice is only in a real redis ([[auth_realm]] cachedb_url): calls through the shipped
    stateless route authenticate (the stateful core comes in for the lookups alone); a wrong
    password is refused."""
    server = Server("redis")
    server.start()
    try:
        async def put() -> None:
            db = open_cachedb(server.url)
            await db.set(f"ha1:{REALM}:MD5:{USER}", h("MD5", f"{USER}:{REALM}:{PASSWORD}").encode())
            await db.close()

        run(put)
        dport, _ = uas("u1", "uas_rr")
        node = start_node(dport, "worker=2", auth_conf(tmp_path, cachedb_url=server.url))
        auth_uri = f"service@{LOCALHOST}:{node.port}"
        res = sipp_uac(node.port, "u1", 3, 3, tmp_path, scenario="uac_auth",
                       extra=("-au", USER, "-ap", PASSWORD, "-auth_uri", auth_uri))  # fmt: skip
        assert (res.successful, res.failed) == (3, 0), res.output
        # sipp takes our second 407 for a retransmission of the first and ACKs it again
        # until its timeout: the call does not succeed, and the workers count the refusal
        res = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="uac_auth", timeout_s=5,
                       extra=("-au", USER, "-ap", "wrong", "-auth_uri", auth_uri))  # fmt: skip
        assert res.successful == 0, res.output
        counts = auth_counters(node)
        assert counts["verified"] >= 3 and counts["wrong_response"] >= 1, counts
    finally:
        server.cleanup()


def auth_counters(node: Node) -> Counter[str]:
    """The workers' ``auth`` verdict counters summed (``sipline ctl stats``)."""
    total: Counter[str] = Counter()
    for reply in ctl(node.conf, "stats")["stats"]:  # type: ignore[attr-defined]
        if reply.get("role") == "worker":
            total.update(reply.get("auth", {}))
    return total


def test_wrong_password_is_refused(start_node: StartNode, tmp_path: Path) -> None:
    """A wrong password gets a second 401 (sipp's call fails); mallory's credentials on
    alice's REGISTER get 403 (match_user)."""
    node = start_node(9, "worker=2", auth_conf(tmp_path, extra=REGISTRAR))
    res = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register_auth",
                   extra=("-au", USER, "-ap", "not-" + PASSWORD))  # fmt: skip
    assert (res.successful, res.failed) == (0, 1), res.output
    res = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register_auth",
                   extra=("-au", "mallory", "-ap", PASSWORD))  # fmt: skip
    assert (res.successful, res.failed) == (0, 1), res.output


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_replayed_nonce_count_is_refused(start_node: StartNode, tmp_path: Path,
                                         client: socket.socket, algorithm: str) -> None:  # fmt: skip
    """Credentials accepted once are refused with stale=true when sent again (new branch
    and CSeq, same nonce and nc); the next nc passes. Both algorithms offered."""
    node = start_node(9, "worker=2", auth_conf(tmp_path, '["SHA-256", "MD5"]', REGISTRAR))
    call_id = f"auth-{uuid.uuid4().hex}"
    first = final(client, node, register(client, node, call_id, 1))
    assert status(first) == 401
    offered = {c["algorithm"]: c for c in challenges(first)}
    assert list(offered) == ["SHA-256", "MD5"]
    ch = offered[algorithm]
    uri = f"sip:{LOCALHOST}:{node.port}"
    creds = credentials(ch, user=USER, password=PASSWORD, method="REGISTER", uri=uri)
    assert status(final(client, node, register(client, node, call_id, 2, creds))) == 200
    replay = final(client, node, register(client, node, call_id, 3, creds))
    assert status(replay) == 401 and challenges(replay)[0].get("stale") == "true"
    nc2 = credentials(ch, user=USER, password=PASSWORD, method="REGISTER", uri=uri, nc=2)
    assert status(final(client, node, register(client, node, call_id, 4, nc2))) == 200


def test_malformed_credentials_get_400(start_node: StartNode, tmp_path: Path,
                                       client: socket.socket) -> None:  # fmt: skip
    """Broken Authorization headers: 400, and the node goes on (clean stop at teardown)."""
    node = start_node(9, "worker=1", auth_conf(tmp_path, extra=REGISTRAR))
    for bad in (f'Digest username="{USER}, realm="{REALM}"', "Digest ,,,",
                f'Digest username="{USER}", realm="{REALM}", nonce="x"'):  # fmt: skip
        reply = final(client, node, register(client, node, uuid.uuid4().hex, 1, bad))
        assert status(reply) == 400, reply
    assert status(final(client, node, register(client, node, "x", 1))) == 401


@pytest.mark.parametrize("mode", list(MODES))
def test_invite_from_untrusted_is_challenged_then_relayed(
    start_node: StartNode, uas: Uas, tmp_path: Path, mode: str
) -> None:
    """407, sipp answers it, the call goes through; the UAS never sees our credentials."""
    calls = 5
    dport, proc, stf, msgs = uas_stats(uas, "uas_rr", calls, tmp_path)
    node = start_node(dport, "worker=2", auth_conf(tmp_path, extra=MODES[mode]))
    # sipp signs sip:remote_ip:remote_port unless told the Request-URI (check_uri)
    auth_uri = f"service@{LOCALHOST}:{node.port}"  # sipp puts "sip:" before it
    res = sipp_uac(node.port, "u1", calls, 5, tmp_path, scenario="uac_auth",
                   extra=("-au", USER, "-ap", PASSWORD, "-auth_uri", auth_uri))  # fmt: skip
    assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(proc, stf) == (calls, 0)
    seen = msgs.read_text(errors="replace")
    assert seen.count("INVITE sip:") >= calls
    assert "Proxy-Authorization" not in seen


def test_trusted_source_is_not_challenged(start_node: StartNode, uas: Uas, tmp_path: Path,
                                          client: socket.socket) -> None:  # fmt: skip
    """sipp's plain uac from the trusted 127.0.0.2 completes; from 127.0.0.1 an INVITE gets
    407 with Proxy-Authenticate."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2", auth_conf(tmp_path))
    res = sipp_uac(node.port, "u1", 5, 5, tmp_path, extra=("-i", TRUSTED))
    assert (res.successful, res.failed) == (5, 0), res.output
    invite = register(client, node, uuid.uuid4().hex, 1).replace(b"REGISTER", b"INVITE")
    reply = final(client, node, invite)
    assert status(reply) == 407, reply
    assert challenges(reply, b"proxy-authenticate")[0]["realm"] == REALM
