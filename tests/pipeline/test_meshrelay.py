"""stateplane/meshrelay.py with real sockets: node A's relay between its local pike and
profiles meshes and a peer host B played by the test over CURVE on 127.0.0.1. What A's
processes publish reaches B; what B sends reaches A's processes only when it speaks for B;
a stranger's key hears nothing; B subscribing in a loop makes A's processes re-announce at
most once per interval."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import msgpack
import zmq

from conf import curve
from conf.mesh import Mesh
from conf.settings import Dialogs, Node, Peer, Pike, Settings, StatePlane
from stateplane.meshrelay import MeshRelay
from tests.e2e.node import free_run
from tests.pipeline.helpers import run, until

PID = os.getpid()
HOST = "127.0.0.1"


def pack(msg: Any) -> bytes:
    return bytes(msgpack.packb(msg))


def test_relay_to_a_peer_host(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "a"
    run_dir.mkdir(mode=0o700)
    a_keys, b_keys, stranger = (curve.KeyPair(*zmq.curve_keypair()) for _ in range(3))
    port_a, port_b = free_run(HOST), free_run(HOST)
    peer = f"tcp://{HOST}:{port_b}"
    settings = Settings(node=Node(name="node-a", run_dir=str(run_dir)),
                        pike=Pike(enabled=True, cluster=True),
                        dialogs=Dialogs(enabled=True, profiles_cluster=True),
                        stateplane=StatePlane(peers=[peer], bind=f"{HOST}:{port_a}"),
                        peer=[Peer(name="node-b", stateplane=peer, public_key=b_keys.public.decode())])  # fmt: skip
    # node B's side has its own context: A's ZAP handler would judge B's server sockets too
    b_ctx: zmq.Context[Any] = zmq.Context()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        refused: list[str] = []
        zap = curve.ZapHandler(ctx, loop, {b_keys.public: "node-b"},
                               lambda ok, addr: None if ok else refused.append(addr))  # fmt: skip
        relay = MeshRelay(ctx, settings, a_keys)
        heard: dict[str, list[bytes]] = {"pike": [], "profiles": []}
        joins = [0]
        members = {role: Mesh(ctx, role, str(run_dir), f"ingress.1-{PID}", on_frame=heard[role].append,
                              on_join=lambda: joins.__setitem__(0, joins[0] + 1))
                   for role in heard}  # fmt: skip
        b_pub = b_ctx.socket(zmq.XPUB)
        curve.serve_curve(b_pub, b_keys)
        b_pub.bind(f"tcp://{HOST}:{port_b + 2}")
        subs = {}
        for name, keys in (("b", b_keys), ("stranger", stranger)):
            s = b_ctx.socket(zmq.SUB)
            curve.connect_curve(s, keys, a_keys.public)
            for topic in (b"pike", b"profiles"):  # as a peer's relay subscribes
                s.setsockopt(zmq.SUBSCRIBE, topic)
            s.connect(f"tcp://{HOST}:{port_a + 2}")
            subs[name] = s
        try:
            relay.refresh()
            for m in members.values():
                m.refresh()
            block = pack(["192.0.2.7", 30.0, 120])

            def b_got(frames: list[bytes]) -> bool:
                members["pike"].publish(block)
                try:
                    return subs["b"].recv_multipart(zmq.NOBLOCK) == frames
                except zmq.Again:
                    return False

            # A's ingress -> A's relay -> B, as [role, frame] (probed: the slow joiners)
            await until(lambda: b_got([b"pike", block]), step_s=0.01)
            # B -> A's relay -> A's ingress, and B's counts when they name B
            await until(lambda: b_pub.send_multipart([b"pike", block]) or block in heard["pike"],
                        step_s=0.01)  # fmt: skip
            own = pack(["worker.1-9", "node-b", True, [["trunk", "", 2]]])
            forged = pack(["worker.1-9", "node-a", True, [["trunk", "", 9]]])
            b_pub.send_multipart([b"profiles", forged])
            b_pub.send_multipart([b"pike", b"x" * 600])  # over the pike cap
            await until(lambda: b_pub.send_multipart([b"profiles", own]) or own in heard["profiles"],
                        step_s=0.01)  # fmt: skip
            st = relay.stats()
            assert forged not in heard["profiles"] and st["refused_wrong_node"] == 1, st
            assert st["refused_size"] == 1 and st["peers"]["node-b"]["heard"] >= 3, st
            # the stranger's handshake was refused: it heard none of what B heard
            await until(lambda: bool(refused))
            try:
                subs["stranger"].recv_multipart(zmq.NOBLOCK)
                raise AssertionError("a stranger's key heard the relay")
            except zmq.Again:
                pass
            # B subscribing in a loop: A's members re-announce at most twice (one at once,
            # one deferred), not once per subscription
            await until(lambda: relay.stats()["rejoin_pending"] == 0)
            before, joined = relay.stats().get("peer_joins", 0), joins[0]
            for _ in range(50):
                subs["b"].setsockopt(zmq.UNSUBSCRIBE, b"pike")
                subs["b"].setsockopt(zmq.SUBSCRIBE, b"pike")
            await until(lambda: relay.stats().get("peer_joins", 0) > before)
            await until(lambda: relay.stats()["rejoin_pending"] == 0)
            assert 1 <= relay.stats()["peer_joins"] - before <= 2, relay.stats()
            await until(lambda: joins[0] > joined)  # A's member saw the relay subscribe again
        finally:
            for s in (b_pub, *subs.values()):
                s.close(linger=0)
            for m in members.values():
                m.close()
            relay.close()
            zap.close()

    try:
        run(body, timeout_s=10)
    finally:
        b_ctx.destroy(linger=0)
