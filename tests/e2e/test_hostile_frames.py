"""Junk on every ZeroMQ socket of a running node (issue #12; docs/security.md "Overview").

A process that can open the run directory's socket files (the node's user: here the test,
as the node runs as the same user) sends, on every ``*.ipc`` file it finds, with the socket
type that pairs with it: empty frames, garbage bytes, msgpack of the wrong shapes and types
for every envelope kind, multi-part nonsense and one frame over the socket's
``ZMQ_MAXMSGSIZE``; and it joins each PUB/SUB mesh as a member (an XPUB in the run
directory, as a process of the node would bind) and publishes the same junk to its
subscribers. Afterwards no process has stopped or logged a traceback, no exception reached
a process's guard (``errors`` in ``load_stats`` stay empty: each decoder refused its junk
itself), the refusals are counted, and sipp calls complete with none failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from conf import control, envelope, sockets
from stateplane import updates as up

from .conftest import StartNode
from .node import Node, Proc, sipp_uac
from .test_ctl import ctl
from .test_replication import poll

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
Sock = zmq.Socket[bytes]
CALLS = 150


def config(tmp_path: Path) -> str:
    """Every kind of socket a node binds: stateful workers with dialogs and a profile (the
    profiles mesh), replication (the state plane's PUB, snapshot ROUTER and deltas PULL),
    the registrar's kv ROUTER, pike (its mesh) and a shared ratelimit pipe (its mesh)."""
    return f"""
[proxy]
mode = "stateful"

[dialogs]
enabled = true
cdr_file = "{tmp_path / 'cdr.jsonl'}"

[[dialog_profile]]
name = "all"
limit = 100000

[stateplane]
replicate = true

[pike]
enabled = true
sampling_time_unit_s = 1.0
reqs_density_per_unit = 100000

[[ratelimit]]
name = "invites"
algorithm = "sliding"
limit_per_s = 100000
window_s = 1.0
methods = ["INVITE"]
shared = true
"""


#: the socket each file pairs with, by the file's name prefix (conf/sockets.py names); the
#: limit is what the bound socket's ZMQ_MAXMSGSIZE lets through
PAIRS: dict[str, tuple[int, int]] = {
    "ctl-": (zmq.DEALER, control.MAX_FRAME),
    "ingress-": (zmq.PUSH, sockets.MAX_MSG_BYTES),
    "worker-": (zmq.PUSH, sockets.MAX_MSG_BYTES),
    "timers-": (zmq.PUSH, sockets.MAX_MSG_BYTES),
    envelope.STATEPLANE_DELTAS: (zmq.PUSH, sockets.MAX_MSG_BYTES),
    "stateplane-kv.ipc": (zmq.DEALER, 2 << 20),
    envelope.STATEPLANE_SNAP: (zmq.DEALER, 1 << 10),
    envelope.STATEPLANE_PUB: (zmq.XSUB, sockets.MAX_SEND_ONLY_BYTES),
    "pike-": (zmq.XSUB, sockets.MAX_SEND_ONLY_BYTES),
    "profiles-": (zmq.XSUB, sockets.MAX_SEND_ONLY_BYTES),
    "ratelimit-": (zmq.XSUB, sockets.MAX_SEND_ONLY_BYTES),
}
#: the meshes whose members subscribe to any member's XPUB in the run directory, and how
#: many members subscribe to ours (worker=2: two workers; one ingress)
MESHES = {"pike": 1, "profiles": 2, "ratelimit": 2}

#: msgpack values of every type, as whole headers and as the parts of right-shaped ones
ODD: list[Any] = [None, True, 0, -1, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"),
                  "", "x" * 300, b"\xff", [], {}, {"k": [1]}, [[]], [None] * 7]  # fmt: skip
SIP = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _right_shapes(odd: Any) -> Iterator[list[bytes]]:
    """Envelopes of the right shape (conf/envelope.py) with ``odd`` where a value goes."""
    k = envelope
    yield [k.KIND_HB, packb([odd, odd, odd] if isinstance(odd, str) else ["w.1-1", "x", "up"])]
    yield [k.KIND_IN, packb(["ingress.9-9", [[odd] * 7]]), SIP]
    yield [k.KIND_IN, packb([odd, [["udp", "127.0.0.1", 5, 0, "127.0.0.1", 5, odd]]]), SIP]
    yield [k.KIND_OUT, packb([[[odd] * 6]]), SIP]
    yield [k.KIND_OUT, packb([[["udp", odd, odd, odd, odd, odd]]]), SIP]
    yield [k.KIND_OUT, packb([[["tcp", "127.0.0.1", odd, odd, "127.0.0.1", odd]]]), SIP]
    yield [k.KIND_TOPS, packb(["w.1-1", odd, odd, [odd, [odd] * 5], [odd, [odd] * 2]])]
    yield [k.KIND_TIMER, packb(["t.1-1", [[odd] * 6]]), SIP]
    yield [k.KIND_TIMER, packb(["t.1-1", [["f", odd, odd, odd, odd, odd]]]), SIP]
    yield [k.KIND_TIMER, packb(["t.1-1", [["d", "k", "lifetime", 1.0, odd, odd]]]), SIP]
    yield [k.KIND_TIMER, packb(["t.1-1", [["f", odd, "dialog", 1.0, "t.1-1", 1]]]), SIP]
    yield [k.KIND_DELTAS, packb(["w.1-1", [[odd], [odd] * 3, ["u", odd, odd], ["s-"]]])]
    yield [k.KIND_ADOPT, packb(["node-x", [[odd] * 24, [odd]]])]
    yield [k.KIND_ADOPT, packb(["node-x", [[odd] * 24], True])]
    yield [k.KIND_RELEASE, packb(["node-x", [str(odd)[:40]], [str(odd)[:40]]])]
    yield [k.KIND_INGRESSES, packb([["edge", [str(odd)[:80]]], [str(odd)[:40], ["tcp://127.0.0.2:1"]]])]
    yield [k.KIND_LEFT, packb([str(odd)[:80]])]  # a forged one only ends a leaver's wait


def junk() -> list[list[bytes]]:
    """What a hostile local process sends on any socket (the oversize frame apart)."""
    out: list[list[bytes]] = [[b""], [b""] * 5, [os.urandom(300)], [os.urandom(40)] * 9,
                              [b"\xc1"], [b"\x01IN"], [b"\x01IN", b"\xc1"], [b"\x02IN", b"\x90"],
                              [b"ICANHAZ", b"\xc1"], [b"\x01", b"\x00" * 64]]  # fmt: skip
    for kind in sorted(envelope.KINDS):
        for odd in ODD:
            out.append([kind, packb(odd)])
            out.append([kind, packb(odd), SIP, b""])
    for odd in ODD:
        out += _right_shapes(odd)
        out.append([b"", packb({"cmd": odd, "args": odd})])  # ctl requests
        for cmd in ("stats", "dialogs", "destinations", "ratelimit", "pike", "sync", "failback",
                    "nope"):  # verbs that act ignore their args; no failover here to act on
            out.append([b"", packb({"cmd": cmd, "args": {"list": odd}})])
        out.append([b"r1", packb(["get", odd, odd, odd]), b""])  # kv requests
        out.append([b"r1", packb([odd, "k", None, 0]), b"", b"r2"])
        out.append([b"r1", packb(["incr", "k", odd, 1]), b"v"])
        out.append(up.pack(up.Icanhaz("e2e", 1, 0, 0))[:1] + [packb([odd] * 5)])  # snapshot asks
    out.append(up.pack(up.Icanhaz("someone-else", 1, 0, 0)))
    return out


def mesh_junk() -> list[bytes]:
    """One-frame messages for the meshes' decoders (ingress/pikeshare.py, workers/dialogs/limits.py,
    workers/ratelimit/share.py): garbage, and each message's shape with odd values."""
    out = [b"", b"\xc1", os.urandom(200)]
    for odd in ODD:
        out += [packb(odd), packb([odd, odd, odd]), packb(["127.0.0.66", odd, 1]),
                packb(["127.0.0.66", 1.0, odd]), packb([odd, odd, odd, [[odd, odd, odd]]]),
                packb(["w.1-1", "node-x", True, [["all", odd, odd], [odd, "", 1]]]),
                packb(["x/w", [[odd, 1, 1, 1], ["invites", odd, odd, odd]]]), packb([odd, []])]  # fmt: skip
    return out


def send(sock: Sock, frames: list[bytes] | list[bytearray]) -> None:
    """Never blocks: a peer that dropped our connection leaves nothing to queue on."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
    except zmq.Again:
        pass


def pair_of(name: str) -> tuple[int, int]:
    for prefix, pair in PAIRS.items():
        if name.startswith(prefix):
            return pair
    raise AssertionError(f"{name}: a socket file this test does not attack; add it to PAIRS")


def attack_every_socket(ctx: zmq.Context[Sock], run_dir: Path) -> list[str]:
    """Junk, then one oversize frame, on every socket file; the files attacked."""
    names = sorted(p.name for p in run_dir.glob("*.ipc"))
    frames = junk()
    for name in names:
        kind, limit = pair_of(name)
        s = ctx.socket(kind)
        s.linger, s.sndhwm = 2000, 100_000
        s.connect(f"ipc://{run_dir}/{name}")
        for f in frames:
            send(s, f)
            if kind == zmq.XSUB:  # as subscriptions too: 0x01 and a topic
                send(s, [b"\x01" + f[0], *f[1:]])
        s.close()  # linger: what was queued is delivered
        big = ctx.socket(kind)  # a connection of its own: libzmq drops the one that sent it
        big.linger = 2000
        big.connect(f"ipc://{run_dir}/{name}")
        send(big, [bytearray(limit + 1)])
        big.close()
    return names


def publish_to_meshes(ctx: zmq.Context[Sock], run_dir: Path) -> list[Sock]:
    """Join each mesh as a member would (an XPUB at ``<role>-<ident>.ipc``; our pid keeps it
    live) and, once its members subscribed, publish the junk to them."""
    pubs = []
    frames = mesh_junk()
    for role, members in MESHES.items():
        pub = ctx.socket(zmq.XPUB)
        pub.linger, pub.sndhwm = 0, 100_000
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        sockets.bind(pub, sockets.endpoint(str(run_dir), role, f"rogue-{os.getpid()}"))
        pubs.append(pub)
        joined, end = 0, time.monotonic() + 10
        while joined < members and time.monotonic() < end:
            if pub.poll(200):  # members connect at their next heartbeat
                joined += pub.recv()[:1] == b"\x01"
        assert joined >= members, f"{role}: {joined} of {members} members subscribed"
        for f in frames:
            send(pub, [f])
        pub.send(b"x" * (1 << 21), zmq.NOBLOCK)  # past every mesh SUB's MAXMSGSIZE
    return pubs


def latest(node: Node) -> dict[str, dict[str, Any]]:
    """Each process's latest ``load_stats`` line."""
    out: dict[str, dict[str, Any]] = {}
    for ev in node.proc.events("load_stats"):
        out[str(ev["proc"])] = ev
    return out


def drops_counted(node: Node, procs: tuple[str, ...]) -> bool:
    """Every process named ``proc*`` counted bad envelopes in its latest ``load_stats``."""
    lines = latest(node)
    return all(any(p.startswith(want) and (lines[p].get("drops") or {}).get(
        "drop_bad_envelope", 0) > 0 for p in lines) for want in procs)  # fmt: skip


def with_traceback(node: Node) -> list[str]:
    """Log events that carry an exception (``log.exception``, the guard's): their names."""
    out = []
    for line in list(node.proc.lines):
        brace = line.find("{")
        if brace >= 0 and '"exception"' in line:
            try:
                ev = json.loads(line[brace:])
            except ValueError:
                continue
            if ev.get("exception"):
                out.append(f"{ev.get('proc')}:{ev.get('event')}")
    return out


def by_role(node: Node) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for reply in ctl(node.conf, "stats")["stats"]:  # type: ignore[attr-defined]
        out.setdefault(str(reply.get("role")), []).append(reply)
    return out


def test_junk_on_every_socket_is_refused_and_calls_complete(start_node: StartNode, uas: Uas,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """Every socket file of a node gets junk and an oversize frame, every mesh gets junk
    from a member: nothing stops, no traceback, no exception reaches a guard, the refusals
    are counted, and 150 sipp calls then complete with 0 failed."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2", config(tmp_path))
    ctx: zmq.Context[Sock] = zmq.Context()
    pubs: list[Sock] = []
    try:
        names = attack_every_socket(ctx, node.run_dir)
        for prefix in PAIRS:  # the config made every kind of socket
            assert any(n.startswith(prefix) for n in names), (prefix, names)
        pubs = publish_to_meshes(ctx, node.run_dir)
        assert poll(lambda: drops_counted(node, ("ingress", "worker.1", "worker.2",
                                                     "timers")), 10), latest(node)  # fmt: skip
        assert poll(lambda: _all_refused(node), 10), by_role(node)
        pike, _ = control.ask(str(node.run_dir), "pike", timeout_s=5)  # the replies as sent
        assert [r["pike"]["bad_frames"] > 0 for r in pike if "pike" in r] == [True], pike
        shares, _ = control.ask(str(node.run_dir), "ratelimit", timeout_s=5)
        assert [r["share"]["bad_frames"] > 0 for r in shares if "share" in r] == [True] * 2, shares
        res = sipp_uac(node.port, "u1", CALLS, 100, tmp_path, timeout_s=60)
        assert (res.successful, res.failed) == (CALLS, 0), res.output
        # a guard that caught anything is a decoder that let junk through
        assert not node.proc.events("exception_caught"), node.proc.events("exception_caught")
        assert all(not ev.get("errors") for ev in latest(node).values()), latest(node)
        assert "Traceback" not in node.proc.text(), node.proc.text()[-4000:]  # a raw crash
        assert not with_traceback(node), with_traceback(node)  # any logged exception
        assert " stopped (rc=" not in node.proc.text(), node.proc.text()[-4000:]
        # thousands of frames refused, a few lines logged (conf/refused.py)
        per_proc: dict[str, int] = {}
        for ev in node.proc.events("envelope_dropped") + node.proc.events("kv_bad_request"):
            per_proc[f"{ev['proc']}:{ev['event']}"] = per_proc.get(f"{ev['proc']}:{ev['event']}", 0) + 1
        assert per_proc and max(per_proc.values()) <= 3, per_proc
    finally:
        for s in pubs:
            s.close(linger=0)
        ctx.destroy(linger=0)


def _all_refused(node: Node) -> bool:
    """The state plane, the meshes and the control sockets counted what they refused."""
    roles = by_role(node)
    (sp,) = roles["stateplane"]
    workers = roles["worker"]
    return (
        int(sp["stateplane"].get("drop_bad_envelope", 0)) > 0
        and int(sp["stateplane"].get("bad_ask", 0)) > 0
        and int(sp["kv"].get("bad_request", 0)) > 0
        and len(workers) == 2
        and all(int(w["limits"]["bad_frames"]) > 0 for w in workers)
    )
