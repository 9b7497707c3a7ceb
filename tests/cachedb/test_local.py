"""The ``local://`` backend end to end: the stateplane's ROUTER adapter in process on a tmp
ipc path, and two OS processes sharing one store through ``python -m stateplane.main``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from stateplane import kv
from stateplane.main import KvServer
from tests.cachedb.helpers import CALL_S, TIMEOUT_S, eventually, run
from tests.cachedb.servers import ROOT, Server
from workers.cachedb import CacheError, CacheFull, open_cachedb
from workers.cachedb.backend_local import LocalCacheDB


@pytest.fixture
def run_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sl-kvt-") as d:
        yield d


def test_full_store_answers_cache_full(run_dir: str, ctx: zmq.Context[Any]) -> None:
    """A store at max_keys under ``refuse`` makes the client raise CacheFull (503)."""

    async def main() -> None:
        store = kv.KvStore(kv.KvLimits(max_keys=2, on_full="refuse"))
        server = KvServer(ctx, kv.endpoint(run_dir), store)
        db = open_cachedb("local://", run_dir=run_dir, ctx=ctx)
        try:
            await db.set("a", b"1")
            await db.set("b", b"1")
            with pytest.raises(CacheFull) as info:
                await db.set("c", b"1")
            assert info.value.status == 503
            with pytest.raises(CacheFull):
                await db.incr("d")
            await db.set("a", b"2")  # replacing needs no room
            assert server.counters["refused_full"] == 2
        finally:
            await db.close()
            server.close()

    run(main)


def test_garbage_gets_bad_request_and_server_lives(run_dir: str, ctx: zmq.Context[Any]) -> None:
    """Undecodable requests get ``bad_request`` echoing their first frame as the request id;
    the server keeps serving."""

    async def main() -> None:
        server = KvServer(ctx, kv.endpoint(run_dir), kv.KvStore())
        raw = ctx.socket(zmq.DEALER)
        raw.linger = 0
        raw.connect(kv.endpoint(run_dir))
        db = open_cachedb("local://", run_dir=run_dir, ctx=ctx)
        replies: list[tuple[bytes, str]] = []

        async def two_replies() -> bool:
            while raw.poll(0):
                replies.append(kv.unpack_reply(raw.recv_multipart())[:2])
            return len(replies) == 2

        try:
            raw.send_multipart([b"only-a-rid"])
            raw.send_multipart([b"rid1", b"\xc1", b""])
            await eventually(two_replies, within_s=2.0)
            assert replies == [(b"only-a-rid", "bad_request"), (b"rid1", "bad_request")]
            await db.set("k", b"v")
            assert await db.get("k") == b"v"
            assert server.counters["bad_request"] == 2
        finally:
            raw.close(linger=0)
            await db.close()
            server.close()

    run(main)


def test_one_message_carries_a_batch(run_dir: str, ctx: zmq.Context[Any]) -> None:
    """A message of several requests gets one message of their replies, in order, a bad one
    among them answered ``bad_request`` without disturbing the others."""

    async def main() -> None:
        server = KvServer(ctx, kv.endpoint(run_dir), kv.KvStore())
        raw = ctx.socket(zmq.DEALER)
        raw.linger = 0
        raw.connect(kv.endpoint(run_dir))
        try:
            raw.send_multipart(
                [
                    *kv.pack_request(b"r1", kv.Request("set", "k", None, 0, b"v")),
                    b"r2",
                    b"\xc1",
                    b"",
                    *kv.pack_request(b"r3", kv.Request("get", "k", None, 0, b"")),
                ]
            )

            async def answered() -> bool:
                return bool(raw.poll(0))

            await eventually(answered, within_s=2.0)
            frames = raw.recv_multipart()
            replies = [kv.unpack_reply(frames[i : i + 3]) for i in range(0, len(frames), 3)]
            assert replies == [
                (b"r1", "ok", None, b""),
                (b"r2", "bad_request", None, b""),
                (b"r3", "ok", None, b"v"),
            ]
        finally:
            raw.close(linger=0)
            server.close()

    run(main)


def test_timed_out_replies_are_dropped(run_dir: str, ctx: zmq.Context[Any]) -> None:
    """A reply arriving after its call timed out is counted and never given to another call."""

    async def main() -> None:
        ep = kv.endpoint(run_dir)
        router = ctx.socket(zmq.ROUTER)  # a server that answers only when the test says so
        router.linger = 0
        router.bind(ep)
        # only the "slow" call's deadline is short: the others' are deadlines, not measures
        db = LocalCacheDB(ep, ctx=ctx, timeout_s=CALL_S)

        async def asked() -> bool:
            return bool(router.poll(0))

        async def answered(key: str, value: bytes) -> bytes | None:
            call = asyncio.ensure_future(db.get(key))
            await eventually(asked, within_s=CALL_S)
            ident, rid, _, _ = router.recv_multipart()
            router.send_multipart([ident, *kv.pack_reply(rid, "ok", None, value)])
            return await call

        try:
            # connected first: a call made before the pipe is up fails as "no stateplane"
            # once its share of the deadline passes (backend_local.py rule 4), never sent
            assert await answered("warm", b"w") == b"w"
            db.timeout_s = 0.3
            with pytest.raises(CacheError):
                await db.get("slow")
            db.timeout_s = CALL_S
            await eventually(asked, within_s=CALL_S)
            ident, rid, _, _ = router.recv_multipart()
            router.send_multipart([ident, *kv.pack_reply(rid, "ok", None, b"stale")])
            assert await answered("k", b"fresh") == b"fresh"
            assert db.late_replies == 1
        finally:
            router.close(linger=0)
            await db.close()

    run(main)


CHILD = """
import asyncio, sys
from workers.cachedb import open_cachedb

async def main():
    db = open_cachedb("local://", run_dir=sys.argv[1], timeout_s=float(sys.argv[2]))
    await db.incr("shared", 5)  # before the write the parent waits for: it reads the sum then
    await db.set("from-child", b"hello parent")
    async with asyncio.timeout(float(sys.argv[3])):
        while await db.get("from-parent") != b"hello child":
            await asyncio.sleep(0.01)
    await db.close()

asyncio.run(main())
"""


def test_two_processes_share_the_store(own_server: Any) -> None:
    """Two OS processes on one node see each other's writes through ``python -m
    stateplane.main`` (a separate process itself)."""
    server: Server = own_server("local")
    assert server.run_dir is not None
    # deadlines, not measures: the child's start-up alone (imports, the compiled build) took
    # seconds on a loaded 2-core box
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.run_dir, str(CALL_S),
                              str(TIMEOUT_S)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=CALL_S)
        try:
            await db.incr("shared", 1)

            async def child_wrote() -> bool:
                return await db.get("from-child") == b"hello parent"

            await eventually(child_wrote, within_s=TIMEOUT_S / 2)
            await db.set("from-parent", b"hello child")
            assert await db.incr("shared", 0) == 6
        finally:
            await db.close()

    try:
        run(main)
        assert child.wait(TIMEOUT_S) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
