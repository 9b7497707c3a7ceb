"""SIP transactions for the transaction-stateful proxy, sans-IO (RFC 3261 §17, RFC 6026).

The public face of ``workers/txn/``; import from here. Read docs/transactions.md first.

    timers.py    TimerConfig: T1, T2, T4, Timer D; everything else derives from them
    events.py    the events a transaction queues, ProtocolError / InvalidTransition, TableFull
    machine.py   State, Input, the Transaction base: table lookup, timer slots, event queue
    client.py    INVITE and non-INVITE client transactions (tables + effects)
    server.py    INVITE and non-INVITE server transactions (tables + effects)
    messages.py  the ACK for a non-2xx final and the CANCEL, built from the request sent
    keys.py      §17.1.3 / §17.2.3 matching keys, with the RFC 2543 fallback
    held.py      finished transactions reduced to what absorbing needs, FIFO lanes, own bound
    table.py     TransactionTable: matching, admission (503 when full), one heap, one queue

Rules:
1. No I/O, no clock: every call that can move time takes ``now`` (seconds, monotonic); the
   user arms one timer for ``next_deadline()`` and calls ``handle_timer(now)`` when it fires.
2. Nothing is sent or passed up by a call's return value: events are queued and taken with
   ``next_event()``, in order.
3. A state machine is a table; an input its table lacks terminates the transaction and raises
   ``InvalidTransition`` (a ``ProtocolError``). Inputs a peer can cause are always defined.
"""

from workers.txn.client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    new_client,
)
from workers.txn.events import (
    CancelReceived,
    Event,
    InvalidTransition,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    SendCancel,
    TableFull,
    Terminated,
    TimedOut,
    Transmit,
    TransportFailed,
)
from workers.txn.held import (
    Finished,
    FinishedInviteClient,
    FinishedInviteServer,
    FinishedNonInviteClient,
    FinishedNonInviteServer,
    Held,
    HeldPair,
    HeldStore,
)
from workers.txn.keys import response_key, server_key
from workers.txn.machine import Input, State, Transaction
from workers.txn.messages import build_ack, build_cancel
from workers.txn.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    new_server,
)
from workers.txn.table import TransactionTable
from workers.txn.timers import DEFAULT_TIMERS, TimerConfig

__all__ = [
    "DEFAULT_TIMERS",
    "CancelReceived",
    "ClientTransaction",
    "Event",
    "Finished",
    "FinishedInviteClient",
    "FinishedInviteServer",
    "FinishedNonInviteClient",
    "FinishedNonInviteServer",
    "Held",
    "HeldPair",
    "HeldStore",
    "Input",
    "InvalidTransition",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "SendCancel",
    "ServerTransaction",
    "State",
    "TableFull",
    "Terminated",
    "TimedOut",
    "TimerConfig",
    "Transaction",
    "TransactionTable",
    "Transmit",
    "TransportFailed",
    "build_ack",
    "build_cancel",
    "new_client",
    "new_server",
    "response_key",
    "server_key",
]
