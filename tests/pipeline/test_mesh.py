"""conf.mesh, and pike blocks and ratelimit counts shared over it: members found in run
directories (this node's and the peers'), slow joiners answered through the XPUB, bad frames
counted, nothing re-published."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import msgpack
import zmq

from conf.load import from_dict
from conf.mesh import Mesh
from ingress.pikeshare import PikeShare
from ingress.service import Ingress
from tests.pipeline.helpers import run, until
from workers.ratelimit.pipes import RateLimiter
from workers.ratelimit.share import RateShare

PID = os.getpid()


class Member:
    """A mesh member that records what it hears and how often a subscriber joined."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: Path, name: str,
                 peers: tuple[Path, ...] = ()) -> None:  # fmt: skip
        self.heard: list[bytes] = []
        self.joins = 0
        self.mesh = Mesh(ctx, "t", str(run_dir), f"{name}-{PID}",
                         peer_dirs=tuple(map(str, peers)), on_frame=self.heard.append,
                         on_join=self._joined)  # fmt: skip

    def _joined(self) -> None:
        self.joins += 1


def test_members_of_this_node_and_of_peer_nodes(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A member subscribes to its node's others and to the members in its peer directories;
    a member of a node not listed hears nothing from it. Names say which node."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)  # as conf.rundir.prepare makes it at a process's start
    b.mkdir(mode=0o700)

    async def body() -> None:
        a1, a2 = Member(ctx, a, "a1"), Member(ctx, a, "a2")
        b1 = Member(ctx, b, "b1", peers=(a,))
        others: list[Member] = []
        try:
            for m in (a1, a2, b1):
                m.mesh.refresh()
            assert sorted(a1.mesh.members.values()) == [f"a2-{PID}"]
            assert sorted(b1.mesh.members.values()) == [f"{a}:a1-{PID}", f"{a}:a2-{PID}"]
            # probe until both subscriptions are live (the slow joiner; the test's timeout
            # bounds it)
            await until(lambda: a1.mesh.publish(b"hello") and b"hello" in a2.heard
                        and b"hello" in b1.heard)  # fmt: skip
            assert a1.joins >= 1  # the XPUB saw them subscribe
            # node a does not list node b. b2, b1's own node, witnesses that b1's message
            # went out to its subscribers; then a marker published on node a after it must
            # reach both members of a, and what b1 sent them would have come first
            b2 = Member(ctx, b, "b2")
            others.append(b2)
            for m in (b1, b2):
                m.mesh.refresh()
            await until(lambda: b1.mesh.publish(b"from-b") and b"from-b" in b2.heard)
            await until(lambda: a2.mesh.publish(b"marker") and b"marker" in a1.heard)
            await until(lambda: a1.mesh.publish(b"marker") and b"marker" in a2.heard)
            assert b"from-b" not in a1.heard + a2.heard
        finally:
            for m in (a1, a2, b1, *others):
                m.mesh.close()

    run(body)


def test_a_member_gone_is_disconnected(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A member whose socket file went away is dropped at the next refresh."""

    async def body() -> None:
        a1, a2 = Member(ctx, tmp_path, "a1"), Member(ctx, tmp_path, "a2")
        try:
            a1.mesh.refresh()
            assert len(a1.mesh.members) == 1
            a2.mesh.close()
            a1.mesh.refresh()
            assert a1.mesh.members == {}
        finally:
            a1.mesh.close()

    run(body)


def test_bad_pike_frames_are_counted_and_dropped(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Frames that are not ``[src, remaining_s, count]`` cost a count, never a call: an
    infinite, NaN, negative or over-a-day time, a count that is not an integer from 0, a
    source that is not an IP literal."""
    blocks: list[tuple[str, float, int]] = []

    async def body() -> None:
        share = PikeShare(ctx, str(tmp_path), f"i1-{PID}", lambda *b: blocks.append(b),
                          lambda: None)  # fmt: skip
        sender = Member(ctx, tmp_path, "pike-sender")
        try:
            share.mesh._sub.connect(sender.mesh.endpoint)
            odd = [["1.2.3.4", "x", 1], {"a": 1}, ["1.2.3.4", float("inf"), 1],
                   ["1.2.3.4", float("nan"), 1], ["1.2.3.4", 1e9, 1], ["1.2.3.4", -1.0, 1],
                   ["1.2.3.4", True, 1], ["1.2.3.4", 5.0, -1], ["1.2.3.4", 5.0, 1.5],
                   ["example.com", 5.0, 1], [["1.2.3.4"], 5.0, 1]]
            frames = [b"\xc1", *map(msgpack.packb, odd), msgpack.packb(["10.0.0.9", 5.0, 31])]

            def sent_all() -> bool:
                for f in frames:
                    sender.mesh.publish(f)
                return bool(blocks)

            await until(sent_all)
            assert set(blocks) == {("10.0.0.9", 5.0, 31)}
            assert share.bad_frames >= 1 + len(odd)
        finally:
            share.close()
            sender.mesh.close()

    run(body)


def _settings(run_dir: Path, peers: list[Path]) -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return from_dict({
        "node": {"run_dir": str(run_dir)},
        "listen": [{"transport": "udp", "address": "127.0.0.1", "port": port}],
        "pike": {"enabled": True, "cluster": True, "reqs_density_per_unit": 3,
                 "sampling_time_unit_s": 10.0, "remove_latency_s": 60.0},
        "stateplane": {"peers": [str(p) for p in peers]},
    })  # fmt: skip


def test_cluster_block_applied_on_the_peer_node_and_never_republished(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Node a's ingress measures a block; node b's ingress (cluster, peers = [a]) applies it
    as a peer's, and publishes nothing itself, so nothing can loop back to a."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)  # as conf.rundir.prepare makes it at a process's start
    b.mkdir(mode=0o700)

    async def body() -> None:
        ia = Ingress(_settings(a, [b]), f"ingress.a-{PID}", ctx)
        ib = Ingress(_settings(b, [a]), f"ingress.b-{PID}", ctx)
        published: list[tuple[str, float, int]] = []
        assert ib.pike_share is not None and ia.pike_share is not None and ia.pike is not None
        real = ib.pike_share.publish
        ib.pike_share.publish = lambda *m: (published.append(m), real(*m))  # type: ignore[method-assign]
        try:
            ia.heartbeat()
            ib.heartbeat()
            assert ib.pike_share.peers == [f"{a}:ingress.a-{PID}"]
            assert ia.pike_share.peers == [f"{b}:ingress.b-{PID}"]

            def flooded() -> bool:
                for _ in range(5):
                    ia._pike_ok("127.0.0.3", ia.loop.time())
                return "127.0.0.3" in [r["src"] for r in ib._ctl_pike({})["pike"]["blocked"]]

            await until(flooded)
            (row,) = ib._ctl_pike({})["pike"]["blocked"]
            assert row["origin"] == "peer" and row["remaining_s"] > 50
            assert ib.pike is not None and not ib._pike_ok("127.0.0.3", ib.loop.time())
            assert ib._pike_ok("127.0.0.1", ib.loop.time())
            ib._announce_blocks()  # a subscriber joining b hears only b's own blocks: none
            assert published == []
        finally:
            for ing in (ia, ib):
                await ing.close()

    run(body)


def test_rate_share_exchanges_counts_between_nodes(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Two workers of two nodes (peers of each other) sharing a pipe: each one's tick reaches
    the other as its count of the pipe; a bad frame is counted, not applied."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)  # as conf.rundir.prepare makes it at a process's start
    b.mkdir(mode=0o700)

    def share(run_dir: Path, peer: Path, name: str, ctx: zmq.Context[Any]) -> RateShare:
        s = from_dict({"node": {"name": name, "run_dir": str(run_dir)},
                       "ratelimit": [{"name": "p", "algorithm": "sliding", "shared": True}],
                       "stateplane": {"peers": [str(peer)]}})  # fmt: skip
        loop = asyncio.get_running_loop()
        return RateShare(ctx, s, f"worker.1-{PID}", RateLimiter(s.ratelimit), loop.time)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        sa, sb = share(a, b, "na", ctx), share(b, a, "nb", ctx)
        try:
            sa.refresh()
            sb.refresh()
            assert sa.stats()["participants"] == 1
            for _ in range(7):
                sa.limiter.check("p", loop.time())
            pb = sb.limiter.pipes["p"].peers
            assert pb is not None

            def heard() -> bool:
                sa.tick(loop.time())
                return pb.others == 7

            await until(heard)
            sa.mesh.publish(b"not msgpack \xc1")
            await until(lambda: sb.bad_frames == 1)
            assert pb.others == 7
        finally:
            sa.close()
            sb.close()

    run(body)
