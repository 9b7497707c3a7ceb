"""Reload without restart: re-read the configuration and its tables, check all of it, then
hand the worker one new routing object (docs/operations.md, "Reload without restart").

Sans-IO apart from reading the files it is named: no sockets, no clock (``now`` is passed),
no logging; ``workers/service.py`` calls it from its control channel and its SIGHUP handler.

Rules:
1. Validate first, swap second. ``prepare`` reads the file through ``conf.load`` (every check
   of a start), refuses a change to any key outside ``RELOADABLE`` (``ConfigError`` naming the
   key: it needs a restart), then builds the whole new ``RoutingTable`` (prefix CSVs, and
   the cacheDB tables read again within ``CACHEDB_RELOAD_S``) and the credentials tables. Any error raises ``ReloadRefused`` with the operator's message (file,
   key or line, expected, found) and nothing is swapped: the worker keeps what it runs.
2. A ``Routing`` is immutable once built, and the worker holds one reference to it, swapped
   between two messages (the control channel and SIGHUP run on the worker's event loop,
   never inside a batch): a message is routed wholly by the old or wholly by the new one.
3. Calls in progress keep what they started with: a transaction holds its ``Route`` and
   ``DispatchSet`` objects, not their names, so failover and failure routing go on over the
   sets it started with; in-dialog requests follow Record-Route and the remote target, not
   the table (RFC 3261 §16.12).
4. Destination state carries over at the swap (``commit``, ``Dispatcher.inherit``): each
   destination still listed in its set (same set name and URI) keeps its health object, so
   its probe state and the operator's inactive mark; a set whose table did not change also
   keeps its round-robin turn and sticky choices. Probes in flight to kept destinations are
   still awaited. Old sets that calls in progress hold share those health objects.
5. Across the node's workers ``sipline ctl reload`` runs two phases: every worker prepares and
   answers the digest of what it read; only when all answered the same digest does the client
   commit, and a worker commits only the candidate of that digest, prepared less than
   ``PREPARED_TTL_S`` ago. The generation the client gives is one more than the highest any
   worker ran, so ``ctl stats`` shows the same number on every worker that took it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conf.credfile import CredentialsFileError, Table, load_file
from conf.load import ConfigError, load
from conf.settings import Mode, Settings
from workers.cachedb import CacheError
from workers.routing.dispatcher import Dispatcher
from workers.routing.prefix_csv import PrefixFileError
from workers.routing.prefix_route import read_all
from workers.routing.table import RoutingTable

#: the top-level keys a reload may change (docs/operations.md lists them); any other change
#: needs a restart. ``[[auth_realm]]`` is not among them, yet its credentials files are re-read.
RELOADABLE = frozenset({"route", "destination_set", "trusted", "prefix_table"})
#: a prepared candidate older than this is not committed: the client that asked went away,
#: and the files may have changed since (a 1M-prefix table loads in a few seconds)
PREPARED_TTL_S = 60.0
#: how long a reload waits for the cacheDB of a ``[[prefix_table]] cachedb_key`` (retries
#: included) before it is refused; under ``PREPARE_TIMEOUT_S`` of sipline/reload.py
CACHEDB_RELOAD_S = 5.0


class ReloadRefused(Exception):
    """The new configuration cannot be taken; ``str()`` is the operator's message."""


@dataclass(frozen=True, slots=True)
class Routing:
    """Everything a worker routes with that a reload may change (rule 2)."""

    generation: int
    digest: str
    settings: Settings
    table: RoutingTable
    #: realm -> the credentials file's table (``[[auth_realm]] credentials_file``)
    credentials: dict[str, Table]
    #: route name -> "stateless" or "stateful" (a route's ``mode``, else ``[proxy] mode``)
    route_modes: dict[str, Mode] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``ctl reload`` and ``ctl stats`` show of it."""
        s = self.settings
        return {"generation": self.generation, "digest": self.digest, "routes": len(s.route),
                "destination_sets": len(s.destination_set), "trusted": len(s.trusted),
                "prefix_tables": len(s.prefix_table)}  # fmt: skip


def digest(settings: Settings, cached: Mapping[str, str] | None = None) -> str:
    """A short hash of the configuration file, every table file it names and the SHA-256 of
    each cacheDB table read (``cached``, by key): two workers that read the same bytes agree
    on it (rule 5); a push between two workers' reads makes them disagree."""
    h = hashlib.blake2b(digest_size=8)
    paths = [settings.source, *(t.file for t in settings.prefix_table),
             *(r.credentials_file for r in settings.auth_realm if r.credentials_file)]
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
        try:
            h.update(Path(p).read_bytes())
        except OSError:
            h.update(b"\0unreadable")  # the file named by a default config, or gone since
    for key, sha in sorted((cached or {}).items()):
        h.update(f"cachedb:{key}\0{sha}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def route_modes(settings: Settings) -> dict[str, Mode]:
    return {r.name: r.mode or settings.proxy.mode for r in settings.route}


def initial(settings: Settings, table: RoutingTable) -> Routing:
    """The routing a worker started with, as generation 0 (credentials as its store read them)."""
    return Routing(0, digest(settings), settings, table, {}, route_modes(settings))


def changed_keys(old: object, new: object, prefix: str = "") -> Iterator[str]:
    """Dotted keys (``node.run_dir``, ``listen[1].port``) whose values differ; at the top level
    the ``RELOADABLE`` sections and ``source`` are skipped."""
    assert dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new)
    for f in dataclasses.fields(old):
        if not prefix and (f.name in RELOADABLE or f.name == "source"):
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            yield from changed_keys(a, b, key + ".")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
                        yield from changed_keys(x, y, f"{key}[{i}].")
                    else:
                        yield f"{key}[{i}]"
        else:
            yield key


def _value(obj: object, key: str) -> object:
    """The value at a dotted key of ``changed_keys`` (for the message)."""
    for part in key.split("."):
        name, _, index = part.partition("[")
        obj = getattr(obj, name)
        if index:
            obj = obj[int(index.rstrip("]"))]  # type: ignore[index]
    return obj


def check_restart_keys(old: Settings, new: Settings, stateful: bool) -> None:
    """Refuse what a running worker cannot take (rule 1).

    Args:
        stateful: the worker runs the stateful core; without it no route may become
            stateful and no destination set may start probing (its answers need the core).

    Raises:
        ConfigError: naming the first key that needs a restart.
    """
    for key in changed_keys(old, new):
        raise ConfigError(new.source, key, f"{_value(old, key)!r} as the node runs with it "
                          "(this key needs a restart)", _value(new, key))  # fmt: skip
    if stateful:
        return
    for i, r in enumerate(new.route):
        if (r.mode or new.proxy.mode) == "stateful":
            raise ConfigError(new.source, f"route[{i}].mode", "\"stateless\": the workers run "
                              "without the stateful core (restart to add a stateful route)",
                              "stateful")  # fmt: skip
    for i, ds in enumerate(new.destination_set):
        if ds.probe_interval_s > 0:
            raise ConfigError(new.source, f"destination_set[{i}].probe_interval_s", "0: the "
                              "workers run without the stateful core that takes probe answers "
                              "(restart to start probing)", ds.probe_interval_s)  # fmt: skip


def commit(candidate: Routing, current: Routing, generation: int) -> Routing:
    """``candidate`` as generation ``generation``, with the destination state of ``current``
    moved in (rule 4). Call it at the swap: until then ``current`` goes on changing."""
    candidate.table.dispatcher.inherit(current.table.dispatcher)
    return dataclasses.replace(candidate, generation=generation)


def prepare(path: str, current: Routing, stateful: bool,
            new_dispatcher: Callable[[Settings], Dispatcher]) -> Routing:  # fmt: skip
    """The routing the files at ``path`` describe, checked whole (rule 1); generation not set
    (the caller commits it with ``dataclasses.replace``). ``current`` is not touched.

    Raises:
        ReloadRefused: the message says which file, key (or line) and what was expected.
    """
    try:
        new = load(path)
        check_restart_keys(current.settings, new, stateful)
        credentials = {r.realm: load_file(r.credentials_file)
                       for r in new.auth_realm if r.credentials_file}  # fmt: skip
        cached: dict[str, str] = {}
        prefixes = read_all(new, CACHEDB_RELOAD_S, cached)
        dispatcher = new_dispatcher(new)
        table = RoutingTable(new, dispatcher, prefixes)
    except (ConfigError, PrefixFileError, CredentialsFileError) as exc:
        raise ReloadRefused(str(exc)) from exc
    except CacheError as exc:
        raise ReloadRefused(f"prefix table cacheDB: {exc}") from exc
    return Routing(current.generation, digest(new, cached), new, table, credentials,
                   route_modes(new))  # fmt: skip


@dataclass(slots=True)
class Candidate:
    """A prepared routing waiting for its commit (rule 5): one per worker at most."""

    routing: Routing
    prepared_at: float

    def committable(self, want_digest: str, now: float) -> str | None:
        """None when it may be committed as ``want_digest``, else why not."""
        if self.routing.digest != want_digest:
            return (f"prepared digest {self.routing.digest}, asked to commit {want_digest}: "
                    "the files changed between the workers' reads")  # fmt: skip
        if now - self.prepared_at > PREPARED_TTL_S:
            return f"prepared {now - self.prepared_at:.0f} s ago (more than {PREPARED_TTL_S:.0f} s)"
        return None
