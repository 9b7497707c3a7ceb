"""Binary Star failover (ZeroMQ Guide ch. 4) as a table, sans-IO.

Two nodes, one configured ``PRIMARY`` and one ``BACKUP``, heartbeat their state to each
other; exactly one of them should be ``ACTIVE`` (holds the node's virtual listen address,
serves calls) and the other ``PASSIVE`` (holds replicas, ready to take over).

Rules:
1. The machine is ``TRANSITIONS[(State, Input)] = (effect, next)``, defined for every pair
   (h2 ``stream.py``): a peer cannot make it raise. ``docs/stateplane.md`` shows the table.
2. Inputs are the peer's state as its heartbeat reports it (``PEER_PRIMARY`` ...),
   ``PEER_EXPIRED`` (no heartbeat for ``EXPIRY_HEARTBEATS`` intervals, checked by
   ``handle_timer(now)``), and ``CLIENT_REQUEST`` (a request reached us: only an active node
   accepts one).
3. Takeover: a ``PASSIVE`` node whose peer expires becomes ``ACTIVE`` (effect ``activate``:
   the caller binds the virtual address and starts serving the replicated dialogs). The Guide
   waits for a client request before taking over, to survive a partition that cut only the
   heartbeats; for SIP the address is moved by us (or a VRRP daemon), so no request can reach
   the backup before it takes over: expiry alone decides, and split brain is handled by 4.
   A node that starts and hears no peer (``PRIMARY`` or ``BACKUP`` + expired) becomes active
   too: a lone node serves.
4. Split brain: an ``ACTIVE`` node hearing an active peer (after a partition heals) logs
   ``split_brain`` loudly; the side with the lower ``(epoch, node)`` yields (effect
   ``yield``: unbind the address, go ``PASSIVE``, resnapshot from the winner), the other stays
   active. Both sides compute the same answer from the same heartbeats, with no extra round.
   Two ``PASSIVE`` nodes (each believes the other active) resolve the same way: the higher
   ``(epoch, node)`` activates.
5. Two nodes configured alike (two primaries, two backups) is a configuration fault:
   reported (``fault``), nothing changes; an operator must fix it.
6. Failback is asked for, never automatic (the Guide's rule against flapping): ``HAND_BACK``
   takes an ``ACTIVE`` node that is configured ``BACKUP`` back to ``BACKUP``, as if it had
   just started (effect ``hand_back``: release the address and its dialogs). The peer, passive,
   hears ``backup`` and activates as it does for a restarted active; we then hear it active
   and go passive. A configured primary, a node that is not active, or one whose peer is
   silent (nobody would take the address) ignores the input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    PRIMARY = "primary"  # configured primary, starting: waits to hear the peer
    BACKUP = "backup"  # configured backup, starting
    ACTIVE = "active"
    PASSIVE = "passive"


class Input(enum.Enum):
    PEER_PRIMARY = "peer_primary"
    PEER_BACKUP = "peer_backup"
    PEER_ACTIVE = "peer_active"
    PEER_PASSIVE = "peer_passive"
    PEER_EXPIRED = "peer_expired"
    CLIENT_REQUEST = "client_request"
    HAND_BACK = "hand_back"  # an operator's failback (rule 6)


class Effect(enum.Enum):
    NONE = "-"
    ACTIVATE = "activate"  # bind the virtual address, serve
    PASSIVATE = "passivate"  # a starting node finds an active peer: stay off the address
    ACCEPT = "accept"  # a client request is ours to serve
    REJECT = "reject"  # a client request is not (we are not active)
    SPLIT_BRAIN = "split_brain"  # dual active: rule 4 picks who yields
    DUAL_PASSIVE = "dual_passive"  # nobody active: rule 4 picks who activates
    FAULT = "fault"  # rule 5
    HAND_BACK = "hand_back"  # rule 6: release the address and its dialogs to the peer


#: missed heartbeat intervals after which the peer is expired (the Guide's choice)
EXPIRY_HEARTBEATS = 2

S, I, E = State, Input, Effect
TRANSITIONS: dict[tuple[State, Input], tuple[Effect, State]] = {
    (S.PRIMARY, I.PEER_PRIMARY): (E.FAULT, S.PRIMARY),
    (S.PRIMARY, I.PEER_BACKUP): (E.ACTIVATE, S.ACTIVE),
    (S.PRIMARY, I.PEER_ACTIVE): (E.PASSIVATE, S.PASSIVE),
    (S.PRIMARY, I.PEER_PASSIVE): (E.NONE, S.PRIMARY),  # it goes active on our heartbeat
    (S.PRIMARY, I.PEER_EXPIRED): (E.ACTIVATE, S.ACTIVE),
    (S.PRIMARY, I.CLIENT_REQUEST): (E.REJECT, S.PRIMARY),
    (S.BACKUP, I.PEER_PRIMARY): (E.NONE, S.BACKUP),  # the primary activates on ours
    (S.BACKUP, I.PEER_BACKUP): (E.FAULT, S.BACKUP),
    (S.BACKUP, I.PEER_ACTIVE): (E.PASSIVATE, S.PASSIVE),
    (S.BACKUP, I.PEER_PASSIVE): (E.NONE, S.BACKUP),  # it goes active on our heartbeat
    (S.BACKUP, I.PEER_EXPIRED): (E.ACTIVATE, S.ACTIVE),
    (S.BACKUP, I.CLIENT_REQUEST): (E.REJECT, S.BACKUP),
    (S.ACTIVE, I.PEER_PRIMARY): (E.NONE, S.ACTIVE),  # a restarted peer: it passivates
    (S.ACTIVE, I.PEER_BACKUP): (E.NONE, S.ACTIVE),
    (S.ACTIVE, I.PEER_ACTIVE): (E.SPLIT_BRAIN, S.ACTIVE),  # or PASSIVE for the loser
    (S.ACTIVE, I.PEER_PASSIVE): (E.NONE, S.ACTIVE),
    (S.ACTIVE, I.PEER_EXPIRED): (E.NONE, S.ACTIVE),
    (S.ACTIVE, I.CLIENT_REQUEST): (E.ACCEPT, S.ACTIVE),
    (S.PASSIVE, I.PEER_PRIMARY): (E.ACTIVATE, S.ACTIVE),  # the active one restarted
    (S.PASSIVE, I.PEER_BACKUP): (E.ACTIVATE, S.ACTIVE),
    (S.PASSIVE, I.PEER_ACTIVE): (E.NONE, S.PASSIVE),
    (S.PASSIVE, I.PEER_PASSIVE): (E.DUAL_PASSIVE, S.PASSIVE),  # or ACTIVE for the winner
    (S.PASSIVE, I.PEER_EXPIRED): (E.ACTIVATE, S.ACTIVE),  # takeover (rule 3)
    (S.PASSIVE, I.CLIENT_REQUEST): (E.REJECT, S.PASSIVE),
    (S.PRIMARY, I.HAND_BACK): (E.NONE, S.PRIMARY),
    (S.BACKUP, I.HAND_BACK): (E.NONE, S.BACKUP),
    (S.ACTIVE, I.HAND_BACK): (E.HAND_BACK, S.BACKUP),  # a configured primary: NONE (rule 6)
    (S.PASSIVE, I.HAND_BACK): (E.NONE, S.PASSIVE),
}
del S, I, E

_PEER_INPUT = {State.PRIMARY: Input.PEER_PRIMARY, State.BACKUP: Input.PEER_BACKUP,
               State.ACTIVE: Input.PEER_ACTIVE, State.PASSIVE: Input.PEER_PASSIVE}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    """What one input did: the caller acts on ``effect`` (bind, unbind, log) when ``state``
    changed or the effect is not ``NONE``."""

    input: Input
    effect: Effect
    before: State
    state: State
    #: rule 4: True when this side yields (SPLIT_BRAIN) or stays passive (DUAL_PASSIVE)
    yields: bool = False


def loses_to(mine: tuple[int, str], peer: tuple[int, str]) -> bool:
    """Rule 4: the lower ``(epoch, node)`` yields."""
    return mine < peer


class BinaryStar:
    """One node's end of the pair. Feed it the peer's heartbeats and client requests; call
    ``handle_timer(now)`` at ``next_timer()``; send ``heartbeat()`` every ``heartbeat_s``."""

    def __init__(self, role: State, node: str, epoch: int, *, heartbeat_s: float,
                 now: float) -> None:  # fmt: skip
        if role not in (State.PRIMARY, State.BACKUP):
            raise ValueError(f"a node starts as primary or backup, not {role.value}")
        self.state: State = role
        self.role = role  # as configured
        self.node = node
        self.epoch = epoch
        self.heartbeat_s = heartbeat_s
        self.peer_expiry = now + EXPIRY_HEARTBEATS * heartbeat_s
        self.peer_expired = False
        self.peer: tuple[int, str] | None = None

    def heartbeat(self) -> tuple[str, int, str]:
        """(state, epoch, node) to send the peer (``Hugz.role`` carries the state)."""
        return self.state.value, self.epoch, self.node

    def receive_heartbeat(self, peer_state: State, peer_epoch: int, peer_node: str,
                          now: float) -> Transition:  # fmt: skip
        self.peer_expiry = now + EXPIRY_HEARTBEATS * self.heartbeat_s
        self.peer_expired = False
        self.peer = (peer_epoch, peer_node)
        return self._step(_PEER_INPUT[peer_state])

    def client_request(self, now: float) -> Transition:
        """A request reached us: ``effect`` is ACCEPT only when we are active."""
        if not self.peer_expired and now >= self.peer_expiry:
            self.handle_timer(now)
        return self._step(Input.CLIENT_REQUEST)

    def hand_back(self) -> Transition:
        """Rule 6: an operator's failback."""
        return self._step(Input.HAND_BACK)

    def next_timer(self) -> float:
        return float("inf") if self.peer_expired else self.peer_expiry

    def handle_timer(self, now: float) -> Transition | None:
        """The peer expires (once) when ``EXPIRY_HEARTBEATS`` intervals pass unheard."""
        if self.peer_expired or now < self.peer_expiry:
            return None
        self.peer_expired = True
        return self._step(Input.PEER_EXPIRED)

    def _step(self, inp: Input) -> Transition:
        effect, nxt = TRANSITIONS[(self.state, inp)]
        if effect is Effect.HAND_BACK and (self.role is not State.BACKUP or self.peer_expired):
            effect, nxt = Effect.NONE, self.state  # rule 6: a primary keeps it; nobody to take it
        yields = False
        if effect in (Effect.SPLIT_BRAIN, Effect.DUAL_PASSIVE):
            mine, peer = (self.epoch, self.node), self.peer or (-1, "")
            yields = loses_to(mine, peer)
            if effect is Effect.SPLIT_BRAIN and yields:
                nxt = State.PASSIVE
            elif effect is Effect.DUAL_PASSIVE and not yields:
                nxt = State.ACTIVE
        before, self.state = self.state, nxt
        return Transition(inp, effect, before, nxt, yields)


def encode_roles(roles: dict[str, str]) -> str:
    """A heartbeat's role field when a node pairs several virtual addresses, each with its
    own machine: ``"address=state,..."`` (``stateplane/failover.py`` rule 1)."""
    return ",".join(f"{addr}={state}" for addr, state in sorted(roles.items()))


def decode_roles(text: str) -> dict[str, str]:
    """The inverse of ``encode_roles``; what is not ``address=state`` is left out."""
    out = {}
    for part in text.split(","):
        addr, eq, state = part.rpartition("=")
        if eq and addr:
            out[addr] = state
    return out
