"""ZeroMQ CURVE between nodes: key files, the ZAP allow-list, and socket options
(``docs/security.md`` "Network peers of the state plane").

Rules:
1. A node has one key pair, written by ``sipline keygen`` in the ZeroMQ certificate format
   (``zmq.auth``): ``<name>.key_secret`` (public and secret key, mode 0600) and
   ``<name>.key`` (public key only, for the other nodes). ``[curve] secret_key_file`` names
   this node's; each ``[[peer]]`` names another node and its public key. Nothing here is
   specific to the state plane: any channel between nodes (the ingress -> worker hop across
   hosts, issue #14) can take the same keys and the same allow-list.
2. A key file is refused at config load (``conf/load.py``) unless it is a regular file of at
   most ``MAX_KEY_FILE_BYTES`` holding Z85 keys of 40 characters; a secret file must be
   readable by its owner only, and its public key must be the one its secret key derives.
3. The allow-list is a ZAP handler (RFC 27) of our own, served from the process's event loop
   (a ROUTER on ``inproc://zeromq.zap.01`` drained with NOBLOCK like every other socket):
   pyzmq's ``ThreadAuthenticator`` would add a thread to a process that has none, and its
   ``AsyncioAuthenticator`` needs a ``zmq.asyncio`` context where ours is plain. The decision
   is a pure function, ``zap_reply``: CURVE with a listed public key gets 200 and the peer's
   node name as its User-Id; anything else gets 400. The handler must be bound before any
   CURVE server endpoint, or libzmq admits every key (it does when no handler answers).
4. CURVE is set per endpoint: libzmq copies a socket's options into each listener or
   connection when it is made, so a socket bound on ipc:// first and then given the server
   options before its tcp:// bind speaks NULL on ipc and CURVE on tcp. ipc stays keyless (its
   file permissions guard it); only tcp:// endpoints carry keys.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.utils import z85

if TYPE_CHECKING:
    from conf.settings import Peer, Settings

#: a certificate file is a few hundred bytes; a larger one is not ours
MAX_KEY_FILE_BYTES = 64 << 10
#: the inproc endpoint libzmq asks (RFC 27)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: the ZAP domain our CURVE servers use (a handler could serve several)
ZAP_DOMAIN = b"sipline"
#: a ZAP request is 7 frames plus a 32-byte key: cap what the handler reads
ZAP_MAX_BYTES = 1 << 10
#: handshakes judged per loop callback (many connecting at once wait their turn)
ZAP_DRAIN_LIMIT = 256
#: Z85 encodes 32 bytes in 40 of these characters (ZeroMQ RFC 32)
Z85_KEY_RE = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class CurveKeyError(ValueError):
    """A key or key file that cannot be used; ``str()`` says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A node's CURVE keys, Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def check_key(text: str | bytes, what: str = "key") -> bytes:
    """``text`` as a Z85 CURVE key (40 characters encoding 32 bytes).

    Raises:
        CurveKeyError: anything else.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not Z85_KEY_RE.fullmatch(raw):
        raise CurveKeyError(f"{what} is not 40 Z85 characters")
    return raw


def _read(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """Rule 2: the keys of the certificate file at ``path``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CurveKeyError(f"cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_KEY_FILE_BYTES:
        raise CurveKeyError(f"not a key file (a regular file of at most {MAX_KEY_FILE_BYTES} bytes)")
    if secret and st.st_mode & 0o077:
        raise CurveKeyError(f"mode {stat.S_IMODE(st.st_mode):04o}: others may read the secret key "
                        "(chmod 600)")  # fmt: skip
    try:
        public, sk = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"not a ZeroMQ certificate ({exc})") from None
    return check_key(public, "its public-key"), (None if sk is None else check_key(sk, "its secret-key"))


def load_secret(path: str) -> KeyPair:
    """This node's key pair from the secret file ``sipline keygen`` wrote (rule 2).

    Raises:
        CurveKeyError: unreadable, readable by others, not a certificate, or keys that do not match.
    """
    public, secret = _read(path, secret=True)
    if secret is None:
        raise CurveKeyError("no secret-key in it (is it the public .key file?)")
    if zmq.curve_public(secret) != public:
        raise CurveKeyError("its public-key is not the one its secret-key derives")
    return KeyPair(public, secret)


def load_public(path: str) -> bytes:
    """A peer's public key from its ``.key`` file (rule 2).

    Raises:
        CurveKeyError: unreadable or not a certificate.
    """
    return _read(path, secret=False)[0]


def keygen(base: str) -> tuple[Path, Path, bytes]:
    """Write a new key pair at ``base.key_secret`` (0600) and ``base.key`` (rule 1); refuses
    to overwrite either. Returns both paths and the public key."""
    public, secret = zmq.curve_keypair()
    secret_path, public_path = Path(base + ".key_secret"), Path(base + ".key")
    for path in (secret_path, public_path):
        if path.exists():  # O_EXCL below holds for a race; this keeps a pair from half-written
            raise FileExistsError(17, "File exists", str(path))
    for path, mode, keys in ((secret_path, 0o600, (public, secret)), (public_path, 0o644, (public,))):
        lines = ["#   ZeroMQ CURVE certificate written by sipline keygen",
                 "#   " + ("SECRET: keep it on this node, mode 0600" if len(keys) == 2
                          else "public: give it to the other nodes ([[peer]] public_key_file)"),
                 "", "metadata", "curve", f'    public-key = "{keys[0].decode()}"']  # fmt: skip
        if len(keys) == 2:
            lines.append(f'    secret-key = "{keys[1].decode()}"')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
    return secret_path, public_path, public


def peer_key(public_key: str, public_key_file: str) -> bytes | None:
    """A ``[[peer]]``'s public key, inline or from its file; None when it has none."""
    if public_key:
        return check_key(public_key, "public_key")
    return load_public(public_key_file) if public_key_file else None


# -- ZAP (rule 3) ------------------------------------------------------------------------------


def zap_reply(request: list[bytes], allowed: Mapping[bytes, str]) -> list[bytes] | None:
    """The ZAP reply to ``request`` (the frames after the envelope), or None when it is too
    malformed to answer (no request id). RFC 27: version, request id, domain, address,
    identity, mechanism, credentials."""
    if len(request) < 2 or request[0] != b"1.0":
        return None
    req_id = request[1]
    user = ""
    if len(request) == 7 and request[5] == b"CURVE" and len(request[6]) == 32:
        user = allowed.get(z85.encode(request[6]), "")
    if user:
        return [b"1.0", req_id, b"200", b"OK", user.encode(), b""]
    return [b"1.0", req_id, b"400", b"key not allowed", b"", b""]


class ZapHandler:
    """Rule 3: the allow-list served from the loop; ``on_verdict(accepted, address)`` lets
    the owner count and log handshakes (``address``: the client's IP, as libzmq gives it)."""

    def __init__(self, ctx: zmq.Context[Any], loop: Any, allowed: Mapping[bytes, str],
                 on_verdict: Callable[[bool, str], None] = lambda ok, addr: None) -> None:  # fmt: skip
        self.allowed, self.on_verdict, self.loop = dict(allowed), on_verdict, loop
        sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, ZAP_MAX_BYTES)
        sock.bind(ZAP_ENDPOINT)
        self.sock = sock
        loop.add_reader(sock.FD, self.drain)
        loop.call_soon(self.drain)

    def drain(self) -> None:
        sock = self.sock
        for _ in range(ZAP_DRAIN_LIMIT):
            if sock.closed:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 3 or frames[1] != b"":
                continue
            reply = zap_reply(frames[2:], self.allowed)
            if reply is None:
                continue
            address = frames[5] if len(frames) > 5 else b""
            self.on_verdict(reply[2] == b"200", address[:64].decode("ascii", "replace"))
            try:
                sock.send_multipart([frames[0], b"", *reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the handshake is gone; libzmq times it out
        self.loop.call_soon(self.drain)  # more may wait: the loop's other work first

    def close(self) -> None:
        if not self.sock.closed:
            self.loop.remove_reader(self.sock.FD)
            self.sock.close(linger=0)


def serve_curve(sock: zmq.Socket[Any], keys: KeyPair) -> None:
    """Rule 4: endpoints ``sock`` binds from now on are CURVE servers checked by ZAP."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN


def connect_curve(sock: zmq.Socket[Any], keys: KeyPair, server_key: bytes) -> None:
    """Rule 4: endpoints ``sock`` connects from now on talk CURVE to ``server_key`` only."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_key


# -- from the settings ---------------------------------------------------------------------------


def node_keys(settings: Settings) -> KeyPair | None:
    """This node's pair, or None without ``[curve]`` (the file was checked at load)."""
    path = settings.curve.secret_key_file
    return load_secret(path) if path else None


def allowed(settings: Settings) -> dict[bytes, str]:
    """The allow-list (rule 3): each ``[[peer]]`` public key -> that node's name."""
    out: dict[bytes, str] = {}
    for peer in settings.peer:
        key = peer_key(peer.public_key, peer.public_key_file)
        if key is not None:
            out[key] = peer.name
    return out


def peer_of(settings: Settings, endpoint: str) -> Peer | None:
    """The ``[[peer]]`` whose ``stateplane`` is ``endpoint`` (a ``[stateplane] peers`` entry)."""
    def norm(p: str) -> str:
        return p if p.startswith("tcp://") else os.path.normpath(p)

    return next((p for p in settings.peer if p.stateplane and norm(p.stateplane) == norm(endpoint)),
                None)  # fmt: skip
