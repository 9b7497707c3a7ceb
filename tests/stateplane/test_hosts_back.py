"""A worker of another host that the edge dropped and took back between two of our state
plane's heartbeats is a joiner all the same (``stateplane/handover.py`` rule 2): our workers
saw it leave and come back (a ring change reaches them at once) and let go of the calls of
its Call-IDs they started meanwhile, and that worker waits for our ``HANDED``
(``workers/dialogs/owners.py`` rule 7). Real state plane of host b, J (host c's worker) as
a CURVE PULL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conf import envelope as env
from dialogstate.hosts import host_source

from .test_hosts_keep import WB, J, pair, run


def test_a_worker_out_and_back_between_two_heartbeats_is_handed_to_again() -> None:
    """J joins b's view and is told ``HANDED`` once WB let go; then WB's ring deltas take
    J out and put it back before b's next heartbeat, with WB's ``y`` for it: b's next
    heartbeat tells J ``HANDED`` again (no dialogs to hand: that is said all the same).
    Without the change b's view is the same at both heartbeats and J hears nothing."""

    async def body(tmp: Path) -> None:
        async with pair(tmp) as p:
            h, loop = p.b.handover, asyncio.get_running_loop()

            def deltas(*ds: list[object]) -> None:
                p.b._on_deltas(env.pack(env.KIND_DELTAS, [WB, list(ds)]))

            h.track(loop.time())  # J is new: it waits for WB's "y"
            deltas(["y", WB, J])
            h.track(loop.time())
            (first,) = await p.j_tcp.read(1)
            assert first.kind == env.KIND_HANDED and first.header == [host_source("b"), J]

            deltas(["ring", WB, []])  # the edge dropped J ...
            deltas(["ring", WB, [[J, p.j_tcp.endpoint]]], ["y", WB, J])  # ... and took it back
            h.track(loop.time())
            (again,) = await p.j_tcp.read(1)
            assert again.kind == env.KIND_HANDED and again.header == [host_source("b"), J]

    run(body)
