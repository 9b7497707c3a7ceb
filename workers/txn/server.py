"""Server transactions: INVITE (RFC 3261 §17.2.1 with RFC 6026 Accepted) and non-INVITE (§17.2.2).

Rules:
1. Retransmissions are absorbed: a retransmitted request is never passed up again; the
   transaction re-sends its last response instead (nothing while a non-INVITE is Trying). This
   is what keeps a stateful proxy from forwarding a request twice.
2. An INVITE server transaction sends ``100 Trying`` as soon as it starts (a proxy must,
   §16.2 "SHOULD" and §17.2.1's 200 ms rule), unless built with ``send_trying=False``.
3. The parsed request is held only until the final response: then the TU has answered and only
   the response bytes are kept (for retransmission), nothing at all in Accepted.
4. INVITE: a 2xx from the TU goes to Accepted (RFC 6026 §7.1): the transaction no longer
   retransmits on its own, further 2xx from the TU (retransmissions, other forks) are sent,
   request retransmissions are absorbed and an ACK that matches is passed up; Timer L ends it.
   A 300-699 goes to Completed: retransmitted with Timer G over UDP until the ACK (Confirmed,
   Timer I) or Timer H (``TimedOut("H")``).
5. A CANCEL that matches while Proceeding yields ``CancelReceived``; later it changes nothing.
   The CANCEL itself has its own non-INVITE server transaction (the table creates it) and the
   TU answers it (§9.2, §16.10).
6. A response the state cannot take (a second final, a 1xx after a final) is a TU bug and an
   ``InvalidTransition``; ``accepts(status)`` lets the TU ask first. A proxy forwards a late 2xx
   for an INVITE whose transaction already sent a non-2xx statelessly (§16.7 step 5).
7. Abandoned (machine rule 7): a transaction whose final the TU has not sent ends at once,
   sending nothing (the request's retransmissions reach the worker that owns the call now);
   one with its final sent runs on to its own timer.
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from ingress.sip.message import Request
from ingress.sip.serialize import build_response
from workers.txn.events import CancelReceived, RequestReceived
from workers.txn.machine import Input, State, Transaction, timed_out
from workers.txn.timers import DEFAULT_TIMERS, TimerConfig

S, I = State, Input


def response_input(status: int) -> Input:
    return I.SEND_1XX if status < 200 else I.SEND_2XX if status < 300 else I.SEND_FINAL


@mypyc_attr(allow_interpreted_subclasses=True)
class ServerTransaction(Transaction):
    """Base of both server machines."""

    __slots__ = ("_last", "_send_trying", "request")

    def __init__(
        self,
        request: Request,
        *,
        key: tuple[Any, ...],
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        send_trying: bool = True,
        dest: Any = None,
        context: Any = None,
    ) -> None:
        """Args:
        request: the request that creates the transaction (not ACK).
        key: its §17.2.3 key (``workers.txn.keys.server_key``).
        reliable: it came over TCP/TLS/SCTP.
        send_trying: INVITE only: answer 100 Trying at once (rule 2).
        """
        if request.method == "ACK":
            raise ValueError("ACK never creates a server transaction (§17.2.3)")
        super().__init__(key, reliable=reliable, timers=timers, dest=dest, context=context)
        #: the request, until the final response is sent (rule 3)
        self.request: Request | None = request
        self._last: bytes | None = None  # the response to re-send on a retransmission
        self._send_trying = send_trying

    @property
    def method(self) -> str:
        return str(self.key[-1])

    def start(self, now: float) -> None:
        """Take the request that created the transaction."""
        self._process(I.RECV_REQUEST, now, self.request)

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmission of the request (the table matched it, §17.2.3)."""
        self._process(I.RECV_REQUEST, now, request)

    def receive_ack(self, ack: Request, now: float) -> None:
        """An ACK the table matched to this INVITE transaction."""
        self._process(I.RECV_ACK, now, ack)

    def receive_cancel(self, cancel: Request, now: float) -> None:
        """A CANCEL the table matched to this INVITE transaction (§9.2)."""
        self._process(I.RECV_CANCEL, now, cancel)

    def respond(self, data: bytes, status: int, now: float) -> None:
        """Send a response from the TU.

        Raises:
            InvalidTransition: the state does not take that response (rule 6).
        """
        self._process(response_input(status), now, data)

    def accepts(self, status: int) -> bool:
        """Whether ``respond`` with ``status`` is defined in the current state."""
        return (self.state, response_input(status)) in self.TRANSITIONS

    def _drop_buffers(self) -> None:
        self._last = None
        self.request = None

    # -- effects -----------------------------------------------------------------------------

    def _pass_up(self, now: float, request: Request) -> None:
        self._emit(RequestReceived(request))

    def _resend_last(self, now: float, request: Request) -> None:
        self._send(self._last, True)

    def _send_provisional(self, now: float, data: bytes) -> None:
        self._last = data
        self._send(data, False)


@mypyc_attr(allow_interpreted_subclasses=True)
class InviteServerTransaction(ServerTransaction):
    kind = "INVITE server transaction"
    is_invite = True
    __slots__ = ()

    def _start(self, now: float, request: Request) -> None:
        if self._send_trying:
            self._last = build_response(request, 100, "Trying")
            self._send(self._last, False)
        self._emit(RequestReceived(request))

    def _cancelled(self, now: float, cancel: Request) -> None:
        self._emit(CancelReceived(cancel))

    def _accept(self, now: float, data: bytes) -> None:
        self._last = self.request = None
        self._send(data, False)
        self._arm_wait(I.TIMER_L, self.timers.timeout, now)

    def _send_2xx(self, now: float, data: bytes) -> None:
        self._send(data, False)

    def _complete(self, now: float, data: bytes) -> None:
        self._last, self.request = data, None
        self._send(data, False)
        self._arm_wait(I.TIMER_H, self.timers.timeout, now)
        if not self.reliable:
            self._arm_retx(I.TIMER_G, self.timers.t1, now, rearm=False)

    def _timer_g(self, now: float, arg: Any) -> None:
        self._send(self._last, True)
        self._arm_retx(I.TIMER_G, min(2 * self._retx_iv, self.timers.t2), now, rearm=True)

    def _confirm(self, now: float, ack: Request) -> None:
        self._disarm()
        self._last = None  # Confirmed only absorbs
        self._arm_wait(I.TIMER_I, self.timers.i(self.reliable), now)


_IS = InviteServerTransaction
InviteServerTransaction.TRANSITIONS = {
    (S.IDLE, I.RECV_REQUEST): (_IS._start, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_REQUEST): (_IS._resend_last, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_ACK): (None, S.PROCEEDING),  # cannot match legitimately: absorbed
    (S.PROCEEDING, I.RECV_CANCEL): (_IS._cancelled, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_1XX): (_IS._send_provisional, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_2XX): (_IS._accept, S.ACCEPTED),
    (S.PROCEEDING, I.SEND_FINAL): (_IS._complete, S.COMPLETED),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (_IS._transport_failed, S.TERMINATED),
    (S.PROCEEDING, I.ABANDON): (None, S.TERMINATED),  # rule 7
    (S.COMPLETED, I.RECV_REQUEST): (_IS._resend_last, S.COMPLETED),
    (S.COMPLETED, I.RECV_ACK): (_IS._confirm, S.CONFIRMED),
    (S.COMPLETED, I.RECV_CANCEL): (None, S.COMPLETED),
    (S.COMPLETED, I.TIMER_G): (_IS._timer_g, S.COMPLETED),
    (S.COMPLETED, I.TIMER_H): (timed_out("H"), S.TERMINATED),
    (S.COMPLETED, I.TRANSPORT_ERROR): (_IS._transport_failed, S.TERMINATED),
    (S.COMPLETED, I.ABANDON): (None, S.COMPLETED),  # Timer H (or the ACK) ends it
    (S.CONFIRMED, I.RECV_REQUEST): (None, S.CONFIRMED),
    (S.CONFIRMED, I.RECV_ACK): (None, S.CONFIRMED),
    (S.CONFIRMED, I.RECV_CANCEL): (None, S.CONFIRMED),
    (S.CONFIRMED, I.TIMER_I): (None, S.TERMINATED),
    (S.CONFIRMED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
    (S.CONFIRMED, I.ABANDON): (None, S.CONFIRMED),  # Timer I ends it
    (S.ACCEPTED, I.RECV_REQUEST): (None, S.ACCEPTED),  # RFC 6026 §7.1: absorbed
    (S.ACCEPTED, I.RECV_ACK): (_IS._pass_up, S.ACCEPTED),  # RFC 6026 §8.7: to the TU
    (S.ACCEPTED, I.RECV_CANCEL): (None, S.ACCEPTED),
    (S.ACCEPTED, I.SEND_2XX): (_IS._send_2xx, S.ACCEPTED),
    (S.ACCEPTED, I.TIMER_L): (None, S.TERMINATED),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (_IS._transport_failed, S.ACCEPTED),  # RFC 6026 §8.8
    (S.ACCEPTED, I.ABANDON): (None, S.ACCEPTED),  # Timer L ends it
}


@mypyc_attr(allow_interpreted_subclasses=True)
class NonInviteServerTransaction(ServerTransaction):
    kind = "non-INVITE server transaction"
    __slots__ = ()

    def _complete(self, now: float, data: bytes) -> None:
        self._last, self.request = data, None
        self._send(data, False)
        self._arm_wait(I.TIMER_J, self.timers.j(self.reliable), now)


_NS = NonInviteServerTransaction
NonInviteServerTransaction.TRANSITIONS = {
    (S.IDLE, I.RECV_REQUEST): (_NS._pass_up, S.TRYING),
    (S.TRYING, I.RECV_REQUEST): (None, S.TRYING),  # absorbed: nothing to re-send yet
    (S.TRYING, I.SEND_1XX): (_NS._send_provisional, S.PROCEEDING),
    (S.TRYING, I.SEND_2XX): (_NS._complete, S.COMPLETED),
    (S.TRYING, I.SEND_FINAL): (_NS._complete, S.COMPLETED),
    (S.TRYING, I.TRANSPORT_ERROR): (_NS._transport_failed, S.TERMINATED),
    (S.TRYING, I.ABANDON): (None, S.TERMINATED),  # rule 7
    (S.PROCEEDING, I.RECV_REQUEST): (_NS._resend_last, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_1XX): (_NS._send_provisional, S.PROCEEDING),
    (S.PROCEEDING, I.SEND_2XX): (_NS._complete, S.COMPLETED),
    (S.PROCEEDING, I.SEND_FINAL): (_NS._complete, S.COMPLETED),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (_NS._transport_failed, S.TERMINATED),
    (S.PROCEEDING, I.ABANDON): (None, S.TERMINATED),  # rule 7
    (S.COMPLETED, I.RECV_REQUEST): (_NS._resend_last, S.COMPLETED),
    (S.COMPLETED, I.TIMER_J): (None, S.TERMINATED),
    (S.COMPLETED, I.TRANSPORT_ERROR): (_NS._transport_failed, S.TERMINATED),
    (S.COMPLETED, I.ABANDON): (None, S.COMPLETED),  # Timer J ends it
}


def new_server(
    request: Request,
    *,
    key: tuple[Any, ...],
    reliable: bool,
    timers: TimerConfig = DEFAULT_TIMERS,
    send_trying: bool = True,
    dest: Any = None,
    context: Any = None,
) -> ServerTransaction:
    """The server machine for ``request`` (not started: call ``start(now)``)."""
    cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    return cls(request, key=key, reliable=reliable, timers=timers, send_trying=send_trying,
               dest=dest, context=context)  # fmt: skip
