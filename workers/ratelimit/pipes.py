"""Rate limit pipes, sans-IO (OpenSIPS ``ratelimit``): what the worker asks before forwarding.

Rules:
1. A pipe has an algorithm, a limit (requests per second) and a window. ``check(pipe, now,
   load)`` counts one request and says whether it may pass; time and the worker's busy ratio
   are arguments, randomness an injected ``random.Random``. Requests refused are not counted
   against the limit (a refused request costs the downstream nothing).
2. The algorithms, with ``allowance = limit_per_s * window_s`` requests per window:
   - ``taildrop``: fixed windows; the first ``allowance`` requests of each pass.
   - ``red``: fixed windows; the k-th request of a window passes for k <= allowance, and past
     it is dropped with probability ``(k - allowance) / allowance``, 1 from 2 x allowance on.
     Dropping so starts at the limit and rises linearly to all at twice it (OpenSIPS's RED
     works on integer multiples of the limit, so it drops nothing below 2x). Under a steady
     overload of 2x or more a window passes ``allowance + (allowance - 1) / 2`` on average:
     1.5 x the limit. Set the limit to 2/3 of a hard ceiling.
   - ``sliding``: a window sliding in ``SLIDING_BUCKETS`` steps: a request passes when the
     requests passed in the last ``SLIDING_BUCKETS`` sub-windows (the current one included)
     are under ``allowance``. No burst of 2 x allowance across a window boundary, unlike
     ``taildrop``.
   - ``feedback``: ``sliding`` with the allowance scaled by the load: full up to
     ``FEEDBACK_KNEE`` busy, then linearly down to ``FEEDBACK_FLOOR`` of it at 100 % busy (a
     floor, so a saturated worker still admits some calls and its load can be re-measured).
3. ``match`` says which pipes a request goes through (methods, source CIDR, route name: all
   that are set must hold); ``admit`` runs every matching pipe and returns the first that
   refuses. ``retry_after`` is the pipe's Retry-After jittered by ``RATELIMIT_JITTER``.
4. Costs: ``check`` is a few attribute reads and an increment (``sliding``/``feedback`` also
   advance a ring of 10 counters when a sub-window passed); a pipe with ``source`` parses the
   source address once per request (~1 us).
5. A ``shared`` pipe holds its limit across every participant (the workers of the node and of
   the ``[stateplane] peers`` nodes) by exchanging counts, not requests (OpenSIPS's
   replicated pipes). Every ``SHARE_INTERVAL_S`` each participant's ``tick`` returns, per
   shared pipe, ``[name, window, count, demand]``: what counts against the limit (taildrop
   its passed and RED its offered in the current window, sliding and feedback what passed
   over the last window) and the requests it was offered in the interval. ``receive`` takes
   the others' (``workers/ratelimit/peers.py``); a request then passes only while its own
   count plus the others', projected at the rate they last rose, is under the allowance.
   Fixed windows of shared pipes are aligned to multiples of ``window_s`` on the host's
   monotonic clock, so a count meets only its own window.
6. Stale counts let participants take the same room at once. So when the cluster's demand
   in one interval could take more than half the room left (``free``), ``tick`` (and a new
   fixed window) gives each participant a budget for the coming interval, its share of
   ``free`` by demand, ``free * (demand + 1) / (demand of all + participants)``: its count
   may rise at most that much above where it stood. Budgets add up to ``free``, so the
   participants do not overrun it together. RED keeps no budget (its dropping is random
   already). Nothing of this runs per request: the hot path reads two projected terms and a
   cap, all 0 or infinite on a pipe that is not shared.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

from conf.settings import RATELIMIT_JITTER, RATELIMIT_SHARE_INTERVAL_S, RateLimit
from workers.ratelimit.peers import SLIDING, PeerCounts

#: sub-windows of a sliding window: the error of the slide is at most a tenth of a window
SLIDING_BUCKETS = 10
#: a worker under this busy ratio has head-room: feedback pipes pass their full limit
FEEDBACK_KNEE = 0.7
#: share of the limit a feedback pipe keeps at 100 % busy
FEEDBACK_FLOOR = 0.1
#: how often shared pipes publish their counts (rule 5; conf/sections/protection.py says why 0.1 s)
SHARE_INTERVAL_S = RATELIMIT_SHARE_INTERVAL_S
#: the window of a fixed pipe that has counted nothing yet
NO_WINDOW = -2
INF = float("inf")


class Pipe:
    """One pipe's state and counters (rule 2), and its share of a cluster (rules 5-6)."""

    __slots__ = ("_bucket_s", "_buckets", "_head", "_head_start", "_sum", "allowance", "cap",
                 "cfg", "count", "dropped", "last_allowance", "last_own", "net", "offered",
                 "offered_mark", "others_base", "others_rate", "passed", "peers", "share",
                 "window_idx", "window_start")  # fmt: skip

    def __init__(self, cfg: RateLimit) -> None:
        self.cfg = cfg
        self.allowance = cfg.limit_per_s * cfg.window_s
        self.last_allowance = self.allowance
        self.net = ipaddress.ip_network(cfg.source, strict=False) if cfg.source else None
        self.window_start = float("-inf")
        self.window_idx = NO_WINDOW  # shared fixed windows: int(now // window_s)
        self.count = 0  # requests offered in this fixed window (taildrop, red)
        self.passed = 0
        self.dropped = 0
        self.offered = 0  # every request checked, for the demand of a shared pipe
        self._bucket_s = cfg.window_s / SLIDING_BUCKETS
        self._buckets = [0] * SLIDING_BUCKETS
        self._head = 0  # index of the current sub-window
        self._head_start = float("-inf")
        self._sum = 0  # passed in the sliding window
        #: shared pipes: the others' counts (rule 5); None when the pipe is not shared
        self.peers = PeerCounts() if cfg.shared else None
        #: the others' counts projected to ``now``: ``others_base + others_rate * now``
        self.others_base = 0.0
        self.others_rate = 0.0
        #: rule 6: this interval's budget, as a ceiling on the own count
        self.cap = INF
        self.offered_mark = 0
        self.last_own = 0  # the own count at the last tick
        self.share = 1.0  # of the room left, by demand (rule 6)

    def _fixed(self, now: float) -> None:
        if self.peers is not None:  # aligned: every participant counts the same window
            idx = int(now // self.cfg.window_s)
            if idx != self.window_idx:
                self.window_idx = idx
                self.window_start = idx * self.cfg.window_s
                self.count = 0
                self._recount(now)
                if self.cfg.algorithm == "taildrop":
                    self._budget(now, self.peers.demand + self._demand(), 0)
        elif now - self.window_start >= self.cfg.window_s:
            self.window_start = now
            self.count = 0

    def window_index(self) -> int:
        """The aligned fixed window a shared count belongs to (``SLIDING``: a sliding one)."""
        return self.window_idx if self.cfg.algorithm in ("taildrop", "red") else SLIDING

    def counted(self, now: float) -> int:
        """What counts against the limit now: passed (taildrop) or offered (RED) in this
        window, passed over the sliding window (sliding, feedback)."""
        if self.cfg.algorithm in ("taildrop", "red"):
            self._fixed(now)
            return self.count
        self._slide(now)
        return self._sum

    def _recount(self, now: float) -> None:
        assert self.peers is not None
        self.peers.recount(self.window_index(), now)
        self.others_base, self.others_rate = self.peers.base, self.peers.rate

    def _demand(self) -> int:
        """Requests offered since the last tick."""
        return self.offered - self.offered_mark

    def _budget(self, now: float, cluster_demand: int, own: int) -> None:
        """Rule 6: the own count's ceiling for the coming interval, from the room left and
        the demand of every participant in its last interval."""
        assert self.peers is not None
        free = self.last_allowance - own - (self.others_base + self.others_rate * now)
        self.share = (self._demand() + 1) / (cluster_demand + len(self.peers) + 1)
        tight = cluster_demand > free / 2  # the cluster could take the room in one interval
        self.cap = own + max(0.0, free) * self.share if tight else INF

    def tick(self, now: float) -> list[Any]:
        """Rules 5-6, every interval: recount the others, set the budget, and return what
        to publish."""
        own = self.counted(now)
        self._recount(now)
        demand = self._demand()
        if self.cfg.algorithm != "red":
            # a sliding count dips as old requests leave; the room is ours to refill, so
            # the budget builds on the higher of this count and the last (as the others
            # count ours: workers/ratelimit/peers.py rule 3)
            level = max(own, self.last_own) if self.window_index() == SLIDING else own
            others = self.peers.demand if self.peers is not None else 0
            self._budget(now, demand + others, level)
        self.last_own = own
        self.offered_mark = self.offered
        return [self.cfg.name, self.window_index(), own, demand]

    def _slide(self, now: float) -> None:
        """Advance the ring to the sub-window holding ``now``, zeroing the ones passed."""
        elapsed = now - self._head_start
        if elapsed < self._bucket_s:
            return
        b = self._buckets
        if elapsed >= self.cfg.window_s:  # the whole window passed (or this is the first call)
            b[:] = [0] * SLIDING_BUCKETS
            self._sum = 0
            self._head_start = now
            return
        steps = int(elapsed // self._bucket_s)
        for _ in range(steps):
            self._head = (self._head + 1) % SLIDING_BUCKETS
            self._sum -= b[self._head]
            b[self._head] = 0
        self._head_start += steps * self._bucket_s


class RateLimiter:
    """Every ``[[ratelimit]]`` pipe of a worker (rules 1-3, 5)."""

    def __init__(self, pipes: Iterable[RateLimit], rng: random.Random | None = None) -> None:
        self.pipes = {p.name: Pipe(p) for p in pipes}
        self.rng = rng or random.Random()
        self.shared = [p for p in self.pipes.values() if p.cfg.shared]
        #: counts refused: unknown or unshared pipe, too many participants
        self.share_ignored = 0

    def check(self, name: str, now: float, load: float = 0.0) -> bool:
        """Count one request through pipe ``name``; False: refuse it (503, Retry-After).

        Args:
            now: monotonic seconds.
            load: the worker's busy ratio from 0 to 1 (used by ``feedback`` only).
        """
        p = self.pipes[name]
        algo = p.cfg.algorithm
        p.offered += 1
        # others_*: the others' counts projected to now, cap: this interval's budget; 0 and
        # infinite unless the pipe is shared (rules 5-6)
        if algo == "taildrop":
            p._fixed(now)
            ok = p.count < p.cap and p.count + p.others_base + p.others_rate * now < p.allowance
            p.count += ok
        elif algo == "red":
            p._fixed(now)
            p.count += 1
            excess = p.count + p.others_base + p.others_rate * now - p.allowance
            ok = excess <= 0 or self.rng.random() >= excess / p.allowance
        else:
            p._slide(now)
            allowance = p.allowance
            if algo == "feedback":
                allowance *= feedback_share(load)
                p.last_allowance = allowance
            ok = p._sum < p.cap and p._sum + p.others_base + p.others_rate * now < allowance
            if ok:
                p._buckets[p._head] += 1
                p._sum += 1
        if ok:
            p.passed += 1
        else:
            p.dropped += 1
        return ok

    def match(self, method: str, src: str, route: str) -> list[str]:
        """Names of the pipes a request goes through (rule 3)."""
        out = []
        ip: Any = None
        for name, p in self.pipes.items():
            c = p.cfg
            if (c.methods and method not in c.methods) or (c.route and c.route != route):
                continue
            if p.net is not None:
                if ip is None:
                    try:
                        ip = ipaddress.ip_address(src)
                    except ValueError:
                        ip = False
                if ip is False or ip not in p.net:
                    continue
            out.append(name)
        return out

    def admit(self, method: str, src: str, route: str, now: float,
              load: float = 0.0) -> str | None:  # fmt: skip
        """Run the request through every pipe it matches; the name of the first that refuses
        it (answer 503 with ``retry_after(name)``), or None to forward it. A pipe after the
        refusing one does not count the request."""
        for name in self.match(method, src, route):
            if not self.check(name, now, load):
                return name
        return None

    # -- shared pipes (rules 5-6) ---------------------------------------------------------------

    def tick(self, now: float) -> list[list[Any]]:
        """Every ``SHARE_INTERVAL_S``: ``[name, window, count, demand]`` of every shared pipe,
        to publish, once each pipe's budget for the coming interval is set."""
        return [p.tick(now) for p in self.shared]

    def receive(self, sender: str, counts: list[list[Any]], now: float) -> None:
        """Another participant's ``tick``; entries for pipes not shared here are ignored.
        Entries must already be checked for shape (``[str, int, int, int]``)."""
        for name, window, count, demand in counts:
            p = self.pipes.get(name)
            if p is None or p.peers is None or not p.peers.update(sender, window, count,
                                                                   demand, now):  # fmt: skip
                self.share_ignored += 1
                continue
            p.counted(now)  # rolls a fixed window first, so the count meets the right one
            p._recount(now)

    def retry_after(self, name: str) -> int:
        """Retry-After seconds for a refusal by ``name``: its ``retry_after_s`` within
        +-RATELIMIT_JITTER, rounded, at least 1 (RFC 3261 §20.33: delta-seconds)."""
        base = self.pipes[name].cfg.retry_after_s
        j = self.rng.uniform(1 - RATELIMIT_JITTER, 1 + RATELIMIT_JITTER)
        return max(1, round(base * j))

    def status(self, now: float) -> list[dict[str, Any]]:
        """One row per pipe for ``sipline ctl ratelimit``."""
        rows = []
        for name, p in self.pipes.items():
            c = p.cfg
            if c.algorithm in ("taildrop", "red"):
                current = p.count if now - p.window_start < c.window_s else 0
            else:
                p._slide(now)
                current = p._sum
            allowance = p.last_allowance if c.algorithm == "feedback" else p.allowance
            row = {"pipe": name, "algorithm": c.algorithm, "limit_per_s": c.limit_per_s,
                   "window_s": c.window_s, "allowance": round(allowance, 2),
                   "in_window": current, "passed": p.passed, "dropped": p.dropped}  # fmt: skip
            if p.peers is not None:
                p.counted(now)
                p._recount(now)
                row.update(shared=True, others=p.peers.others, participants=len(p.peers) + 1)
            rows.append(row)
        return rows


def feedback_share(load: float) -> float:
    """Share of its limit a ``feedback`` pipe passes at busy ratio ``load`` (rule 2)."""
    if load <= FEEDBACK_KNEE:
        return 1.0
    share = 1.0 - (load - FEEDBACK_KNEE) / (1.0 - FEEDBACK_KNEE)
    return max(FEEDBACK_FLOOR, min(1.0, share))
