"""PushPipe: batches per loop iteration, bounded backlog, drained in order on POLLOUT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from conf import envelope, sockets
from conf.pipe import PushPipe
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
