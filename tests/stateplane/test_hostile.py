"""The state plane's network peers (docs/security.md "Network peers of the state plane"):
who may ask for snapshots and how often (``stateplane/asks.py``), frame bounds, the peer
name check, and CURVE on the TCP channel, with a real ``Replication`` and real sockets."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from conf import curve
from conf import envelope as env
from conf.load import from_dict
from stateplane import asks
from stateplane import updates as up
from stateplane.asks import AskGate
from stateplane.peer import Reader
from stateplane.replication import Replication

from ..e2e.node import free_run
from ..workers.dialog_helpers import Call, table

Sock = zmq.Socket[bytes]

# -- asks.py, sans-IO -------------------------------------------------------------------------


def test_asks_are_admitted_in_a_burst_then_at_the_rate() -> None:
    """Rule 2: ``burst`` asks at once, then one per 1/rate seconds."""
    gate = AskGate(0.0, rate_per_s=2.0, burst=3, max_answers=100)
    assert [gate.admit(0.0, 0, False) for _ in range(4)] == ["", "", "", "rate"]
    assert gate.admit(0.4, 0, False) == "rate"
    assert gate.admit(0.5, 0, False) == ""
    assert gate.admit(100.0, 0, False) == "" and gate.admit(100.0, 0, False) == ""
    assert [gate.admit(100.0, 0, False) for _ in range(2)] == ["", "rate"]  # capped at burst


def test_asks_over_the_answers_in_progress_are_refused_but_a_replacement_is_not() -> None:
    """Rules 1 and 2: a new asker needs a place; one replacing its own answer does not."""
    gate = AskGate(0.0, burst=10, max_answers=2)
    assert gate.admit(0.0, 2, False) == "busy"
    assert gate.admit(0.0, 2, True) == ""


def test_an_answer_idle_or_stalled_is_told_by_its_last_send() -> None:
    assert not asks.idle(10.0, 10.0 + asks.IDLE_S) and asks.idle(10.0, 10.01 + asks.IDLE_S)
    assert not asks.stalled(10.0, 10.0 + asks.STALL_S) and asks.stalled(10.0, 10.01 + asks.STALL_S)


# -- frame bounds (updates.py rule 5) ---------------------------------------------------------


def body(*fields: Any) -> bytes:
    return bytes(msgpack.packb([up.VERSION, *fields]))


@pytest.mark.parametrize(("kind", "data", "reason"), [
    (b"HUGZ", b"\xc4\x00" + b"\x00" * up.MAX_UPDATE_BYTES, "more than"),
    (b"UPD", b"\x00" * (up.MAX_UPDATE_BYTES + 1), "more than"),
    (b"KVSYNC", b"\x00" * (up.MAX_FRAME_BYTES + 1), "more than"),
    (b"UPD", body("node-b", 1, 1, "dialog", [[]] * (up.MAX_ARRAY_LEN + 1)), "max_array_len"),
    (b"KVSYNC", body("node-b", 1, [()] * (up.MAX_ARRAY_LEN + 1)), "max_array_len"),
    (b"HUGZ", body("node-b", 1, 1, {str(i): i for i in range(up.MAX_MAP_LEN + 1)}),
     "max_map_len"),
    (b"UPD", b"\xdd\xff\xff\xff\xff", "not msgpack"),  # an array of 4 G entries, claimed
], ids=["hugz-size", "upd-size", "chunk-size", "wide-array", "wide-chunk", "wide-map", "claimed"])  # fmt: skip
def test_a_frame_past_its_bounds_is_refused_before_it_costs_memory(kind: bytes, data: bytes,
                                                                   reason: str) -> None:  # fmt: skip
    with pytest.raises(up.UpdateError, match=reason):
        up.unpack([kind, data])


def test_a_chunk_may_be_as_large_as_a_chunk_is() -> None:
    """The per-kind bound leaves a real chunk of 1 000 records alone (each with Record-Route
    sets of three proxies a side)."""
    t = table(max_dialogs=2000)
    hops = [f"<sip:proxy{i}.carrier.example.net;lr;transport=udp>" for i in range(3)]
    for n in range(1000):
        Call(n, up=hops, down=hops).start(t)
    records = t.snapshot(1000.0, 1_700_000_000.0)
    frames = up.pack(up.Chunk("node-b", 1, records))
    assert up.MAX_UPDATE_BYTES < len(frames[1]) < up.MAX_FRAME_BYTES
    assert len(up.unpack(frames).records) == 1000  # type: ignore[union-attr]


def test_a_reader_outlives_whatever_its_handler_raises() -> None:
    """Rule 5 of replication.py: a handler's exception costs that message only."""
    asyncio.run(_reader_survives())


async def _reader_survives() -> None:
    ctx: zmq.Context[Sock] = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    seen: list[bytes] = []

    def handler(frames: list[bytes]) -> None:
        seen.append(frames[0])
        if frames[0] == b"boom":
            raise RuntimeError("a bug")

    reader = Reader(asyncio.get_running_loop(), pull, handler)
    for f in (b"boom", b"after"):
        push.send(f)
    async with asyncio.timeout(5):
        while len(seen) < 2:
            await asyncio.sleep(0.01)  # polling step
    assert seen == [b"boom", b"after"] and reader.errors == 1
    reader.close()
    push.close(linger=0)
    ctx.term()


# -- a real Replication -----------------------------------------------------------------------


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (the state plane binds both), from below the
    ephemeral range (tests/e2e/node.py)."""
    return free_run("127.0.0.1", 2)


def short_dir() -> str:
    """A run directory short enough for ipc paths (tmp_path is too long)."""
    return tempfile.mkdtemp(prefix="sp", dir="/tmp")


def config(run_dir: str, **stateplane: Any) -> dict[str, Any]:
    return {"node": {"name": "node-a", "run_dir": run_dir}, "dialogs": {"enabled": True},
            "proxy": {"mode": "stateful"}, "stateplane": {"replicate": True, **stateplane}}  # fmt: skip


@asynccontextmanager
async def replication(data: dict[str, Any]) -> AsyncIterator[tuple[zmq.Context[Sock], Replication]]:
    ctx: zmq.Context[Sock] = zmq.Context()
    repl = Replication(ctx, from_dict(data))
    try:
        async with asyncio.timeout(20):
            yield ctx, repl
    finally:
        repl.close()
        ctx.destroy(linger=0)


def publish_calls(repl: Replication, n: int) -> None:
    """``n`` new calls as one worker's DLT batch: ``n`` updates in the publisher's backlog."""
    t = table(max_dialogs=n + 10)
    for i in range(n):
        Call(i).start(t)
        if i % 1000 == 999 or i == n - 1:  # a DLT header is at most 1 MiB
            repl._on_deltas(env.pack(env.KIND_DELTAS, ["worker.1-1", t.take_deltas()]))


def dealer(ctx: zmq.Context[Sock], ep: str, rcvhwm: int = 1000,
           keys: curve.KeyPair | None = None, server: bytes | None = None) -> Sock:  # fmt: skip
    d = ctx.socket(zmq.DEALER)
    d.linger, d.rcvhwm = 0, rcvhwm
    if keys is not None and server is not None:
        curve.connect_curve(d, keys, server)
    d.connect(ep)
    return d


def ask(sock: Sock, repl: Replication, req: int, seq: int = 0) -> None:
    p = repl.publisher
    sock.send_multipart(up.pack(up.Icanhaz(p.node, req, p.epoch, seq)))


async def until(what: Callable[[], bool], deadline_s: float = 5.0) -> None:
    async with asyncio.timeout(deadline_s):
        while not what():
            await asyncio.sleep(0.01)  # polling step, bounded by the deadline


async def read_answer(sock: Sock, req: int) -> up.Kthxbai:
    """Read ``sock`` until the ``KTHXBAI`` of ``req``."""
    while True:
        try:
            msg = up.unpack(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            await asyncio.sleep(0.005)  # polling step; the caller's timeout bounds it
            continue
        if isinstance(msg, up.Kthxbai) and msg.req == req:
            return msg


def test_an_asker_that_never_reads_holds_up_no_one_and_is_dropped(monkeypatch: Any) -> None:
    """Rules 1 and 3 of asks.py: an asker that never reads its 5 000-update answer does not
    delay a reader's whole answer, and loses its own once its pipe stays full."""
    monkeypatch.setattr(asks, "STALL_S", 0.5)

    async def run() -> None:
        run_dir = short_dir()
        async with replication(config(run_dir)) as (ctx, repl):
            publish_calls(repl, 5000)
            ep = f"ipc://{run_dir}/{env.STATEPLANE_SNAP}"
            hostile, good = dealer(ctx, ep, rcvhwm=1), dealer(ctx, ep)
            ask(hostile, repl, 1)
            await until(lambda: repl.counters["snapshots"] == 1)
            ask(good, repl, 2)
            done = await read_answer(good, 2)
            assert (done.full, done.count) == (False, 5000)
            # The reader's answer leaves the table one loop turn after its last message, which
            # may be the same turn the hostile one stalls in: wait for both.
            await until(lambda: repl.counters["asker_stalled"] == 1 and not repl.answers)
            for s in (hostile, good):
                s.close(linger=0)

    asyncio.run(run())


def test_one_answer_per_asker_and_a_cap_on_asks(monkeypatch: Any) -> None:
    """Rules 1 and 2: a second ask from the same asker replaces its answer; a flood of asks
    from new connections is refused past the cap, and the node still answers afterwards."""

    async def run() -> None:
        run_dir = short_dir()
        async with replication(config(run_dir)) as (ctx, repl):
            publish_calls(repl, 3000)
            ep = f"ipc://{run_dir}/{env.STATEPLANE_SNAP}"
            same = dealer(ctx, ep, rcvhwm=1)
            ask(same, repl, 1)
            ask(same, repl, 2)
            await until(lambda: repl.counters["snapshots"] == 2)
            assert repl.counters["ask_replaced"] == 1 and len(repl.answers) == 1
            flood = [dealer(ctx, ep, rcvhwm=1) for _ in range(30)]
            for i, s in enumerate(flood):
                ask(s, repl, 10 + i)
            await until(lambda: repl.counters["snapshots"] + repl.counters["ask_refused_busy"]
                        + repl.counters["ask_refused_rate"] == 32)  # fmt: skip
            assert len(repl.answers) <= asks.MAX_ANSWERS
            assert repl.counters["snapshots"] <= asks.ASK_BURST
            for s in (same, *flood):
                s.close(linger=0)

    asyncio.run(run())


def test_oversize_and_malformed_asks_leave_the_snapshot_server_serving() -> None:
    """ZMQ_MAXMSGSIZE drops a 2 MiB ask's connection; garbage is counted; a good ask after
    both is answered."""

    async def run() -> None:
        run_dir = short_dir()
        async with replication(config(run_dir)) as (ctx, repl):
            ep = f"ipc://{run_dir}/{env.STATEPLANE_SNAP}"
            bad = dealer(ctx, ep)
            bad.send_multipart([b"ICANHAZ", b"\x90" * (2 << 20)])
            bad.send_multipart([b"ICANHAZ", b"\xc1"])
            bad2 = dealer(ctx, ep)
            bad2.send_multipart([b"ICANHAZ", b"\xc1"])
            bad2.send_multipart([b"NOPE"])
            await until(lambda: repl.counters["bad_ask"] == 2)
            good = dealer(ctx, ep)
            ask(good, repl, 1)
            await read_answer(good, 1)
            for s in (bad, bad2, good):
                s.close(linger=0)

    asyncio.run(run())


def test_a_peer_is_heard_only_under_its_configured_name() -> None:
    """Rule 8: heartbeats and updates claiming another node than the ``[[peer]]`` name are
    counted and dropped; the peer's own make its replica and its first snapshot ask."""

    async def run() -> None:
        run_dir, peer_dir = short_dir(), short_dir()
        data = config(run_dir, peers=[peer_dir])
        data["peer"] = [{"name": "node-b", "stateplane": peer_dir}]
        async with replication(data) as (ctx, repl):
            pub = ctx.socket(zmq.PUB)
            pub.bind(f"ipc://{peer_dir}/{env.STATEPLANE_PUB}")
            router = ctx.socket(zmq.ROUTER)
            router.bind(f"ipc://{peer_dir}/{env.STATEPLANE_SNAP}")
            peer = repl.peers[0]
            forged = [up.Hugz("node-x", 9, 0, ""), up.Hugz("node-a", 9, 0, ""),
                      up.Update("node-x", 9, 1, "dialog", ["t", "c", "f", "bye", "proxy", 1.0])]  # fmt: skip
            await until(lambda: _send_all(pub, forged) and peer.counters["wrong_node"] >= 3)
            assert peer.replica is None and peer.node == "node-b"
            await until(lambda: _send_all(pub, [up.Hugz("node-b", 9, 0, "")])
                        and peer.replica is not None)  # fmt: skip
            assert peer.replica is not None and peer.replica.node == "node-b"
            await until(lambda: _has_ask(router))
            pub.close(linger=0)
            router.close(linger=0)

    asyncio.run(run())


def test_a_peer_without_a_name_is_held_to_the_first_it_says() -> None:
    """Rule 8 for a run directory listed without ``[[peer]]``: our own name never sticks, the
    first other name does, and every other name after it is dropped."""

    async def run() -> None:
        run_dir, peer_dir = short_dir(), short_dir()
        async with replication(config(run_dir, peers=[peer_dir])) as (ctx, repl):
            pub = ctx.socket(zmq.PUB)
            pub.bind(f"ipc://{peer_dir}/{env.STATEPLANE_PUB}")
            peer = repl.peers[0]
            await until(lambda: _send_all(pub, [up.Hugz("node-a", 9, 0, "")])
                        and peer.counters["wrong_node"] >= 1)  # fmt: skip
            assert peer.node is None
            await until(lambda: _send_all(pub, [up.Hugz("node-c", 9, 0, "")])
                        and peer.replica is not None)  # fmt: skip
            before = peer.counters["wrong_node"]
            await until(lambda: _send_all(pub, [up.Hugz("node-x", 9, 0, "")])
                        and peer.counters["wrong_node"] > before)  # fmt: skip
            assert peer.node == "node-c" and peer.replica is not None
            assert peer.replica.node == "node-c"
            pub.close(linger=0)

    asyncio.run(run())


def _send_all(pub: Sock, msgs: list[Any]) -> bool:
    for m in msgs:
        pub.send_multipart(up.pack(m))
    return True


def _has_ask(router: Sock) -> bool:
    try:
        frames = router.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return False
    return isinstance(up.unpack(frames[1:]), up.Icanhaz)


def test_over_tcp_with_curve_only_listed_keys_subscribe_or_ask(tmp_path: Path) -> None:
    """Rule 7: the PUB and the snapshot ROUTER on tcp admit the ``[[peer]]`` key only: a
    stranger's key and a keyless client hear no heartbeat and get no answer, while the listed
    key hears both; the ipc endpoints stay keyless."""

    async def run() -> None:
        run_dir, port = short_dir(), free_port_pair()
        a_secret, _, _ = curve.keygen(str(tmp_path / "a"))
        b_secret, b_public, _ = curve.keygen(str(tmp_path / "b"))
        data = config(run_dir, bind=f"127.0.0.1:{port}", peers=["tcp://127.0.0.1:1"])
        data["curve"] = {"secret_key_file": str(a_secret)}
        data["peer"] = [{"name": "node-b", "stateplane": "tcp://127.0.0.1:1",
                         "public_key_file": str(b_public)}]  # fmt: skip
        async with replication(data) as (ctx, repl):
            a, b = curve.load_secret(str(a_secret)), curve.load_secret(str(b_secret))
            stranger = curve.KeyPair(*zmq.curve_keypair())
            subs = {name: _sub(ctx, f"tcp://127.0.0.1:{port}", keys, a.public)
                    for name, keys in (("b", b), ("stranger", stranger), ("keyless", None))}
            subs["ipc"] = _sub(ctx, f"ipc://{run_dir}/{env.STATEPLANE_PUB}", None, a.public)
            heard: set[str] = set()

            def beat() -> bool:
                repl._publish(repl.publisher.hugz(""))
                for name, s in subs.items():
                    try:
                        s.recv_multipart(zmq.NOBLOCK)
                        heard.add(name)
                    except zmq.Again:
                        pass
                return heard >= {"b", "ipc"}

            await until(beat)
            snap = f"tcp://127.0.0.1:{port + 1}"
            askers = {"b": dealer(ctx, snap, keys=b, server=a.public),
                      "stranger": dealer(ctx, snap, keys=stranger, server=a.public),
                      "keyless": dealer(ctx, snap)}  # fmt: skip
            for i, s in enumerate(askers.values()):
                ask(s, repl, i + 1)
            await read_answer(askers["b"], 1)
            await until(lambda: repl.counters["curve_refused"] >= 2)
            for _ in range(20):
                beat()
                await asyncio.sleep(0.01)  # more heartbeats a stranger must not hear
            assert heard == {"b", "ipc"}
            for name in ("stranger", "keyless"):
                with pytest.raises(zmq.Again):
                    askers[name].recv_multipart(zmq.NOBLOCK)
            assert repl.counters["snapshots"] == 1
            for s in (*subs.values(), *askers.values()):
                s.close(linger=0)

    asyncio.run(run())


def _sub(ctx: zmq.Context[Sock], ep: str, keys: curve.KeyPair | None, server: bytes) -> Sock:
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    s.setsockopt(zmq.SUBSCRIBE, b"")
    if keys is not None:
        curve.connect_curve(s, keys, server)
    s.connect(ep)
    return s


def test_a_cluster_member_hears_members_only_and_takes_its_address() -> None:
    """role = "member" with real sockets: HUGZ claiming a node other than the ``[[peer]]``
    are dropped (``wrong_node``), a view list that is not one or is too long is a malformed
    message, strangers' names inside a member's lists are dropped (``not_member``, a claim:
    ``bad_claims``); node-b and
    node-c heard, node-a settles and takes its own address only (``failover`` roles), and
    puts its view in its own HUGZ."""
    from stateplane.quorum import MAX_MEMBERS, SETTLE_HEARTBEATS

    async def run() -> None:
        run_dir, dirs = short_dir(), [short_dir(), short_dir()]
        data = config(run_dir, peers=dirs, role="member", heartbeat_ms=50,
                      members=["node-a", "node-b", "node-c"])  # fmt: skip
        data["listen"] = [
            {"transport": "udp", "address": "127.0.0.20", "virtual": True},
            {"transport": "udp", "address": "127.0.0.21", "virtual": True, "standby": True},
            {"transport": "udp", "address": "127.0.0.1", "port": 5070}]  # fmt: skip
        data["peer"] = [{"name": "node-b", "stateplane": dirs[0], "virtual": ["127.0.0.21"]},
                        {"name": "node-c", "stateplane": dirs[1]}]  # fmt: skip
        async with replication(data) as (ctx, repl):
            pubs = []
            for d in dirs:
                pub = ctx.socket(zmq.PUB)
                pub.bind(f"ipc://{d}/{env.STATEPLANE_PUB}")
                pubs.append(pub)
            sub = ctx.socket(zmq.SUB)
            sub.subscribe(b"")
            sub.connect(f"ipc://{run_dir}/{env.STATEPLANE_PUB}")
            b, c = repl.peers
            view = (("node-a", "node-b", "node-c"), (), (("node-a", 1),))
            forged = [up.Hugz("node-x", 9, 0, "", *view), up.Hugz("node-c", 9, 0, "", *view)]
            await until(lambda: _send_all(pubs[0], forged) and b.counters["wrong_node"] >= 2)
            bad = up.pack(up.Hugz("node-b", 9, 0, "", *view))
            body = msgpack.unpackb(bad[1])
            for wrong in ({"a": 1}, ["node-a"] * (MAX_MEMBERS + 1)):
                body[5] = wrong
                pubs[0].send_multipart([bad[0], msgpack.packb(body)])
            await until(lambda: b.counters["bad_message"] >= 2)
            fo = repl.failover
            assert fo is not None and fo.state("127.0.0.20").value == "primary"
            strangers = (("node-a", "node-b", "node-c", "node-x"), ("node-y",), (("node-a", 1),),
                         (("node-x", "node-b", 9, 1),))  # fmt: skip

            def beat() -> bool:
                _send_all(pubs[0], [up.Hugz("node-b", 9, 0, "", *strangers)])
                _send_all(pubs[1], [up.Hugz("node-c", 9, 0, "", *view)])
                return fo.state("127.0.0.20").value == "active"

            await until(beat, 5 + SETTLE_HEARTBEATS * 0.05)
            assert fo.state("127.0.0.21").value == "backup"  # node-b's: never taken
            stats = fo.stats()
            assert stats["holds"] == ("node-a",) and stats["not_member"] >= 2, stats
            assert stats["bad_claims"] >= 1, stats
            assert c.counters["wrong_node"] == 0

            def ours() -> bool:
                try:
                    msg = up.unpack(sub.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    return False
                return isinstance(msg, up.Hugz) and msg.holds == ("node-a",)

            await until(lambda: beat() and ours())
            assert "127.0.0.20=active" in fo.role
            for s in (*pubs, sub):
                s.close(linger=0)

    asyncio.run(run())
