"""The state plane connects to a peer's run directory only once it may be trusted
(stateplane/replication.py rule 8): a directory others could write might hold a forger's PUB."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import structlog
import uvloop
import zmq

from conf import envelope as env
from conf.load import from_dict
from stateplane import updates as up
from stateplane.replication import Replication


async def _until(pred: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():
            await asyncio.sleep(0.01)  # polling step, bounded by the timeout


def test_hostile_peer_directory_is_not_connected(tmp_path: Path) -> None:
    """A peer run directory anyone can write is refused (counted, logged once) and its PUB
    never heard; closed to others, it is connected at the next heartbeat and heard."""
    own, peer = tmp_path / "a", tmp_path / "b"
    own.mkdir(mode=0o700)
    peer.mkdir()
    os.chmod(peer, 0o777)
    settings = from_dict({"node": {"name": "a", "run_dir": str(own)},
                          "dialogs": {"enabled": True},
                          "stateplane": {"replicate": True, "peers": [str(peer)]}})  # fmt: skip

    async def body() -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        forger = ctx.socket(zmq.PUB)
        forger.linger = 0
        forger.bind(f"ipc://{peer}/{env.STATEPLANE_PUB}")
        with structlog.testing.capture_logs() as logs:
            repl = Replication(ctx, settings)
        p = repl.peers[0]
        try:
            with structlog.testing.capture_logs() as later:
                for _ in range(20):
                    repl.heartbeat()
                    forger.send_multipart(up.pack(up.Hugz("b", 1, 0)))
                    await asyncio.sleep(0.01)  # a Hugz that must not be heard
            assert not p.connected and p.replica is None
            assert p.counters["peer_dir_refused"] == 21  # at start and at each heartbeat
            assert [e["event"] for e in logs].count("peer_dir_refused") == 1  # at once
            assert [e["event"] for e in later].count("peer_dir_refused") == 0  # then bounded
            os.chmod(peer, 0o700)
            repl.heartbeat()
            assert p.connected

            def heard() -> bool:
                forger.send_multipart(up.pack(up.Hugz("b", 1, 0)))
                return p.replica is not None

            await _until(heard)
        finally:
            repl.close()
            forger.close()
            ctx.destroy(linger=0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())
