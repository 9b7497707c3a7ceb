"""The dispatcher: destination sets with health, serial failover and OPTIONS probing.

Sans-IO, like the transaction layer: no sockets, no clock, no logging. ``now`` is an
argument (monotonic seconds); the caller sends the probes it is handed, feeds back what
came of them and of the requests it forwarded, and logs the events it gets back.
OpenSIPS's dispatcher and Kamailio's ``ds_select_dst``/``ds_next_dst`` are the models.

Rules:
1. Health is a table, ``TRANSITIONS[(State, Input)] = (effect, next, next_at_threshold)``
   (h2 ``stream.py``). The effect counts the input; when the count reaches its threshold
   (``probe_threshold`` failures in a row, ``probe_up_threshold`` successes in a row) the
   destination moves to ``next_at_threshold``, else to ``next``. The table is total: every
   input comes from the network or the operator, so none may be refused. A missing pair is a
   table bug and raises ``InvalidTransition``.
2. Every change of state is returned once as a ``HealthChanged`` event; ``remote`` events
   came from another process's snapshot (``apply``), and only local ones should be logged,
   so a change is logged once per node.
3. Selection skips destinations that are not usable: down, recovering, disabled, or held
   by a 503 with Retry-After (RFC 3261 §21.5.4: no more requests for that long). Suspect
   destinations are still used, as Kamailio uses "trying" ones, but tried last on failover.
4. Without probing (``probe_interval_s = 0``) nothing could bring a destination back, so
   health is not tracked: reports only apply Retry-After holds, failover still works per
   request. (Kamailio's inactive-forever destinations are the trap avoided.)
5. Probes are single OPTIONS datagrams with their own timeout, at most one in flight per
   destination; their branch starts with ``PROBE_BRANCH_PREFIX`` so the worker can tell
   their answers from responses to forward. A lost probe is one failure; the threshold of
   consecutive failures absorbs it.
6. One process probes a destination (``assign``); the others take its view through
   ``snapshot``/``apply`` (plain msgpack-ready data). The prober is authoritative for what
   it probes: ``apply`` never overwrites a destination probed here.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from conf.load import parse_status_codes
from conf.settings import DestinationSet as DestinationSetConfig
from conf.settings import Listener
from ingress.sip.grammar import parse_uri
from workers.routing.health import (
    USABLE,
    Health,
    HealthChanged,
    Input,
    State,
    Thresholds,
    step,
)
from workers.routing.probes import PROBE_BRANCH_PREFIX, ProbeRequest, build_options

#: a stateless proxy must send a call's CANCEL and ACK where its INVITE went (RFC 3261
#: §16.11); a choice that is not the call's hash (round-robin, or a fallback around a down
#: destination) is remembered per Call-ID for longer than Timer B/F (32 s)
STICKY_S = 64.0
STICKY_MAX = 200_000
#: a Retry-After beyond this is not believed: a typo must not take a trunk away for a day
MAX_HOLD_S = 300.0
#: tries at a Call-ID this process owns (``owns``); with W workers one in W hits
OWNED_CALL_ID_TRIES = 256
SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Destination:
    uri: str
    host: str
    port: int
    transport: str | None  # "udp", "tcp", "tls", or None: the transport the request came on
    set_name: str = ""  # the set it belongs to; reports name it through this
    index: int = 0  # its place in the set


def destination(uri: str, set_name: str = "", index: int = 0) -> Destination:
    u = parse_uri(uri)
    param = u.param("transport")
    transport = "tls" if u.scheme == "sips" else param.lower() if param else None  # RFC 3261 §26.2.1
    return Destination(uri, u.host_plain, u.port or (5061 if transport == "tls" else 5060),
                       transport, set_name, index)  # fmt: skip


class DispatchSet:
    """One ``[[destination_set]]``: selection, failover order and the health of each."""

    __slots__ = ("_alive", "_failover_codes", "_remembers", "_rr", "_sticky", "_total_weight",
                 "_weights", "algorithm", "cfg", "destinations", "health", "name", "probing",
                 "thresholds")  # fmt: skip

    def __init__(self, cfg: DestinationSetConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.algorithm = cfg.algorithm
        self.destinations = [destination(u, cfg.name, i) for i, u in enumerate(cfg.destinations)]
        self.health = [Health() for _ in self.destinations]
        self.probing = cfg.probe_interval_s > 0
        self.thresholds = Thresholds(cfg.probe_threshold, cfg.probe_up_threshold)
        self._alive = parse_status_codes(cfg.alive_codes)
        self._failover_codes = parse_status_codes(cfg.failover_codes) if cfg.failover else None
        self._weights = cfg.weights or [1] * len(self.destinations)
        self._total_weight = sum(self._weights)
        self._rr = itertools.cycle(range(len(self.destinations)))
        self._sticky: TTLCache[str, Destination] = TTLCache(STICKY_MAX, STICKY_S)
        # whether _sticky was ever written: a hashed set that never fell back skips the
        # lookup (bool() of a TTLCache costs ~1 µs, more than the whole hash)
        self._remembers = self.algorithm == "round_robin"

    # -- selection -------------------------------------------------------------------------

    def usable(self, d: Destination) -> bool:
        h = self.health[d.index]
        return h.state in USABLE and not h.held_until

    def select(self, call_id: str) -> Destination | None:
        """The destination for a new request of ``call_id``, skipping unusable ones; None
        when none is usable. The call's own hash decides (or the turn, for round-robin);
        around a down destination the choice is re-hashed over the usable ones, as OpenSIPS
        does, so its load spreads instead of doubling one neighbour's."""
        d = self._sticky.get(call_id) if self._remembers else None
        if d is not None and self.usable(d):
            return d
        if self.algorithm == "round_robin":
            d = self._next_turn()
            if d is not None:
                self._sticky[call_id] = d
            return d
        h = zlib.crc32(call_id.encode("latin-1", "replace"))
        d = self._hashed(h, self.destinations, self._weights, self._total_weight)
        if self.usable(d):
            return d
        usable = [x for x in self.destinations if self.usable(x)]
        if not usable:
            return None
        weights = [self._weights[x.index] for x in usable]
        d = self._hashed(h, usable, weights, sum(weights))
        self._sticky[call_id] = d  # not the call's hash: the ACK and CANCEL must find it
        self._remembers = True
        return d

    def pick(self, call_id: str) -> Destination:
        """The destination for any request of ``call_id`` (the stateless proxy's choice):
        the one its INVITE went to, else ``select``, else, with none usable, the call's
        hash regardless of health (a stateless proxy has nothing better to do)."""
        if len(self.destinations) == 1:
            return self.destinations[0]
        d = self._sticky.get(call_id) if self._remembers else None
        if d is not None:
            return d
        d = self.select(call_id)
        if d is not None:
            return d
        h = zlib.crc32(call_id.encode("latin-1", "replace"))
        return self._hashed(h, self.destinations, self._weights, self._total_weight)

    def alternatives(self, first: Destination) -> list[Destination]:
        """The rest of the set for serial failover after ``first``: usable ones only, up
        before suspect, each group in set order starting after ``first`` (Kamailio's
        ``ds_next_dst`` walks the list the same way)."""
        n = len(self.destinations)
        ring = [self.destinations[(first.index + k) % n] for k in range(1, n)]
        up = [d for d in ring if self.usable(d) and self.health[d.index].state is State.UP]
        suspect = [d for d in ring if self.usable(d) and self.health[d.index].state is State.SUSPECT]
        return up + suspect

    def fails_over(self, status: int | None) -> bool:
        """Whether a final ``status`` (None: no response at all) moves on to the next
        destination: ``failover`` on, and no response or a status in ``failover_codes``."""
        codes = self._failover_codes
        return codes is not None and (status is None or status in codes)

    def is_alive_status(self, status: int) -> bool:
        return status in self._alive

    def inherit(self, prev: DispatchSet) -> None:
        """Take the state of ``prev``, the set of this name before a reload
        (``workers/routing/reload.py`` rule 4): the health of each URI both list, and when
        the table is unchanged the turn and the sticky choices too."""
        health = {d.uri: h for d, h in zip(prev.destinations, prev.health)}
        self.health = [health.get(d.uri, h) for d, h in zip(self.destinations, self.health)]
        if prev.cfg == self.cfg:
            self._rr, self._sticky, self._remembers = prev._rr, prev._sticky, prev._remembers

    def _next_turn(self) -> Destination | None:
        for _ in range(len(self.destinations)):
            d = self.destinations[next(self._rr)]
            if self.usable(d):
                return d
        return None

    @staticmethod
    def _hashed(h: int, dests: list[Destination], weights: list[int], total: int) -> Destination:
        if len(dests) == 1:
            return dests[0]
        if total == len(dests):  # all weights 1: hash_call_id, or weighted without weights
            return dests[h % len(dests)]
        point = h % total  # a deterministic point on the cumulative weights
        for d, w in zip(dests, weights):
            if point < w:
                return d
            point -= w
        return dests[-1]


class Dispatcher:
    """Every destination set of a worker, with probing and the health shared between workers.

    Args:
        sets: the ``[[destination_set]]`` tables.
        listeners: the ``[[listen]]`` tables; probes leave from one of the destination's
            transport and address family, and their Via names it.
        instance: a short token unique to this process run (pid and a random part): in
            every probe branch and Call-ID, so answers to another run's probes are not taken
            for answers to ours, and cannot be guessed.
        owns: tells whether this process receives the messages of a Call-ID (the ingress
            hands a call to one worker); probes get Call-IDs it owns so their answers come
            back here. None: every Call-ID.
    """

    def __init__(self, sets: Iterable[DestinationSetConfig], listeners: list[Listener], *,
                 instance: str = "0", owns: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.sets = {c.name: DispatchSet(c) for c in sets}
        self.listeners = listeners
        self.instance = instance
        self.owns = owns
        self._seq = 0
        self._pending: dict[str, tuple[DispatchSet, Destination, float]] = {}
        self._probed: set[tuple[str, str]] = set(self.probe_keys())
        self._deadline: float | None = None
        self._dirty = True

    # -- what the proxy reports ------------------------------------------------------------

    def report(self, d: Destination, status: int | None, now: float,
               retry_after_s: float | None = None) -> list[HealthChanged]:  # fmt: skip
        """What came of a request sent to ``d``: its final status (or a provisional one, which
        proves it alive), or None for no response (Timer B/F, transport error). A 503 with
        Retry-After also holds ``d`` out of selection that long (at most ``MAX_HOLD_S``)."""
        ds = self.sets.get(d.set_name)
        if ds is None or d.index >= len(ds.destinations) or ds.destinations[d.index] != d:
            return []  # a set changed by a reload since the request left (reload.py rule 3)
        h = ds.health[d.index]
        if status == 503 and retry_after_s:
            h.held_until = max(h.held_until, now + min(retry_after_s, MAX_HOLD_S))
            self._dirty = True
        if not ds.probing:
            return []
        h.last_status = status
        alive = status is not None and (status < 200 or ds.is_alive_status(status))
        return self._feed(ds, d, Input.REQUEST_ANSWERED if alive else Input.REQUEST_FAILED,
                          status)  # fmt: skip

    def disable(self, set_name: str, uri: str) -> list[HealthChanged]:
        """The operator takes a destination out of service (``sipline ctl``)."""
        ds, d = self._find(set_name, uri)
        return self._feed(ds, d, Input.DISABLE, None)

    def enable(self, set_name: str, uri: str) -> list[HealthChanged]:
        """The operator puts a disabled destination back (it is up at once)."""
        ds, d = self._find(set_name, uri)
        return self._feed(ds, d, Input.ENABLE, None)

    def inherit(self, old: Dispatcher) -> None:
        """Take over from ``old``, this worker's dispatcher before a reload: each set's state
        (``DispatchSet.inherit``), the probes in flight to destinations still listed, the
        probe sequence (branches stay unique) and the probing share."""
        for name, ds in self.sets.items():
            if name in old.sets:
                ds.inherit(old.sets[name])
        for branch, (ods, od, deadline) in old._pending.items():
            nds = self.sets.get(ods.name)
            d = next((x for x in nds.destinations if x.uri == od.uri), None) if nds else None
            if nds is not None and d is not None and nds.probing:
                self._pending[branch] = (nds, d, deadline)
            else:
                ods.health[od.index].pending = None
        self._seq = old._seq
        keys = set(self.probe_keys())
        self._probed = keys & old._probed | (keys - set(old.probe_keys()))
        self._dirty = True

    # -- probing -----------------------------------------------------------------------------

    def probe_keys(self) -> list[tuple[str, str]]:
        """``(set, uri)`` of every destination that probing could cover, to shard them."""
        return [(ds.name, d.uri) for ds in self.sets.values() if ds.probing
                for d in ds.destinations]  # fmt: skip

    def assign(self, keys: Collection[tuple[str, str]] | None) -> None:
        """Probe only ``keys`` (``(set, uri)`` pairs) from now on; None: all of them. Other
        destinations' health comes from ``apply``. See ``probe_share`` to split them."""
        self._probed = set(self.probe_keys()) if keys is None else set(keys)
        self._dirty = True

    def next_deadline(self) -> float | None:
        """When ``handle_timer``/``due_probes`` next have work: the earliest probe due, probe
        timeout or hold ending; None when there is none (probing off, nothing held)."""
        if self._dirty:
            times = [t for _, _, t in self._pending.values()]
            for ds in self.sets.values():
                for d, h in zip(ds.destinations, ds.health):
                    if h.held_until:
                        times.append(h.held_until)
                    if self._probes(ds, d, h):
                        times.append(h.next_probe_at)
            self._deadline = min(times, default=None)
            self._dirty = False
        return self._deadline

    def handle_timer(self, now: float) -> list[HealthChanged]:
        """Expire probes unanswered by ``now`` (each one failure) and holds that ended.
        Call it before ``due_probes`` on each timer tick."""
        events: list[HealthChanged] = []
        for branch, (ds, d, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[branch]
                h = ds.health[d.index]
                h.pending, h.last_probe_at, h.last_status = None, now, None
                events += self._feed(ds, d, Input.PROBE_TIMEOUT, None)
        for ds in self.sets.values():
            for h in ds.health:
                if h.held_until and h.held_until <= now:
                    h.held_until = 0.0
        self._dirty = True
        return events

    def due_probes(self, now: float) -> list[ProbeRequest]:
        """The probes to send at ``now``. Each destination's next probe is due one interval
        after the previous one was due (so lag does not drift the schedule), or one interval
        from ``now`` when the loop fell a whole interval behind. ``when_down`` skips
        destinations that are up; none is sent while one is still in flight."""
        out: list[ProbeRequest] = []
        for ds in self.sets.values():
            interval = ds.cfg.probe_interval_s
            for d, h in zip(ds.destinations, ds.health):
                if not self._probes(ds, d, h) or h.next_probe_at > now:
                    continue
                h.next_probe_at = h.next_probe_at + interval if h.next_probe_at else now
                if h.next_probe_at <= now:
                    h.next_probe_at = now + interval
                if h.pending is not None:
                    continue
                if ds.cfg.probe_mode == "when_down" and h.state is State.UP:
                    continue
                probe = self._probe(ds, d, now)
                if probe is not None:
                    h.pending = probe.branch
                    self._pending[probe.branch] = (ds, d, probe.deadline)
                    out.append(probe)
        self._dirty = True
        return out

    def probe_answered(self, branch: str, status: int, now: float) -> list[HealthChanged]:
        """A response to a probe (its top Via branch is ``branch``). Provisional responses
        are ignored (the probe waits for a final); answers to probes that timed out, or
        that are not ours, change nothing."""
        if status < 200:
            return []
        found = self._pending.pop(branch, None)
        if found is None:
            return []
        ds, d, _ = found
        h = ds.health[d.index]
        h.pending, h.last_probe_at, h.last_status = None, now, status
        self._dirty = True
        inp = Input.PROBE_ALIVE if ds.is_alive_status(status) else Input.PROBE_REFUSED
        return self._feed(ds, d, inp, status)

    # -- sharing and showing -----------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """This process's view of the destinations it probes, as msgpack-ready data. Times
        are ages and remaining seconds, so the data means the same in another process."""
        rows = []
        for ds in self.sets.values():
            for d, h in zip(ds.destinations, ds.health):
                if (ds.name, d.uri) in self._probed:
                    rows.append(self._row(ds, d, h, now))
        return {"version": SNAPSHOT_VERSION, "destinations": rows}

    def apply(self, snap: dict[str, Any], now: float) -> list[HealthChanged]:
        """Take another process's ``snapshot`` for the destinations not probed here; events
        for the changes are ``remote``. Unknown destinations are skipped (a config change).

        Raises:
            ValueError: ``snap`` is not a snapshot of this version.
        """
        if not isinstance(snap, dict) or snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError("not a dispatcher snapshot of version 1")
        events = []
        for row in snap.get("destinations", ()):
            try:
                key = (row["set"], row["uri"])
                state = State(row["state"])
                fails, oks, hold = int(row["fails"]), int(row["oks"]), float(row["hold_s"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"bad snapshot row: {exc}") from None
            if key in self._probed or key[0] not in self.sets:
                continue
            ds = self.sets[key[0]]
            d = next((x for x in ds.destinations if x.uri == key[1]), None)
            if d is None:
                continue
            h = ds.health[d.index]
            old = h.state
            h.state, h.fails, h.oks = state, fails, oks
            h.held_until = now + hold if hold > 0 else 0.0
            h.last_status = row.get("last_status")
            age = row.get("last_probe_age_s")
            h.last_probe_at = None if age is None else now - float(age)
            if old is not state:
                events.append(HealthChanged(ds.name, d.uri, old, state, None, fails,
                                            h.last_status, remote=True))  # fmt: skip
        self._dirty = True
        return events

    def status(self, now: float) -> list[dict[str, Any]]:
        """Per destination, for ``sipline ctl destinations``: set, uri, state, consecutive
        failures and successes, last status (probe answer or report; None when it timed
        out or nothing came yet), seconds since the last probe ended, seconds left of a
        Retry-After hold, and whether this process probes it."""
        return [self._row(ds, d, h, now) | {"probed_here": (ds.name, d.uri) in self._probed}
                for ds in self.sets.values()
                for d, h in zip(ds.destinations, ds.health)]  # fmt: skip

    # -- internals ---------------------------------------------------------------------------

    def _row(self, ds: DispatchSet, d: Destination, h: Health, now: float) -> dict[str, Any]:
        age = None if h.last_probe_at is None else round(max(0.0, now - h.last_probe_at), 3)
        hold = round(max(0.0, h.held_until - now), 3) if h.held_until else 0.0
        return {"set": ds.name, "uri": d.uri, "state": h.state.value, "fails": h.fails,
                "oks": h.oks, "last_status": h.last_status, "last_probe_age_s": age,
                "hold_s": hold}  # fmt: skip

    def _probes(self, ds: DispatchSet, d: Destination, h: Health) -> bool:
        return ds.probing and h.state is not State.DISABLED and (ds.name, d.uri) in self._probed

    def _find(self, set_name: str, uri: str) -> tuple[DispatchSet, Destination]:
        ds = self.sets[set_name]
        for d in ds.destinations:
            if d.uri == uri:
                return ds, d
        raise KeyError(uri)

    def _feed(self, ds: DispatchSet, d: Destination, inp: Input,
              status: int | None) -> list[HealthChanged]:  # fmt: skip
        h = ds.health[d.index]
        old = step(h, inp, ds.thresholds)
        self._dirty = True
        if old is h.state:
            return []
        return [HealthChanged(ds.name, d.uri, old, h.state, inp, h.fails, status)]

    def _probe(self, ds: DispatchSet, d: Destination, now: float) -> ProbeRequest | None:
        lst = self._listener(d)
        if lst is None:
            return None  # conf.load refuses such a destination; kept for the type checker
        self._seq += 1
        token = f"{self.instance}.{self._seq:x}"
        call_id = f"dp-{token}@sipline"
        if self.owns is not None:
            for k in range(OWNED_CALL_ID_TRIES):
                if self.owns(call_id):
                    break
                call_id = f"dp-{token}.{k:x}@sipline"
        branch = f"{PROBE_BRANCH_PREFIX}{token}"
        data = build_options(d.uri, lst, branch, call_id, ds.cfg.probe_from, tag=token)
        return ProbeRequest(branch, ds.name, d.uri, lst.transport, d.host, d.port, lst, data,
                            now + ds.cfg.probe_timeout_s)  # fmt: skip

    def _listener(self, d: Destination) -> Listener | None:
        # the destination's transport, else UDP (Kamailio probes over UDP unless told),
        # else whatever the family offers; always the destination's address family
        v6 = ":" in d.host
        family = [x for x in self.listeners if (":" in x.address) == v6]
        for want in (d.transport or "udp", None):
            for x in family:
                if want is None or x.transport == want:
                    return x
        return None
