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
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

from conf.settings import RATELIMIT_JITTER, RateLimit

#: sub-windows of a sliding window: the error of the slide is at most a tenth of a window
SLIDING_BUCKETS = 10
#: a worker under this busy ratio has head-room: feedback pipes pass their full limit
FEEDBACK_KNEE = 0.7
#: share of the limit a feedback pipe keeps at 100 % busy
FEEDBACK_FLOOR = 0.1


class Pipe:
    """One pipe's state and counters (rule 2)."""

    __slots__ = ("_bucket_s", "_buckets", "_head", "_head_start", "_sum", "allowance", "cfg",
                 "count", "dropped", "last_allowance", "net", "passed", "window_start")  # fmt: skip

    def __init__(self, cfg: RateLimit) -> None:
        self.cfg = cfg
        self.allowance = cfg.limit_per_s * cfg.window_s
        self.last_allowance = self.allowance
        self.net = ipaddress.ip_network(cfg.source, strict=False) if cfg.source else None
        self.window_start = float("-inf")
        self.count = 0  # requests offered in this fixed window (taildrop, red)
        self.passed = 0
        self.dropped = 0
        self._bucket_s = cfg.window_s / SLIDING_BUCKETS
        self._buckets = [0] * SLIDING_BUCKETS
        self._head = 0  # index of the current sub-window
        self._head_start = float("-inf")
        self._sum = 0  # passed in the sliding window

    def _fixed(self, now: float) -> None:
        if now - self.window_start >= self.cfg.window_s:
            self.window_start = now
            self.count = 0

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
    """Every ``[[ratelimit]]`` pipe of a worker (rules 1-3)."""

    def __init__(self, pipes: Iterable[RateLimit], rng: random.Random | None = None) -> None:
        self.pipes = {p.name: Pipe(p) for p in pipes}
        self.rng = rng or random.Random()

    def check(self, name: str, now: float, load: float = 0.0) -> bool:
        """Count one request through pipe ``name``; False: refuse it (503, Retry-After).

        Args:
            now: monotonic seconds.
            load: the worker's busy ratio from 0 to 1 (used by ``feedback`` only).
        """
        p = self.pipes[name]
        algo = p.cfg.algorithm
        if algo == "taildrop":
            p._fixed(now)
            ok = p.count < p.allowance
            p.count += ok
        elif algo == "red":
            p._fixed(now)
            p.count += 1
            excess = p.count - p.allowance
            ok = excess <= 0 or self.rng.random() >= excess / p.allowance
        else:
            p._slide(now)
            allowance = p.allowance
            if algo == "feedback":
                allowance *= feedback_share(load)
                p.last_allowance = allowance
            ok = p._sum < allowance
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
            rows.append({"pipe": name, "algorithm": c.algorithm, "limit_per_s": c.limit_per_s,
                         "window_s": c.window_s, "allowance": round(allowance, 2),
                         "in_window": current, "passed": p.passed,
                         "dropped": p.dropped})  # fmt: skip
        return rows


def feedback_share(load: float) -> float:
    """Share of its limit a ``feedback`` pipe passes at busy ratio ``load`` (rule 2)."""
    if load <= FEEDBACK_KNEE:
        return 1.0
    share = 1.0 - (load - FEEDBACK_KNEE) / (1.0 - FEEDBACK_KNEE)
    return max(FEEDBACK_FLOOR, min(1.0, share))
