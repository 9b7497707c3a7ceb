"""HA1 lookups for a worker: each realm's credentials file in memory, then its cacheDB.

Rules:
1. The file tables are read once, when the worker starts (``conf.load`` has validated them);
   a lookup there is a dict get.
2. A realm with a ``cachedb_url`` is asked for users its file does not list. Answers, a
   missing user included, are kept ``cache_s`` seconds in a table of at most ``MAX_CACHED``
   entries that starts over when full: usernames are the peer's choice, so the table must
   not grow with them. A cacheDB error is not an answer and is not kept.
3. ``lookup`` never raises but ``CacheError`` (the caller answers 500/503 as for any
   cacheDB failure, ``docs/cachedb.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from conf.credfile import Table, load_file
from conf.settings import AuthRealm
from workers.auth.credentials import CacheKeys, ha1_from_value
from workers.cachedb.interface import CacheDB

#: cacheDB answers kept at most (rule 2)
MAX_CACHED = 10_000

Key = tuple[str, str, str]  # (realm, algorithm, username)


class CredentialStore:
    __slots__ = ("_cache", "_cache_s", "_dbs", "_files", "_keys")

    def __init__(self, realms: list[AuthRealm], cache_s: float,
                 open_db: Callable[[str], CacheDB] | None = None) -> None:  # fmt: skip
        self._files: dict[str, Table] = {
            r.realm: load_file(r.credentials_file) if r.credentials_file else {} for r in realms
        }
        self._keys = {
            r.realm: CacheKeys(r.cachedb_prefix, r.realm) for r in realms if r.cachedb_url
        }
        self._dbs: dict[str, CacheDB] = {}
        if open_db is not None:
            for r in realms:
                if r.cachedb_url:
                    self._dbs[r.realm] = open_db(r.cachedb_url)
        self._cache_s = cache_s
        self._cache: dict[Key, tuple[float, str | None]] = {}

    def replace_files(self, files: dict[str, Table]) -> None:
        """The credentials files as a reload read them again (``workers/routing/reload.py``);
        realms are not added nor removed by a reload."""
        self._files = {realm: files.get(realm, {}) for realm in self._files}

    def known(
        self, realm: str, algorithm: str, username: str, now: float
    ) -> tuple[bool, str | None]:
        """(True, HA1 or None) when the answer is at hand (file or near cache), else (False,
        None): the cacheDB is to be asked with ``lookup``."""
        ha1 = self._files.get(realm, {}).get((username, algorithm))
        if ha1 is not None or realm not in self._dbs:
            return True, ha1
        hit = self._cache.get((realm, algorithm, username))
        if hit is not None and hit[0] > now:
            return True, hit[1]
        return False, None

    async def lookup(self, realm: str, algorithm: str, username: str, now: float) -> str | None:
        """The HA1 of the user (rule 2).

        Raises:
            CacheError: the cacheDB failed or timed out.
        """
        found, ha1 = self.known(realm, algorithm, username, now)
        if found:
            return ha1
        key = self._keys[realm].key(algorithm, username)
        ha1 = None if key is None else ha1_from_value(await self._dbs[realm].get(key), algorithm)
        if self._cache_s > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[(realm, algorithm, username)] = (now + self._cache_s, ha1)
        return ha1

    def lookup_known(self, realm: str, algorithm: str, username: str) -> str | None:
        """The file's answer only (a ``gate.Lookup``), for paths with no cacheDB."""
        return self._files.get(realm, {}).get((username, algorithm))

    @property
    def uses_cachedb(self) -> bool:
        return bool(self._dbs)

    async def aclose(self) -> None:
        for db in self._dbs.values():
            await db.close()
