"""Transaction timer values (RFC 3261 §17, Table 4 of §A; RFC 6026 §8.11 for L and M).

Rules:
1. Times are seconds as floats, relative; a transaction turns them into absolute deadlines
   against the ``now`` it is given. Nothing here reads a clock.
2. Over a reliable transport (TCP, TLS, SCTP) the retransmission timers A, E and G are never
   armed, and the "wait for retransmissions" timers D, I, J and K are zero: the transaction ends
   as soon as it enters the state that would have armed them (§17.1.1.2, §17.1.2.2,
   §17.2.1, §17.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerConfig:
    """T1, T2, T4 and Timer D; every other timer is derived from them as the RFC says."""

    t1: float = 0.5
    """RTT estimate (s). A, E and G start at T1; B, F, H, J, L and M are 64*T1."""
    t2: float = 4.0
    """Cap on the retransmit interval of non-INVITE requests and INVITE responses (s)."""
    t4: float = 5.0
    """Longest time a message stays in the network (s): Timers I and K over UDP."""
    timer_d: float = 32.0
    """Timer D over UDP (s): "at least 32 seconds" (§17.1.1.2) to absorb final retransmissions."""

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"t1 must be > 0, got {self.t1}")
        if not self.t2 >= self.t1:
            raise ValueError(f"t2 must be >= t1, got t2={self.t2} t1={self.t1}")
        if not self.t4 >= 0 or not self.timer_d >= 0:
            raise ValueError("t4 and timer_d must be >= 0")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (UDP), L and M."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timer_d

    def i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timeout

    def k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


DEFAULT_TIMERS = TimerConfig()
