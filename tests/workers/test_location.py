"""Location (workers/registrar/location.py) on every cacheDB backend, each a real server: the node's
stateplane (``local://``), redis-server, a Redis Cluster and memcached, started by
tests/cachedb fixtures."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import pytest

from conf.settings import Registrar as RegistrarConfig
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from tests.cachedb.helpers import CALL_S, eventually, run
from tests.cachedb.servers import Server
from workers.cachedb import CacheDB, CacheError, CacheTimeout, open_cachedb
from workers.registrar import register as reg
from workers.registrar.location import LOCK_PREFIX, LOCK_WAIT_S, Location
from workers.registrar.register import Registrar, Source

_n = itertools.count()
SRC = Source("udp", "192.0.2.7", 40123)
CFG = RegistrarConfig(domains=["example.com"], max_contacts_per_aor=50)
Body = Callable[[Location, CacheDB, str], Awaitable[None]]


def register_bytes(user: str, contacts: tuple[str, ...], *, expires: str | None = None,
                   call_id: str = "c1", cseq: int = 1) -> bytes:  # fmt: skip
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-loc",
        f"From: <sip:{user}@example.com>;tag=ft",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def req(user: str, *contacts: str, **kw: object) -> Request:
    data = register_bytes(user, contacts, **kw)  # type: ignore[arg-type]
    msg = parse_message(data, trusted=True)
    assert isinstance(msg, Request)
    return msg


def with_location(server: Server, body: Body, cfg: RegistrarConfig = CFG,
                  near_ttl_s: float = 0.0, timeout_s: float = CALL_S,
                  lock_wait_s: float = LOCK_WAIT_S) -> None:  # fmt: skip
    """Run ``body(location, raw db, user)`` with a fresh client and a user no other test uses."""
    user = f"u{os.getpid()}-{next(_n)}"

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=timeout_s, run_dir=server.run_dir)
        loc = Location(db, Registrar(cfg), near_cache_ttl_s=near_ttl_s, lock_wait_s=lock_wait_s)
        try:
            await body(loc, db, user)
        finally:
            await loc.close()

    run(main)


def aor(user: str) -> str:
    return f"sip:{user}@example.com"


def test_register_then_lookup(server: Server) -> None:
    """A registered contact is found by its AOR with its source and q, highest q first."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        now = time.time()
        r = await loc.register(req(user, "<sip:a@10.0.0.1>;q=0.2", "<sip:a@10.0.0.2>;q=0.8"),
                               SRC, now)  # fmt: skip
        assert r.status == 200 and r.bad_record is None
        assert sum(h.startswith(b"Contact:") for h in r.headers) == 2
        found = await loc.lookup(aor(user), now + 1)
        assert found.known and found.miss is None
        assert [(c.uri, c.q, c.source) for c in found.contacts] == [
            ("sip:a@10.0.0.2", 0.8, SRC), ("sip:a@10.0.0.1", 0.2, SRC)]  # fmt: skip

    with_location(server, body)


def test_unknown_and_unregistered(server: Server) -> None:
    """No record: 404. After ``*`` with Expires: 0 the AOR is known with no binding: 480."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        now = time.time()
        miss = await loc.lookup(aor(user), now)
        assert (miss.contacts, miss.known) == ([], False)
        assert miss.miss is not None and miss.miss.status == 404
        assert (await loc.register(req(user, "<sip:a@10.0.0.1>"), SRC, now)).status == 200
        r = await loc.register(req(user, "*", expires="0", cseq=2), SRC, now + 1)
        assert r.status == 200
        gone = await loc.lookup(aor(user), now + 2)
        assert gone.known and gone.contacts == []
        assert gone.miss is not None and gone.miss.status == 480

    with_location(server, body)


def test_expiry_then_record_ttl(server: Server) -> None:
    """A binding past its expiry is not returned (480); the key itself goes after the longest
    binding plus record_linger_s (memcached: whole seconds, up to 2 s later)."""
    cfg = RegistrarConfig(domains=["example.com"], min_expires_s=1, default_expires_s=1,
                          record_linger_s=1)  # fmt: skip

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        now = time.time()
        assert (await loc.register(req(user, "<sip:a@10.0.0.1>"), SRC, now)).status == 200
        assert (await loc.lookup(aor(user), now + 0.5)).contacts != []
        later = await loc.lookup(aor(user), now + 1.5)
        assert later.known and later.miss is not None and later.miss.status == 480

        async def forgotten() -> bool:
            return not (await loc.lookup(aor(user), time.time())).known

        await eventually(forgotten, within_s=5.0, step_s=0.1)
        assert time.time() - now >= 2.0 - 0.05

    with_location(server, body, cfg)


#: the burst's last REGISTER waits for the 11 before it, 3 round trips each: past the product's
#: LOCK_WAIT_S on a loaded box (20 ms a round trip). This test is about bindings kept, not the
#: wait's bound, so it waits as long as the run allows
BURST_LOCK_WAIT_S = 8.0


def test_concurrent_uas_on_two_clients_lose_nothing(server: Server) -> None:
    """UAs of one AOR registering at once through two processes' clients: every binding
    survives (the per-AOR lock, location.py rule 3)."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        other = Location(open_cachedb(server.url, timeout_s=CALL_S, run_dir=server.run_dir),
                         Registrar(CFG), lock_wait_s=BURST_LOCK_WAIT_S)  # fmt: skip
        try:
            now = time.time()
            # each client's first call may set up its connections (a cluster client reads the
            # slot map and command table: > 0.5 s on a loaded box), which is not what this
            # test races: that happens before the burst
            for client in (loc, other):
                assert (await client.lookup(aor(user), now)).contacts == []
            calls = [
                (loc if i % 2 else other).register(
                    req(user, f"<sip:a@10.0.1.{i}>", call_id=f"ua{i}"), SRC, now)
                for i in range(12)
            ]  # fmt: skip
            replies = await asyncio.gather(*calls)
            assert [r.status for r in replies] == [200] * 12
            found = await loc.lookup(aor(user), now)
            assert sorted(c.uri for c in found.contacts) == sorted(
                f"sip:a@10.0.1.{i}" for i in range(12))  # fmt: skip
        finally:
            await other.close()

    with_location(server, body, lock_wait_s=BURST_LOCK_WAIT_S)


def test_out_of_order_and_query(server: Server) -> None:
    """A lower CSeq of the same Call-ID is 500 and changes nothing; a query lists bindings."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        now = time.time()
        assert (await loc.register(req(user, "<sip:a@10.0.0.1>", cseq=5), SRC, now)).status == 200
        late = await loc.register(req(user, "<sip:a@10.0.0.1>", expires="0", cseq=4), SRC, now)
        assert late.status == 500
        q = await loc.register(req(user), SRC, now + 10)
        assert q.status == 200
        assert [h for h in q.headers if h.startswith(b"Contact:")] == [
            b"Contact: <sip:a@10.0.0.1>;expires=3590"]  # fmt: skip

    with_location(server, body)


def test_bad_record_reads_as_empty_and_is_replaced(server: Server) -> None:
    """Garbage under an AOR's key is a known AOR with no binding, reported; the next
    REGISTER replaces it."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        key = reg.record_key(aor(user))
        await db.set(key, b"\x93garbage", ttl_s=30)
        now = time.time()
        found = await loc.lookup(aor(user), now)
        assert found.known and found.contacts == [] and found.bad_record is not None
        r = await loc.register(req(user, "<sip:a@10.0.0.1>"), SRC, now)
        assert r.status == 200 and r.bad_record is not None
        assert loc.bad_records == 2
        assert [c.uri for c in (await loc.lookup(aor(user), now)).contacts] == ["sip:a@10.0.0.1"]
        assert reg.decode(await db.get(key) or b"").error is None

    with_location(server, body)


def test_near_cache_may_be_stale_but_never_hides_a_new_aor(server: Server) -> None:
    """Lookups through the near cache may miss another process's change for near_cache_ttl_s,
    but a miss is not cached, and this process's own REGISTER is seen at once."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        other = Location(open_cachedb(server.url, timeout_s=CALL_S, run_dir=server.run_dir),
                         Registrar(CFG), lock_wait_s=BURST_LOCK_WAIT_S)  # fmt: skip
        try:
            now = time.time()
            assert not (await loc.lookup(aor(user), now)).known
            await other.register(req(user, "<sip:a@10.0.0.1>", call_id="x"), SRC, now)
            assert len((await loc.lookup(aor(user), now)).contacts) == 1  # miss not cached
            await other.register(req(user, "<sip:a@10.0.0.2>", call_id="y"), SRC, now)
            assert len((await loc.lookup(aor(user), now)).contacts) == 1  # stale, allowed
            await loc.register(req(user, "<sip:a@10.0.0.3>", call_id="z"), SRC, now)
            assert len((await loc.lookup(aor(user), now)).contacts) == 3  # own write: fresh
        finally:
            await other.close()

    with_location(server, body, near_ttl_s=60.0)


def test_lock_held_elsewhere_is_503(server: Server) -> None:
    """A REGISTER that cannot take its AOR's lock in time fails with CacheTimeout (503)."""

    async def body(loc: Location, db: CacheDB, user: str) -> None:
        key = reg.record_key(aor(user))
        assert await db.add(LOCK_PREFIX + key, b"someone", ttl_s=10)
        with pytest.raises(CacheTimeout) as info:
            await loc.register(req(user, "<sip:a@10.0.0.1>"), SRC, time.time())
        assert info.value.status == 503
        await db.delete(LOCK_PREFIX + key)
        assert (await loc.register(req(user, "<sip:a@10.0.0.1>"), SRC, time.time())).status == 200

    with_location(server, body)


@pytest.mark.parametrize("backend", ["local", "redis", "redis-cluster", "memcached"])
def test_server_down_raises_cache_errors(own_server: Callable[[str], Server],
                                         backend: str) -> None:  # fmt: skip
    """With the server stopped, REGISTER and lookup raise CacheError with status 503, and
    work again once it is back."""
    srv = own_server(backend)

    async def main() -> None:
        db = open_cachedb(srv.url, timeout_s=0.3, run_dir=srv.run_dir)
        loc = Location(db, Registrar(CFG))
        try:
            now = time.time()
            assert (await loc.register(req("down", "<sip:a@10.0.0.1>"), SRC, now)).status == 200
            srv.stop()
            for call in (loc.register(req("down", "<sip:a@10.0.0.2>", cseq=2), SRC, now),
                         loc.lookup(aor("down"), now)):  # fmt: skip
                with pytest.raises(CacheError) as info:
                    await call
                assert info.value.status == 503
            srv.start()
            db.timeout_s = CALL_S  # the server is back: a deadline now, not a measure
            ok = await loc.register(req("down", "<sip:a@10.0.0.2>", cseq=3), SRC, now)
            assert ok.status == 200
        finally:
            await loc.close()

    run(main)


def test_open_from_settings(server: Server) -> None:
    """``Location.open`` builds the client from ``[registrar]``: URL, domains, near cache."""
    cfg = RegistrarConfig(cachedb_url=server.url, near_cache_ttl_s=5.0)

    async def main() -> None:
        loc = Location.open(cfg, ["127.0.0.1"], run_dir=server.run_dir or "", timeout_s=CALL_S)
        try:
            user = f"open{os.getpid()}-{next(_n)}"
            lines = register_bytes(user, ("<sip:a@10.0.0.1>",)).replace(
                b"example.com", b"127.0.0.1")  # fmt: skip
            msg = parse_message(lines, trusted=True)
            assert isinstance(msg, Request)
            now = time.time()
            assert (await loc.register(msg, SRC, now)).status == 200
            found = await loc.lookup(f"sip:{user}@127.0.0.1", now)
            assert [c.uri for c in found.contacts] == ["sip:a@10.0.0.1"]
        finally:
            await loc.close()

    run(main)
