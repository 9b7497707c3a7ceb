"""``redis-cluster://[[user]:password@]host:port[,host:port...][/]``: the seed nodes of a Redis
Cluster, parsed in one place for the configuration check (conf/load.py) and the backend
(workers/cachedb/backend_redis_cluster.py).

Rules:
1. Seeds only: the client asks them for the slot map (``CLUSTER SLOTS``) and learns every other
   node from it, so one reachable seed is enough; listing several lets a start survive one
   being down.
2. A port is required on every seed: a cluster's nodes rarely all sit on 6379, and a silently
   defaulted port is a start that fails far from its cause.
3. No database number (a cluster has only database 0; ``/`` or ``/0`` is accepted), no query:
   redis-py's cluster client would refuse or ignore them, so we refuse them here, at load time.
4. IPv6 seeds are written in brackets: ``[::1]:7000``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

SCHEME = "redis-cluster"
#: a seed list is for bootstrapping, not an inventory of the cluster
MAX_SEEDS = 32


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def parse(url: str) -> ClusterUrl:
    """Raises:
    ValueError: ``url`` breaks a rule above; the message says which.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != SCHEME:
        raise ValueError(f"a Redis Cluster URL starts with {SCHEME}://")
    if "?" in rest or "#" in rest:
        raise ValueError("a Redis Cluster URL takes no query or fragment")
    netloc, slash, path = rest.partition("/")
    if slash and path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: end the URL with / or nothing")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if password is None:  # redis-py reads a lone userinfo as the password (AUTH <pw>)
            username, password = None, unquote(user)
    seeds = tuple(_seed(h) for h in hosts.split(","))
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seed nodes")
    return ClusterUrl(seeds, username, password)


def _seed(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ValueError(f"an IPv6 seed is [address]:port, found {text!r}")
        port = port[1:]
    else:
        host, colon, port = text.partition(":")
        if not colon:
            raise ValueError(f"every seed node is host:port, found {text!r}")
    if not host or any(c.isspace() or c in "/@[]," for c in host):
        raise ValueError(f"a seed node needs a host name or address, found {text!r}")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a seed node's port is 1 to 65535, found {text!r}")
    return host, int(port)
