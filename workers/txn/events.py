"""What a transaction asks of its user (the TU and the transport), and the errors it raises.

A transaction never does I/O. Every input returns nothing and queues events instead; the user
pops them with ``next_event()`` (aioquic's deque pattern) and acts on them in order:

    Transmit          hand ``data`` to the transport toward this transaction's peer
    RequestReceived   server: a new request (or an ACK in Accepted) for the TU
    ResponseReceived  client: a response for the TU
    CancelReceived    server INVITE: a CANCEL matched it while still Proceeding (§9.2)
    SendCancel        client INVITE: a CANCEL (§9.1) the TU should send in its own client
                      transaction, now that a provisional response allows it
    TimedOut          Timer B or F (no final response: the proxy answers 408, §16.7 step 6)
                      or H (no ACK for a non-2xx final: a transaction failure, §17.2.1)
    TransportFailed   the transport reported a send failure (§17.1.4, §17.2.4)
    Terminated        the last event of every transaction; nothing follows it

Errors:

    ProtocolError           an input the transaction's table does not define for its state
    └── InvalidTransition   the transaction is now Terminated (h2 ``stream.py`` rule)
    TableFull               no room for a new transaction: the caller answers 503
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ingress.sip.message import Request, Response


@dataclass(frozen=True, slots=True)
class Transmit:
    data: bytes
    #: True when the transaction re-sent something on its own (timer or absorbed retransmission)
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class RequestReceived:
    request: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response


@dataclass(frozen=True, slots=True)
class CancelReceived:
    cancel: Request


@dataclass(frozen=True, slots=True)
class SendCancel:
    data: bytes


@dataclass(frozen=True, slots=True)
class TimedOut:
    #: "B", "F" or "H"
    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    pass


@dataclass(frozen=True, slots=True)
class Terminated:
    pass


Event = (
    Transmit
    | RequestReceived
    | ResponseReceived
    | CancelReceived
    | SendCancel
    | TimedOut
    | TransportFailed
    | Terminated
)


class ProtocolError(Exception):
    """An input a transaction cannot take in its current state."""


class InvalidTransition(ProtocolError):
    """No (state, input) entry in the table: the transaction has gone to Terminated."""


class TableFull(Exception):
    """The transaction table holds its maximum: refuse the request with :attr:`status`."""

    status: ClassVar[int] = 503
    reason: ClassVar[str] = "Service Unavailable"
