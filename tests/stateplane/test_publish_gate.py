"""Updates leave the state plane only while a subscription takes them
(``stateplane/replication.py`` rule 1a), and a joiner still gets its snapshot and every
update after it, with a real ``Replication`` and real sockets."""

from __future__ import annotations

import asyncio

import zmq

from conf import envelope as env
from stateplane import updates as up
from stateplane.replication import Replication

from .test_hostile import (
    Sock,
    ask,
    config,
    dealer,
    publish_calls,
    read_answer,
    replication,
    short_dir,
    until,
)


async def heard(sub: Sock, repl: Replication) -> up.Message:
    """Probe with a ``HUGZ`` until ``sub`` hears one (the slow joiner, no sleep), and return
    the first message it reads after that."""
    p = repl.publisher
    async with asyncio.timeout(5):
        while True:
            repl._publish(up.Hugz(p.node, p.epoch, p.seq))
            try:
                return up.unpack(sub.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                await asyncio.sleep(0.01)  # polling step, bounded by the timeout


def sub_to(ctx: zmq.Context[Sock], run_dir: str, topic: bytes) -> Sock:
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    s.setsockopt(zmq.SUBSCRIBE, topic)
    s.connect(f"ipc://{run_dir}/{env.STATEPLANE_PUB}")
    return s


def test_no_update_is_sent_without_a_subscriber_and_a_joiner_still_gets_them_all() -> None:
    """Updates with no subscriber, or only a HUGZ one, are numbered but not sent; a joiner
    that subscribes then asks gets a snapshot up to that seq, then each later update."""

    async def run() -> None:
        run_dir = short_dir()
        async with replication(config(run_dir)) as (ctx, repl):
            publish_calls(repl, 5)
            hugz_only = sub_to(ctx, run_dir, b"HUGZ")
            await heard(hugz_only, repl)
            publish_calls(repl, 2)
            assert repl.counters["updates_unsent"] == 7 and repl.publisher.seq == 7
            joiner = sub_to(ctx, run_dir, b"")
            assert isinstance(await heard(joiner, repl), up.Hugz)
            snap = dealer(ctx, f"ipc://{run_dir}/{env.STATEPLANE_SNAP}")
            ask(snap, repl, 1)
            assert (await read_answer(snap, 1)).seq == 7
            publish_calls(repl, 3)
            seqs: list[int] = []
            async with asyncio.timeout(5):
                while len(seqs) < 3:
                    try:
                        msg = up.unpack(joiner.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        await asyncio.sleep(0.01)  # polling step, bounded by the timeout
                        continue
                    if isinstance(msg, up.Update):
                        seqs.append(msg.seq)
            assert seqs == [8, 9, 10] and repl.counters["updates_unsent"] == 7
            joiner.close(linger=0)
            await until(lambda: not repl._update_topics)  # the last subscriber gone
            publish_calls(repl, 1)
            assert repl.counters["updates_unsent"] == 8
            for s in (hugz_only, snap):
                s.close(linger=0)

    asyncio.run(run())
