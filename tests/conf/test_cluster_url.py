"""``redis-cluster://`` URLs: what the loader accepts for ``[registrar] cachedb_url`` and the
operator's message for each mistake (conf/cluster_url.py)."""

from __future__ import annotations

import pytest

from conf import cluster_url
from conf.load import ConfigError, from_dict


def registrar(url: str) -> dict[str, object]:
    return {"registrar": {"enabled": True, "cachedb_url": url}}


@pytest.mark.parametrize(
    ("url", "seeds", "user", "password"),
    [
        ("redis-cluster://127.0.0.1:7000", [("127.0.0.1", 7000)], None, None),
        ("redis-cluster://a:7000,b.example:7001/", [("a", 7000), ("b.example", 7001)], None, None),
        (
            "redis-cluster://[::1]:7000,10.0.0.2:7002/0",
            [("::1", 7000), ("10.0.0.2", 7002)],
            None,
            None,
        ),
        ("redis-cluster://:s%40cret@h:1/", [("h", 1)], None, "s@cret"),
        ("redis-cluster://ops:pw@h:65535/", [("h", 65535)], "ops", "pw"),
        ("redis-cluster://pw@h:7000/", [("h", 7000)], None, "pw"),
    ],
)
def test_parse(url: str, seeds: list[tuple[str, int]], user: str | None,
               password: str | None) -> None:  # fmt: skip
    parsed = cluster_url.parse(url)
    assert (list(parsed.seeds), parsed.username, parsed.password) == (seeds, user, password)
    assert from_dict(registrar(url), "t.toml").registrar.cachedb_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis-cluster://h/", "every seed node is host:port"),
        ("redis-cluster://h:7000,/", "every seed node is host:port"),
        ("redis-cluster://h:0/", "port is 1 to 65535"),
        ("redis-cluster://h:70000/", "port is 1 to 65535"),
        ("redis-cluster://h:7x/", "port is 1 to 65535"),
        ("redis-cluster://:7000/", "needs a host"),
        ("redis-cluster://h:7000/1", "only database 0"),
        ("redis-cluster://h:7000/?timeout=1", "no query"),
        ("redis-cluster://::1:7000/", "needs a host"),
        ("redis-cluster://[::1/", "[address]:port"),
        ("redis-cluster://" + ",".join(f"h:{7000 + i}" for i in range(33)), "at most 32"),
    ],
)
def test_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("?", r"\?")):
        cluster_url.parse(url)
    with pytest.raises(ConfigError) as info:
        from_dict(registrar(url), "t.toml")
    assert "registrar.cachedb_url" in str(info.value) and why in str(info.value)


def test_unknown_scheme_lists_the_cluster_form() -> None:
    with pytest.raises(ConfigError, match=r"redis-cluster://host:port\[,host:port\.\.\.\]/"):
        from_dict(registrar("rediscluster://h:1/"), "t.toml")
