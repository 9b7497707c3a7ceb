"""CURVE keys between nodes (conf/curve.py): key files, the ZAP allow-list with real sockets,
and what the config loader refuses (docs/security.md "Network peers of the state plane")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import zmq

from conf import curve
from conf.load import ConfigError, from_dict
from sipline.cli import main as cli

# -- key files ---------------------------------------------------------------------------------


def test_keygen_writes_a_secret_only_its_owner_reads_and_a_public_file(tmp_path: Path,
                                                                      capsys: Any) -> None:  # fmt: skip
    """``sipline keygen`` writes PATH.key_secret (0600) and PATH.key, prints the public key,
    and refuses to overwrite either file."""
    assert cli(["keygen", str(tmp_path / "a")]) == 0
    secret, public = tmp_path / "a.key_secret", tmp_path / "a.key"
    assert os.stat(secret).st_mode & 0o777 == 0o600
    pair = curve.load_secret(str(secret))
    assert curve.load_public(str(public)) == pair.public
    assert f'public_key = "{pair.public.decode()}"' in capsys.readouterr().out
    assert cli(["keygen", str(tmp_path / "a")]) == 2
    assert curve.load_secret(str(secret)) == pair  # untouched


@pytest.mark.parametrize(("content", "mode", "error"), [
    (None, 0o644, "others may read"),
    ("public-only", 0o600, "no secret-key"),
    ("mismatched", 0o600, "not the one its secret-key derives"),
    ("garbage", 0o600, "not a ZeroMQ certificate"),
    ("short", 0o600, "not 40 Z85 characters"),
    ("huge", 0o600, "not a key file"),
], ids=["readable", "public", "mismatched", "garbage", "short", "huge"])  # fmt: skip
def test_a_secret_key_file_that_cannot_be_trusted_is_refused(tmp_path: Path, content: str | None,
                                                             mode: int, error: str) -> None:  # fmt: skip
    """Rule 2: each way a secret key file can be wrong is named."""
    secret_path, public_path, _ = curve.keygen(str(tmp_path / "a"))
    path = tmp_path / "bad"
    other = curve.KeyPair(*zmq.curve_keypair())
    text = {
        None: secret_path.read_text(),
        "public-only": public_path.read_text(),
        "mismatched": f'curve\n    public-key = "{other.public.decode()}"\n'
                      f'    secret-key = "{curve.load_secret(str(secret_path)).secret.decode()}"\n',
        "garbage": "hello\n",
        "short": 'curve\n    public-key = "abc"\n    secret-key = "def"\n',
        "huge": "#" * (curve.MAX_KEY_FILE_BYTES + 1),
    }[content]
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(curve.CurveKeyError, match=error):
        curve.load_secret(str(path))


def test_a_directory_or_a_missing_file_is_not_a_key() -> None:
    for path in ("/", "/nonexistent/key"):
        with pytest.raises(curve.CurveKeyError):
            curve.load_public(path)


# -- the ZAP decision (rule 3) -------------------------------------------------------------------

B = curve.KeyPair(*zmq.curve_keypair())


def zap_request(mechanism: bytes = b"CURVE", key: bytes | None = None) -> list[bytes]:
    creds = [zmq.utils.z85.decode(key or B.public)] if mechanism == b"CURVE" else []
    return [b"1.0", b"7", curve.ZAP_DOMAIN, b"192.0.2.9", b"", mechanism, *creds]


@pytest.mark.parametrize(("request_", "status", "user"), [
    (zap_request(), b"200", b"node-b"),
    (zap_request(key=zmq.curve_keypair()[0]), b"400", b""),
    (zap_request(b"NULL"), b"400", b""),
    (zap_request(b"PLAIN"), b"400", b""),
    ([b"1.0", b"7", b"x"], b"400", b""),
], ids=["listed", "unknown", "null", "plain", "short"])  # fmt: skip
def test_zap_admits_a_listed_key_under_its_node_name_only(request_: list[bytes], status: bytes,
                                                          user: bytes) -> None:  # fmt: skip
    reply = curve.zap_reply(request_, {B.public: "node-b"})
    assert reply is not None
    assert (reply[0], reply[1], reply[2], reply[4]) == (b"1.0", b"7", status, user)


@pytest.mark.parametrize("request_", [[], [b"1.0"], [b"2.0", b"7", b"", b"", b"", b"CURVE", b""]])
def test_a_request_without_an_id_or_of_another_version_is_not_answered(
        request_: list[bytes]) -> None:  # fmt: skip
    assert curve.zap_reply(request_, {B.public: "node-b"}) is None


def test_zap_handler_with_real_sockets(tmp_path: Path) -> None:
    """A ROUTER bound on ipc, then as a CURVE server on tcp: over tcp only the listed key gets
    a message in (its User-Id the node name); an unknown key and a keyless client get
    nothing; over ipc a keyless client still gets in (rule 4)."""
    asyncio.run(_zap_sockets(tmp_path))


async def _zap_sockets(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    loop = asyncio.get_running_loop()
    server = curve.KeyPair(*zmq.curve_keypair())
    verdicts: list[tuple[bool, str]] = []
    zap = curve.ZapHandler(ctx, loop, {B.public: "node-b"}, lambda ok, addr: verdicts.append((ok, addr)))
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    ipc = f"ipc://{tmp_path}/r.ipc"
    router.bind(ipc)
    curve.serve_curve(router, server)
    tcp = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    dealers = []
    for name, keys, ep in (("listed", B, tcp), ("unknown", curve.KeyPair(*zmq.curve_keypair()), tcp),
                           ("keyless", None, tcp), ("ipc", None, ipc)):  # fmt: skip
        d = ctx.socket(zmq.DEALER)
        d.linger = 0
        if keys is not None:
            curve.connect_curve(d, keys, server.public)
        d.connect(ep)
        d.send(name.encode())
        dealers.append(d)
    got: dict[bytes, str] = {}
    try:
        async with asyncio.timeout(5):
            while len(got) < 2 or len(verdicts) < 2:
                await asyncio.sleep(0.01)  # polling step: handshakes run in libzmq's threads
                while True:
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        got[frames[1].bytes] = str(frames[1].get("User-Id"))
                    except zmq.ZMQError:
                        got[frames[1].bytes] = ""
        # nothing else arrives: the unknown and keyless clients never complete a handshake
        await asyncio.sleep(0.2)  # a bounded look for a message that must not come
        with pytest.raises(zmq.Again):
            router.recv_multipart(zmq.NOBLOCK)
        assert got == {b"listed": "node-b", b"ipc": ""}
        assert sorted(verdicts) == [(False, "127.0.0.1"), (True, "127.0.0.1")]
    finally:
        for d in dealers:
            d.close(linger=0)
        router.close(linger=0)
        zap.close()
        ctx.term()


# -- the config (conf/checks/node.py check_curve) -------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    a = curve.keygen(str(tmp_path / "a"))
    b = curve.keygen(str(tmp_path / "b"))
    return {"a_secret": a[0], "a_public": a[1], "b_secret": b[0], "b_public": b[1]}


def node(bind: str = "", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"node": {"name": "node-a", "run_dir": "/tmp/sipline-a"},
                            "stateplane": {"peers": ["tcp://127.0.0.1:7500"]}}  # fmt: skip
    if bind:
        data["stateplane"]["bind"] = bind
    data.update(extra)
    return data


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    return info.value


@pytest.mark.parametrize("bind", ["0.0.0.0:7400", "[::]:7400", "*:7400"])
def test_a_wildcard_bind_needs_curve(bind: str, keys: dict[str, Path]) -> None:
    """Every interface is refused at load without keys, and accepted with them."""
    e = error(node(bind))
    assert e.key == "stateplane.bind" and "[curve] secret_key_file" in e.expected
    s = from_dict(node(bind, curve={"secret_key_file": str(keys["a_secret"])},
                       peer=[{"name": "node-b", "stateplane": "tcp://127.0.0.1:7500",
                              "public_key_file": str(keys["b_public"])}]))  # fmt: skip
    assert s.stateplane.bind == bind and s.peer[0].name == "node-b"
    assert from_dict(node("127.0.0.1:7400")).stateplane.bind  # a specific address: no keys


def test_with_curve_every_tcp_peer_needs_its_key(keys: dict[str, Path]) -> None:
    e = error(node("127.0.0.1:7400", curve={"secret_key_file": str(keys["a_secret"])}))
    assert e.key == "stateplane.peers[0]" and "public key" in e.expected
    inline = curve.load_public(str(keys["b_public"])).decode()
    s = from_dict(node("127.0.0.1:7400", curve={"secret_key_file": str(keys["a_secret"])},
                       peer=[{"name": "node-b", "stateplane": "tcp://127.0.0.1:7500",
                              "public_key": inline}]))  # fmt: skip
    assert curve.allowed(s) == {inline.encode(): "node-b"}
    assert curve.peer_of(s, "tcp://127.0.0.1:7500") == s.peer[0]


@pytest.mark.parametrize(("peer", "key", "expected"), [
    ({"name": "node-a"}, "peer[0].name", "not this node's own"),
    ({"name": "bad name"}, "peer[0].name", "letters, digits"),
    ({"name": "node-b", "stateplane": "/tmp/elsewhere"}, "peer[0].stateplane",
     "an entry of [stateplane] peers"),
    ({"name": "node-b", "public_key": "short"}, "peer[0].public_key", "40 Z85"),
    ({"name": "node-b", "public_key_file": "relative.key"}, "peer[0].public_key_file", "absolute"),
    ({"name": "node-b", "public_key_file": "/nonexistent.key"}, "peer[0].public_key_file",
     "public key file"),
], ids=["own-name", "bad-name", "unknown-endpoint", "short-key", "relative-file", "missing-file"])  # fmt: skip
def test_a_peer_that_cannot_be_used_is_named(peer: dict[str, str], key: str, expected: str,
                                             keys: dict[str, Path]) -> None:  # fmt: skip
    e = error(node(curve={"secret_key_file": str(keys["a_secret"])}, peer=[peer]))
    assert e.key == key and expected in e.expected, e


def test_key_problems_are_refused_at_load(keys: dict[str, Path]) -> None:
    """A readable secret, a peer key without our own, a public file as our secret, two peers
    with one name: each stops the load naming the key."""
    keys["a_secret"].chmod(0o644)
    e = error(node(curve={"secret_key_file": str(keys["a_secret"])}))
    assert e.key == "curve.secret_key_file" and "others may read" in str(e)
    keys["a_public"].chmod(0o600)
    e = error(node(curve={"secret_key_file": str(keys["a_public"])}))
    assert e.key == "curve.secret_key_file" and "no secret-key" in str(e)
    e = error(node(peer=[{"name": "node-b", "public_key_file": str(keys["b_public"])}]))
    assert e.key == "peer[0].public_key_file" and "[curve] secret_key_file" in e.expected
    e = error(node(peer=[{"name": "node-b"}, {"name": "node-b"}]))
    assert e.key == "peer[1].name"
