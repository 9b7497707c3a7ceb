"""PushPipe: batches per loop iteration, bounded backlog, drained in order on POLLOUT."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
import zmq

from conf import envelope, refused, sockets
from conf.loadstats import LoadMeter
from conf.pipe import PushPipe, drain_pull, hops, oldest_ms
from tests.pipeline.helpers import run, until

META = ["udp", "127.0.0.1", 5080, 0, "127.0.0.1", 5060]


def _pair(
    ctx: zmq.Context[Any], tmp_path: Path, hwm: int, opened: list[zmq.Socket[bytes]]
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    ep = f"ipc://{tmp_path}/p.ipc"
    pull = sockets.bind_pull(ctx, ep, hwm)
    push = sockets.connect_push(ctx, ep, hwm)
    opened += [pull, push]
    return pull, push


def _recv_all(pull: zmq.Socket[bytes]) -> list[envelope.Envelope]:
    out = []
    while True:
        try:
            out.append(envelope.unpack(pull.recv_multipart(zmq.NOBLOCK)))
        except zmq.Again:
            return out


def test_batches_until_flush(
    ctx: zmq.Context[Any], tmp_path: Path, opened: list[zmq.Socket[bytes]]
) -> None:
    """Messages added before a flush leave together, in order, in one multipart message."""

    async def body() -> None:
        pull, push = _pair(ctx, tmp_path, 100, opened)
        pipe = PushPipe("peer", push, envelope.KIND_OUT, lambda m: [m], 64, 1000)
        await until(lambda: bool(push.getsockopt(zmq.EVENTS) & zmq.POLLOUT))
        for i in range(3):
            assert pipe.add(META, b"m%d" % i)
        assert _recv_all(pull) == []
        pipe.flush()
        got: list[envelope.Envelope] = []
        await until(lambda: bool(got.extend(_recv_all(pull)) or got))
        assert len(got) == 1
        assert got[0].payloads == [b"m0", b"m1", b"m2"]

    run(body)


def test_full_batch_leaves_at_once(
    ctx: zmq.Context[Any], tmp_path: Path, opened: list[zmq.Socket[bytes]]
) -> None:
    """Reaching max_batch sends without waiting for the flush."""

    async def body() -> None:
        pull, push = _pair(ctx, tmp_path, 100, opened)
        pipe = PushPipe("peer", push, envelope.KIND_OUT, lambda m: [m], 2, 1000)
        await until(lambda: bool(push.getsockopt(zmq.EVENTS) & zmq.POLLOUT))
        pipe.add(META, b"a")
        pipe.add(META, b"b")
        got: list[envelope.Envelope] = []
        await until(lambda: bool(got.extend(_recv_all(pull)) or got))
        assert got[0].payloads == [b"a", b"b"]
        assert pipe.metas == []

    run(body)


def test_backlog_is_bounded_and_drains_in_order(
    ctx: zmq.Context[Any], tmp_path: Path, opened: list[zmq.Socket[bytes]]
) -> None:
    """A peer that stops reading fills the backlog to its bound, then add() refuses; when the
    peer reads again everything arrives in order."""

    async def body() -> None:
        pull, push = _pair(ctx, tmp_path, 1, opened)
        pull.rcvhwm = 1
        pipe = PushPipe("peer", push, envelope.KIND_OUT, lambda m: [m], 1, 20)
        await until(lambda: bool(push.getsockopt(zmq.EVENTS) & zmq.POLLOUT))
        accepted = 0
        for i in range(200):
            if not pipe.add(META, b"%d" % i):
                break
            accepted += 1
        assert pipe.backlog_msgs == 20
        assert accepted < 200
        received: list[bytes] = []

        def take() -> bool:
            received.extend(p for e in _recv_all(pull) for p in e.payloads)
            return len(received) == accepted

        await until(take)
        assert received == [b"%d" % i for i in range(accepted)]
        await until(lambda: pipe.backlog_msgs == 0 and not pipe.waiting)
        assert pipe.add(META, b"again")

    run(body)


def test_hop_reports_backlog_depth_and_oldest_wait(
    ctx: zmq.Context[Any], tmp_path: Path, opened: list[zmq.Socket[bytes]]
) -> None:
    """Behind a peer that does not read, ``hop`` gives the backlog's depth and the wait of
    its oldest batch (stamped when it joined the backlog); once drained, both are 0 and
    ``sent`` counts every message."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        pull, push = _pair(ctx, tmp_path, 1, opened)
        pull.rcvhwm = 1
        pipe = PushPipe("worker.1-7", push, envelope.KIND_OUT, lambda m: [m], 4, 400)
        await until(lambda: bool(push.getsockopt(zmq.EVENTS) & zmq.POLLOUT))
        assert pipe.hop(loop.time()) == {"queued": 0, "oldest_ms": 0.0, "sent": 0}
        for i in range(200):
            pipe.add(META, b"%d" % i)
        pipe.flush()
        assert pipe.backlog_msgs > 0 and len(pipe.backlog_at) == len(pipe.backlog)
        await asyncio.sleep(0.05)  # the wait being measured, not a synchronisation
        now = loop.time()
        hop = pipe.hop(now)
        # ZeroMQ may have taken a batch or two meanwhile: the oldest left was still batched
        # before the wait
        assert hop["queued"] == pipe.backlog_msgs > 0
        assert hop["oldest_ms"] == round((now - pipe.backlog_at[0]) * 1000, 1) >= 40
        assert list(pipe.backlog_at) == sorted(pipe.backlog_at)
        assert hops([pipe], now) == {"worker.1-7": hop}
        assert oldest_ms({"a": hop, "b": {"queued": 0, "oldest_ms": 0.0, "sent": 0}}) == \
            hop["oldest_ms"]  # fmt: skip
        received: list[bytes] = []

        def take() -> bool:
            received.extend(p for e in _recv_all(pull) for p in e.payloads)
            return len(received) == 200

        await until(take)
        await until(lambda: pipe.backlog_msgs == 0)
        assert pipe.hop(loop.time()) == {"queued": 0, "oldest_ms": 0.0, "sent": 200}
        assert not pipe.backlog_at

    run(body)


def test_hop_rates_per_interval() -> None:
    """``load_stats`` shows each hop's messages per second since the last report; a hop
    gone from the pipes is forgotten."""
    meter = LoadMeter(0.0)
    hop = {"queued": 3, "oldest_ms": 12.5, "sent": 100}
    assert meter.hop_rates({"w1": hop}, 2.0) == {
        "w1": {"queued": 3, "oldest_ms": 12.5, "sent_per_s": 50.0}}
    assert meter.hop_rates({"w1": {**hop, "sent": 160}}, 2.0)["w1"]["sent_per_s"] == 30.0
    assert meter.hop_rates({"w2": {**hop, "sent": 10}}, 1.0)["w2"]["sent_per_s"] == 10.0
    assert meter.hop_rates({"w1": {**hop, "sent": 160}}, 1.0)["w1"]["sent_per_s"] == 160.0


def test_bad_envelopes_are_counted_each_and_logged_once(
    ctx: zmq.Context[Any], tmp_path: Path, opened: list[zmq.Socket[bytes]]
) -> None:
    """200 malformed envelopes among good ones: each counted, the good ones handed on, one
    ``envelope_dropped`` line (``conf/refused.py``), not one per frame."""
    pull, push = _pair(ctx, tmp_path, 1000, opened)
    refused.ENVELOPES._last = float("-inf")  # a fresh interval, whatever ran before
    good = envelope.pack(envelope.KIND_OUT, [[META]], [b"x"])
    for i in range(200):
        push.send_multipart([b"\x01OUT", b"\xc1"] if i % 2 else [b"junk"])
    push.send_multipart(good)
    counters: Counter[str] = Counter()
    got: list[envelope.Envelope] = []

    async def body() -> None:
        await until(lambda: drain_pull(pull, got.append, counters) or bool(got))

    with structlog.testing.capture_logs() as logs:
        run(body)
    assert counters["drop_bad_envelope"] == 200 and len(got) == 1
    assert [e["event"] for e in logs] == ["envelope_dropped"]
