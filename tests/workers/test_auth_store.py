"""CredentialStore: file first, then a real redis for users the file lacks, through a bounded
near cache that keeps misses too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conf.settings import AuthRealm
from tests.cachedb.helpers import run
from tests.cachedb.servers import Server
from workers.auth import store as store_mod
from workers.auth.store import CredentialStore
from workers.cachedb import CacheUnavailable, open_cachedb

MD5 = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    s = Server("redis")
    s.start()
    yield s
    s.cleanup()


def realms(tmp_path: Path, url: str) -> list[AuthRealm]:
    (tmp_path / "users").write_text(f"alice MD5 {MD5}\n", encoding="utf-8")
    return [AuthRealm(realm="example.com", credentials_file=str(tmp_path / "users"),
                      cachedb_url=url, cachedb_prefix="t-ha1:")]  # fmt: skip


def test_file_only_answers_without_io(tmp_path: Path) -> None:
    """A realm without cacheDB: known() answers, user or not."""
    s = CredentialStore(realms(tmp_path, ""), 5.0)
    assert s.known("example.com", "MD5", "alice", 0.0) == (True, MD5)
    assert s.known("example.com", "MD5", "bob", 0.0) == (True, None)
    assert s.known("example.com", "SHA-256", "alice", 0.0) == (True, None)
    assert s.lookup_known("example.com", "MD5", "alice") == MD5


def test_cachedb_users_and_near_cache(tmp_path: Path, redis: Server) -> None:
    """bob from redis; a miss is kept; a malformed value or odd username is no HA1."""

    async def body() -> None:
        writer = open_cachedb(redis.url)
        await writer.set("t-ha1:example.com:MD5:bob", MD5.upper().encode())
        await writer.set("t-ha1:example.com:MD5:mallory", b"not hex")
        s = CredentialStore(realms(tmp_path, redis.url), 5.0, open_cachedb)
        assert s.known("example.com", "MD5", "bob", 0.0) == (False, None)
        assert await s.lookup("example.com", "MD5", "bob", 0.0) == MD5
        assert s.known("example.com", "MD5", "bob", 1.0) == (True, MD5)
        assert await s.lookup("example.com", "MD5", "mallory", 0.0) is None
        assert await s.lookup("example.com", "MD5", "carol", 0.0) is None
        await writer.set("t-ha1:example.com:MD5:carol", MD5.encode())
        assert await s.lookup("example.com", "MD5", "carol", 4.0) is None  # the kept miss
        assert await s.lookup("example.com", "MD5", "carol", 6.0) == MD5  # expired: asked again
        assert await s.lookup("example.com", "MD5", "with space", 0.0) is None
        assert await s.lookup("example.com", "MD5", "x" * 300, 0.0) is None
        await s.aclose()
        await writer.close()

    run(body)


def test_near_cache_is_bounded(
    tmp_path: Path, redis: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of usernames never holds more than MAX_CACHED answers."""
    monkeypatch.setattr(store_mod, "MAX_CACHED", 8)

    async def body() -> None:
        s = CredentialStore(realms(tmp_path, redis.url), 5.0, open_cachedb)
        for i in range(30):
            await s.lookup("example.com", "MD5", f"u{i}", 0.0)
            assert len(s._cache) <= 8
        await s.aclose()

    run(body)


def test_cachedb_error_is_raised_and_not_kept(tmp_path: Path) -> None:
    """An unreachable redis raises CacheError; nothing is cached from it."""

    async def body() -> None:
        s = CredentialStore(realms(tmp_path, "redis://127.0.0.1:1/0"), 5.0,
                            lambda url: open_cachedb(url, timeout_s=0.5))  # fmt: skip
        with pytest.raises(CacheUnavailable):
            await s.lookup("example.com", "MD5", "bob", 0.0)
        assert s.known("example.com", "MD5", "bob", 0.0) == (False, None)
        await s.aclose()

    run(body)
