"""The other participants' counts of one shared ratelimit pipe, sans-IO (``workers/ratelimit/pipes.py``
rule 5).

Rules:
1. Each participant's last published count is kept with the window it belongs to, when it
   was heard, the rate it rose at since the one before (per second, never negative) and its
   demand (requests offered in its last exchange interval).
2. ``recount(window, now)`` forgets participants silent for ``SHARE_PEER_TIMEOUT_S`` and sums
   what applies to ``window``: the counts (``others``), the projection of them to any later
   moment (``base + rate * now``: a count heard ``SHARE_PROJECT_S`` ago or more is held, not
   projected, since its sender may have stopped) and the demand.
3. A sliding count falls when the sender's oldest requests leave its window, and the sender
   refills that room itself; the higher of its last two counts is what counts, so the
   others do not take the same room in the interval before they see the refill.
4. Bounded: at most ``SHARE_MAX_PEERS`` participants per pipe; ``update`` refuses more.
"""

from __future__ import annotations

from conf.settings import RATELIMIT_SHARE_INTERVAL_S

#: a participant silent this long (ten intervals) is taken as gone and its counts forgotten
SHARE_PEER_TIMEOUT_S = 10 * RATELIMIT_SHARE_INTERVAL_S
#: a participant's count is projected at its last rate for this long after it was heard
SHARE_PROJECT_S = 2 * RATELIMIT_SHARE_INTERVAL_S
#: participants one shared pipe keeps counts of at most
SHARE_MAX_PEERS = 256
#: the window of a sliding count (fixed windows are numbered from 0 on the monotonic clock)
SLIDING = -1


class _Peer:
    __slots__ = ("count", "demand", "heard", "last", "rate", "window")

    def __init__(self, window: int, count: int, demand: int, heard: float) -> None:
        self.window, self.count, self.last, self.demand, self.heard = (
            window, count, count, demand, heard)  # fmt: skip
        self.rate = 0.0

    def update(self, window: int, count: int, demand: int, now: float) -> None:
        dt = now - self.heard
        same = window == self.window and dt > 0
        self.rate = max(0.0, (count - self.last) / dt) if same else 0.0
        self.count = max(count, self.last) if same and window == SLIDING else count  # rule 3
        self.window, self.last, self.demand, self.heard = window, count, demand, now


class PeerCounts:
    """Every other participant's count of one pipe, and their sums (rules 1-2)."""

    __slots__ = ("_peers", "base", "demand", "others", "rate")

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}
        #: counts that apply to the window of the last ``recount``
        self.others = 0
        #: their projection to ``now`` is ``base + rate * now``
        self.base = 0.0
        self.rate = 0.0
        #: requests the others were offered in their last interval
        self.demand = 0

    def update(self, sender: str, window: int, count: int, demand: int, now: float) -> bool:
        """Record ``sender``'s count; False (nothing kept) when the table is full (rule 4)."""
        p = self._peers.get(sender)
        if p is not None:
            p.update(window, count, demand, now)
        elif len(self._peers) >= SHARE_MAX_PEERS:
            return False
        else:
            self._peers[sender] = _Peer(window, count, demand, now)
        return True

    def recount(self, window: int, now: float) -> None:
        """Forget silent participants and sum what applies to ``window`` (rule 2)."""
        peers = self._peers
        for sender in [s for s, p in peers.items() if now - p.heard > SHARE_PEER_TIMEOUT_S]:
            del peers[sender]
        others, base, rate, demand = 0, 0.0, 0.0, 0
        for p in peers.values():
            if p.window != window:
                continue
            if now - p.heard >= SHARE_PROJECT_S:
                p.rate = 0.0
            others += p.count
            base += p.count - p.rate * p.heard
            rate += p.rate
            demand += p.demand
        self.others, self.base, self.rate, self.demand = others, base, rate, demand

    def __len__(self) -> int:
        return len(self._peers)
