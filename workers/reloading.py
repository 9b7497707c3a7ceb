"""A worker's side of reloads and of the operator's destination marks: the control verbs, the
SIGHUP path and their log lines, over the sans-IO ``workers/routing/reload.py``.

Rules:
1. Verbs (conf/control.py; the socket's file mode is the credential, rule 4):
   ``reload_prepare`` reads and checks everything and keeps one candidate (a second prepare
   replaces it; memory holds at most two routings); ``reload_commit {digest, generation}``
   swaps it in when the digest matches; ``reload_abort`` drops it. ``destination_state
   {set, uri, state}`` marks one destination inactive or active in this worker.
2. A refusal is an answer (``"reload": "refused"`` with the message), never an exception, and
   one ``reload_refused`` log line with the same message (file, key, expected, found).
3. SIGHUP (``reload_now``) prepares and commits at once, as generation current + 1: nothing
   coordinates it with the other workers (docs/operations.md says how far that holds).
4. Arguments are the client's: each is checked for type and size before use.
5. Reading runs off the event loop (``offload``: a thread in the worker), so calls go on
   being routed, by the current routing, while a big prefix table loads; one read at a time
   (a second prepare or SIGHUP meanwhile is refused). What the read built is taken, and the
   swap made, back on the loop. ``prepare`` only reads ``current.settings``, which nothing
   changes, and builds new objects: nothing is shared with the loop until the swap.
6. The operator's marks outlive a worker (``workers/routing/marks.py``): ``sipline ctl``
   writes them to the run directory before it asks the workers; a worker takes the file's
   marks at start (``apply_marks``, right after its control socket is bound) and at each
   swap, so a worker started after a mark, or a destination a reload brought back, has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from conf.control import Handler
from conf.settings import Settings
from workers.routing import marks
from workers.routing.dispatcher import Dispatcher
from workers.routing.reload import Candidate, ReloadRefused, Routing, commit, prepare
from workers.routing.table import RoutingTable

#: a generation beyond this or a digest/name longer than this is a forged request (rule 4)
MAX_GENERATION = 1 << 62
MAX_ARG = 1024
#: the operator's words for a destination's mark, and the dispatcher's inputs for them
STATES = ("inactive", "active")

log = structlog.get_logger()

#: ``offload(work, then)``: run ``work()`` somewhere, then ``then(its result)`` on the loop;
#: answers ``then``'s result, or a future of it (rule 5)
Offload = Callable[[Callable[[], Any], Callable[[Any], dict[str, Any]]],
                   "dict[str, Any] | asyncio.Future[dict[str, Any]]"]  # fmt: skip


def inline(work: Callable[[], Any], then: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Rule 5 without a thread (tests, tools): ``work`` runs here and now."""
    return then(work())


def in_thread(loop: asyncio.AbstractEventLoop) -> Offload:
    """Rule 5 in a worker: ``work`` in the loop's default executor, ``then`` on the loop."""

    def offload(work: Callable[[], Any],
                then: Callable[[Any], dict[str, Any]]) -> asyncio.Future[dict[str, Any]]:  # fmt: skip
        out: asyncio.Future[dict[str, Any]] = loop.create_future()

        def done(f: asyncio.Future[Any]) -> None:
            try:
                out.set_result(then(f.result()))
            except Exception as exc:  # noqa: BLE001 - answered as a failed handler (control rule 5)
                out.set_exception(exc)

        loop.run_in_executor(None, work).add_done_callback(done)
        return out

    return offload


class Reloader:
    """Holds the worker's current ``Routing`` and hands each new one to ``apply``."""

    def __init__(self, routing: Routing, stateful: bool,
                 new_dispatcher: Callable[[Settings], Dispatcher],
                 apply: Callable[[Routing], None], clock: Callable[[], float],
                 offload: Offload = inline) -> None:  # fmt: skip
        self.current = routing
        self.candidate: Candidate | None = None
        self._offload = offload
        #: a read is running (rule 5)
        self.reading = False
        self._stateful = stateful
        self._new_dispatcher = new_dispatcher
        self._apply = apply
        self._clock = clock

    @property
    def table(self) -> RoutingTable:
        return self.current.table

    def handlers(self) -> dict[str, Handler]:
        return {"reload_prepare": self._prepare, "reload_commit": self._commit,
                "reload_abort": self._abort, "destination_state": self._destination_state}  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return self.current.summary()

    def reload_now(self) -> None:
        """SIGHUP (rule 3): read, then swap in what was read if it is good."""
        if self.reading:
            log.error("reload_refused", error="a reload is being read already",
                      generation=self.current.generation)  # fmt: skip
            return
        self.reading = True
        self._offload(self._read, self._hup_read)

    def _hup_read(self, found: Routing | ReloadRefused) -> dict[str, Any]:
        self.reading = False
        if isinstance(found, ReloadRefused):
            return self._refused(str(found))
        self.candidate = None  # a ctl reload prepared before this HUP read is older: not taken
        self._swap(found, self.current.generation + 1)
        return {"reload": "committed", **self.current.summary()}

    def _read(self) -> Routing | ReloadRefused:
        """Off the loop (rule 5): the new routing, or why not."""
        try:
            return prepare(self.current.settings.source, self.current, self._stateful,
                           self._new_dispatcher)  # fmt: skip
        except ReloadRefused as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a bug in a check must not leave ``reading`` set
            return ReloadRefused(f"the new configuration could not be built: {exc!r}")

    def _refused(self, why: str) -> dict[str, Any]:
        log.error("reload_refused", error=why, generation=self.current.generation)
        return {"reload": "refused", "error": why, "generation": self.current.generation}

    def _prepare(self, _: dict[str, Any]) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        if self.reading:
            return self._refused("a reload is being read already")
        self.candidate = None  # the old one goes first: never two candidates in memory
        self.reading = True
        return self._offload(self._read, self._prepared)

    def _prepared(self, found: Routing | ReloadRefused) -> dict[str, Any]:
        self.reading = False
        if isinstance(found, ReloadRefused):
            return self._refused(str(found))
        self.candidate = Candidate(found, self._clock())
        return {"reload": "prepared", **found.summary(), "generation": self.current.generation}

    def _commit(self, args: dict[str, Any]) -> dict[str, Any]:
        want, generation = args.get("digest"), args.get("generation")
        if not isinstance(want, str) or len(want) > MAX_ARG or not isinstance(generation, int) \
                or not 0 < generation < MAX_GENERATION:  # fmt: skip
            return {"reload": "refused", "error": "commit needs a digest and a generation"}
        c, self.candidate = self.candidate, None
        why = "nothing prepared" if c is None else c.committable(want, self._clock())
        if why is not None or c is None:
            return self._refused(str(why))
        self._swap(c.routing, generation)
        return {"reload": "committed", **self.current.summary()}

    def _abort(self, _: dict[str, Any]) -> dict[str, Any]:
        dropped, self.candidate = self.candidate is not None, None
        return {"reload": "aborted", "dropped": dropped, "generation": self.current.generation}

    def apply_marks(self) -> int:
        """Rule 6: mark inactive every destination the run directory's marks file lists
        that the current routing has; returns how many were marked by this call."""
        d = self.current.table.dispatcher
        try:
            found = marks.read(self.current.settings.node.run_dir)
        except marks.MarksError as exc:
            log.error("destination_marks_unreadable", error=str(exc))
            return 0
        done = 0
        for name, uri in found:
            try:
                done += bool(d.disable(name, uri))
            except KeyError:
                continue  # not in this routing (rule 2 of workers/routing/marks.py)
        if done:
            log.warning("destination_marks_taken", marked=done, listed=len(found),
                        generation=self.current.generation)  # fmt: skip
        return done

    def _swap(self, routing: Routing, generation: int) -> None:
        old = self.current
        self.current = commit(routing, old, generation)
        self.apply_marks()
        self._apply(self.current)
        log.info("routing_reloaded", previous=old.generation, **self.current.summary())

    def _destination_state(self, args: dict[str, Any]) -> dict[str, Any]:
        name, uri, state = args.get("set"), args.get("uri"), args.get("state")
        if not (isinstance(name, str) and isinstance(uri, str) and len(name) + len(uri) < MAX_ARG
                and state in STATES):  # fmt: skip
            return {"changed": False, "error": f"expected a set, a URI and one of {STATES}"}
        d = self.current.table.dispatcher
        try:
            events = d.disable(name, uri) if state == "inactive" else d.enable(name, uri)
        except KeyError:
            return {"changed": False, "error": f"no destination {uri} in set {name}"}
        row = next(r for r in d.status(self._clock()) if r["set"] == name and r["uri"] == uri)
        log.warning("destination_marked", set=name, uri=uri, mark=state, now=row["state"],
                    generation=self.current.generation)  # fmt: skip
        return {"changed": bool(events), "set": name, "uri": uri, "state": row["state"]}
