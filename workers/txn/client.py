"""Client transactions: INVITE (RFC 3261 §17.1.1 with RFC 6026 Accepted) and non-INVITE (§17.1.2).

Rules:
1. A client transaction holds the request as bytes (what was sent, for retransmission and to
   build ACK and CANCEL from) until a final response makes it useless, then only what it may
   still have to send again: the hop-by-hop ACK in Completed, nothing in Accepted.
2. INVITE: 2xx goes to Accepted (RFC 6026 §7.2): 2xx retransmissions and 2xx from other forks
   are passed up so the proxy forwards them (§16.7 step 5); Timer M ends it. 300-699 goes to
   Completed: the ACK is sent at once and re-sent for each retransmitted final; Timer D ends it.
   A 2xx arriving in Completed (a fork that answered after another one failed) is passed up.
3. CANCEL (§9.1): asked for in Calling it waits for a provisional response (a CANCEL may not
   overtake the INVITE); in Proceeding a ``SendCancel`` event carries it, once. After a final
   response it is too late and the request is ignored. Non-INVITE requests are never cancelled.
4. Timer B/F report ``TimedOut``: the proxy, not the transaction, decides to answer 408.
5. Proceeding of an INVITE has no timer here: the proxy's Timer C (§16.6 step 11) bounds it.
6. Abandoned (machine rule 7): an INVITE Proceeding ends at once (the callee has the request
   and nothing is left to retransmit); Calling and a non-INVITE before its final keep
   retransmitting until Timer B or F, as the next hop may not have the request yet.
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from ingress.sip.errors import SipError
from ingress.sip.message import Response
from workers.txn.events import ResponseReceived, SendCancel
from workers.txn.machine import Input, State, Transaction, timed_out
from workers.txn.messages import build_ack, build_cancel
from workers.txn.timers import DEFAULT_TIMERS, TimerConfig

S, I = State, Input

_CANCEL_NONE, _CANCEL_PENDING, _CANCEL_SENT = 0, 1, 2


@mypyc_attr(allow_interpreted_subclasses=True)
class ClientTransaction(Transaction):
    """Base of both client machines: the request, the response inputs, the key."""

    __slots__ = ("_ack", "_cancel", "_request")

    def __init__(
        self,
        request: bytes,
        *,
        branch: str,
        method: str,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        dest: Any = None,
        context: Any = None,
    ) -> None:
        """Args:
        request: the request exactly as it will be sent (top Via is ours, with ``branch``).
        branch: the branch of that top Via; with ``method`` the key of §17.1.3.
        method: the CSeq method; ACK never has a client transaction.
        reliable: the transport to the next hop is TCP/TLS/SCTP (no retransmissions).
        """
        if method == "ACK":
            raise ValueError("ACK has no client transaction (§17.1.1.3, §13.2.2.4)")
        super().__init__((branch, method), reliable=reliable, timers=timers, dest=dest,
                         context=context)  # fmt: skip
        self._request: bytes | None = request
        self._ack: bytes | None = None
        self._cancel = _CANCEL_NONE

    @property
    def branch(self) -> str:
        return str(self.key[0])

    @property
    def method(self) -> str:
        return str(self.key[1])

    @property
    def request(self) -> bytes | None:
        """The request as sent, while the transaction may still need it."""
        return self._request

    def start(self, now: float) -> None:
        """Send the request (the TU's first input)."""
        self._process(I.SEND_REQUEST, now, None)

    def receive_response(self, response: Response, now: float) -> None:
        """A response the table matched to this transaction (§17.1.3)."""
        status = response.status
        inp = I.RECV_1XX if status < 200 else I.RECV_2XX if status < 300 else I.RECV_FINAL
        self._process(inp, now, response)

    def cancel(self, now: float) -> None:
        """Ask for a CANCEL of this INVITE (rule 3); a ``SendCancel`` event follows when allowed.

        Raises:
            InvalidTransition: this is not an INVITE transaction (§9.1: never cancel others).
        """
        self._process(I.CANCEL, now, None)

    def _drop_buffers(self) -> None:
        self._request = self._ack = None

    # -- effects -----------------------------------------------------------------------------

    def _pass_up(self, now: float, response: Response) -> None:
        self._emit(ResponseReceived(response))


@mypyc_attr(allow_interpreted_subclasses=True)
class InviteClientTransaction(ClientTransaction):
    kind = "INVITE client transaction"
    is_invite = True
    __slots__ = ()

    def _send_request(self, now: float, arg: Any) -> None:
        self._send(self._request, False)
        self._arm_wait(I.TIMER_B, self.timers.timeout, now)
        if not self.reliable:
            self._arm_retx(I.TIMER_A, self.timers.t1, now, rearm=False)

    def _timer_a(self, now: float, arg: Any) -> None:
        self._send(self._request, True)
        self._arm_retx(I.TIMER_A, 2 * self._retx_iv, now, rearm=True)  # A doubles, no cap

    def _proceed(self, now: float, response: Response) -> None:
        self._disarm()  # A and B stop: Proceeding waits for the TU's Timer C
        self._emit(ResponseReceived(response))
        if self._cancel == _CANCEL_PENDING:
            self._send_cancel(now, None)

    def _accept(self, now: float, response: Response) -> None:
        self._disarm()
        self._request = None
        self._emit(ResponseReceived(response))
        self._arm_wait(I.TIMER_M, self.timers.timeout, now)

    def _complete(self, now: float, response: Response) -> None:
        self._disarm()
        self._emit(ResponseReceived(response))
        if self._request is not None:
            try:
                self._ack = build_ack(self._request, response)
            except SipError:  # our own bytes did not parse: no ACK rather than a crash
                self._ack = None
            self._request = None
        self._send(self._ack, False)
        self._arm_wait(I.TIMER_D, self.timers.d(self.reliable), now)

    def _resend_ack(self, now: float, response: Response) -> None:
        self._send(self._ack, True)

    def _cancel_asked(self, now: float, arg: Any) -> None:
        if self._cancel == _CANCEL_NONE:
            self._cancel = _CANCEL_PENDING

    def _send_cancel(self, now: float, arg: Any) -> None:
        if self._cancel == _CANCEL_SENT or self._request is None:
            return
        self._cancel = _CANCEL_SENT
        try:
            self._emit(SendCancel(build_cancel(self._request)))
        except SipError:
            pass  # see _complete


_IC = InviteClientTransaction
InviteClientTransaction.TRANSITIONS = {
    (S.IDLE, I.SEND_REQUEST): (_IC._send_request, S.CALLING),
    (S.CALLING, I.TIMER_A): (_IC._timer_a, S.CALLING),
    (S.CALLING, I.TIMER_B): (timed_out("B"), S.TERMINATED),
    (S.CALLING, I.RECV_1XX): (_IC._proceed, S.PROCEEDING),
    (S.CALLING, I.RECV_2XX): (_IC._accept, S.ACCEPTED),
    (S.CALLING, I.RECV_FINAL): (_IC._complete, S.COMPLETED),
    (S.CALLING, I.CANCEL): (_IC._cancel_asked, S.CALLING),
    (S.CALLING, I.TRANSPORT_ERROR): (_IC._transport_failed, S.TERMINATED),
    (S.CALLING, I.ABANDON): (None, S.CALLING),  # rule 6: retransmitted until Timer B
    (S.PROCEEDING, I.RECV_1XX): (_IC._pass_up, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_2XX): (_IC._accept, S.ACCEPTED),
    (S.PROCEEDING, I.RECV_FINAL): (_IC._complete, S.COMPLETED),
    (S.PROCEEDING, I.CANCEL): (_IC._send_cancel, S.PROCEEDING),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (_IC._transport_failed, S.TERMINATED),
    (S.PROCEEDING, I.ABANDON): (None, S.TERMINATED),  # rule 6: no timer would end it
    (S.COMPLETED, I.RECV_1XX): (None, S.COMPLETED),  # late provisional: absorbed
    (S.COMPLETED, I.RECV_2XX): (_IC._pass_up, S.COMPLETED),  # rule 2: another fork answered
    (S.COMPLETED, I.RECV_FINAL): (_IC._resend_ack, S.COMPLETED),
    (S.COMPLETED, I.CANCEL): (None, S.COMPLETED),  # too late
    (S.COMPLETED, I.TIMER_D): (None, S.TERMINATED),
    (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),  # the final is already up
    (S.COMPLETED, I.ABANDON): (None, S.COMPLETED),  # Timer D ends it
    (S.ACCEPTED, I.RECV_1XX): (None, S.ACCEPTED),
    (S.ACCEPTED, I.RECV_2XX): (_IC._pass_up, S.ACCEPTED),  # RFC 6026 §7.2
    (S.ACCEPTED, I.RECV_FINAL): (None, S.ACCEPTED),
    (S.ACCEPTED, I.CANCEL): (None, S.ACCEPTED),
    (S.ACCEPTED, I.TIMER_M): (None, S.TERMINATED),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
    (S.ACCEPTED, I.ABANDON): (None, S.ACCEPTED),  # Timer M ends it
}


@mypyc_attr(allow_interpreted_subclasses=True)
class NonInviteClientTransaction(ClientTransaction):
    kind = "non-INVITE client transaction"
    __slots__ = ()

    def _send_request(self, now: float, arg: Any) -> None:
        self._send(self._request, False)
        self._arm_wait(I.TIMER_F, self.timers.timeout, now)
        if not self.reliable:
            self._arm_retx(I.TIMER_E, self.timers.t1, now, rearm=False)

    def _timer_e_trying(self, now: float, arg: Any) -> None:
        self._send(self._request, True)
        self._arm_retx(I.TIMER_E, min(2 * self._retx_iv, self.timers.t2), now, rearm=True)

    def _timer_e_proceeding(self, now: float, arg: Any) -> None:
        self._send(self._request, True)
        self._arm_retx(I.TIMER_E, self.timers.t2, now, rearm=True)

    def _complete(self, now: float, response: Response) -> None:
        self._disarm()
        self._request = None
        self._emit(ResponseReceived(response))
        self._arm_wait(I.TIMER_K, self.timers.k(self.reliable), now)


_NC = NonInviteClientTransaction
NonInviteClientTransaction.TRANSITIONS = {
    (S.IDLE, I.SEND_REQUEST): (_NC._send_request, S.TRYING),
    (S.TRYING, I.TIMER_E): (_NC._timer_e_trying, S.TRYING),
    (S.TRYING, I.TIMER_F): (timed_out("F"), S.TERMINATED),
    (S.TRYING, I.RECV_1XX): (_NC._pass_up, S.PROCEEDING),  # E and F keep running
    (S.TRYING, I.RECV_2XX): (_NC._complete, S.COMPLETED),
    (S.TRYING, I.RECV_FINAL): (_NC._complete, S.COMPLETED),
    (S.TRYING, I.TRANSPORT_ERROR): (_NC._transport_failed, S.TERMINATED),
    (S.TRYING, I.ABANDON): (None, S.TRYING),  # rule 6: retransmitted until Timer F
    (S.PROCEEDING, I.TIMER_E): (_NC._timer_e_proceeding, S.PROCEEDING),
    (S.PROCEEDING, I.TIMER_F): (timed_out("F"), S.TERMINATED),
    (S.PROCEEDING, I.RECV_1XX): (_NC._pass_up, S.PROCEEDING),
    (S.PROCEEDING, I.RECV_2XX): (_NC._complete, S.COMPLETED),
    (S.PROCEEDING, I.RECV_FINAL): (_NC._complete, S.COMPLETED),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (_NC._transport_failed, S.TERMINATED),
    (S.PROCEEDING, I.ABANDON): (None, S.PROCEEDING),  # rule 6: retransmitted until Timer F
    (S.COMPLETED, I.RECV_1XX): (None, S.COMPLETED),  # retransmissions absorbed (§17.1.2.2)
    (S.COMPLETED, I.RECV_2XX): (None, S.COMPLETED),
    (S.COMPLETED, I.RECV_FINAL): (None, S.COMPLETED),
    (S.COMPLETED, I.TIMER_K): (None, S.TERMINATED),
    (S.COMPLETED, I.TRANSPORT_ERROR): (None, S.TERMINATED),
    (S.COMPLETED, I.ABANDON): (None, S.COMPLETED),  # Timer K ends it
}


def new_client(
    request: bytes,
    *,
    branch: str,
    method: str,
    reliable: bool,
    timers: TimerConfig = DEFAULT_TIMERS,
    dest: Any = None,
    context: Any = None,
) -> ClientTransaction:
    """The client machine for ``method`` (not started: call ``start(now)``)."""
    cls = InviteClientTransaction if method == "INVITE" else NonInviteClientTransaction
    return cls(request, branch=branch, method=method, reliable=reliable, timers=timers,
               dest=dest, context=context)  # fmt: skip
