"""RFC 3261 §17 / RFC 6026 scenarios for each transaction machine, over UDP and over TCP.

Each scenario is a list of timed steps and the exact timeline of events it must produce; time
only moves through ``handle_timer`` at each ``next_deadline()`` (as the worker's loop will do).
Default timers: T1 0.5 s, T2 4 s, T4 5 s, Timer D 32 s, so 64*T1 = 32 s.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.test_transactions_msgs import request, request_bytes, response
from workers.transactions import (
    CancelReceived,
    ClientTransaction,
    Event,
    InvalidTransition,
    RequestReceived,
    ResponseReceived,
    SendCancel,
    ServerTransaction,
    State,
    TimedOut,
    TimerConfig,
    Transaction,
    Transmit,
    new_client,
    new_server,
    server_key,
)


def summary(ev: Event) -> str:
    if isinstance(ev, Transmit):
        first = ev.data.split(b" ", 2)
        token = first[1] if first[0] == b"SIP/2.0" else first[0]
        return ("rtx " if ev.retransmission else "tx ") + token.decode()
    if isinstance(ev, ResponseReceived):
        return f"up {ev.response.status}"
    if isinstance(ev, RequestReceived):
        return f"up {ev.request.method}"
    if isinstance(ev, CancelReceived):
        return "cancelled"
    if isinstance(ev, SendCancel):
        return "send CANCEL"
    if isinstance(ev, TimedOut):
        return f"timeout {ev.timer}"
    return type(ev).__name__.lower().replace("transportfailed", "transport failed")


class Run:
    """Drives one transaction through timed steps and records ``(time, event)``."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self.now = 0.0
        self.trace: list[tuple[float, str]] = []

    def advance(self, t: float) -> None:
        while (d := self.txn.next_deadline()) is not None and d <= t:
            self.now = d
            self.txn.handle_timer(d)
            self.collect()
        self.now = t

    def collect(self) -> None:
        while (ev := self.txn.next_event()) is not None:
            self.trace.append((round(self.now, 3), summary(ev)))

    def step(self, t: float, action: str) -> None:
        self.advance(t)
        txn = self.txn
        verb, _, arg = action.partition(" ")
        if verb == "start":
            txn.start(t)  # type: ignore[attr-defined]
        elif verb == "recv":  # a response from the next hop
            assert isinstance(txn, ClientTransaction) and txn.request is not None or True
            txn.receive_response(response(REQ[txn.method], int(arg)), t)  # type: ignore[attr-defined]
        elif verb == "send":  # a response from the TU
            status = int(arg)
            assert isinstance(txn, ServerTransaction)
            txn.respond(b"SIP/2.0 %d X\r\n\r\n" % status, status, t)
        elif verb == "retransmit":
            assert isinstance(txn, ServerTransaction)
            txn.receive_request(request(txn.method), t)
        elif verb == "ack":
            assert isinstance(txn, ServerTransaction)
            txn.receive_ack(request("ACK", to_tag="uas1"), t)
        elif verb == "CANCEL":
            assert isinstance(txn, ServerTransaction)
            txn.receive_cancel(request("CANCEL"), t)
        elif verb == "cancel":
            assert isinstance(txn, ClientTransaction)
            txn.cancel(t)
        elif verb == "transport-error":
            txn.transport_error(t)
        elif verb == "end":
            self.advance(10_000.0)
        else:
            raise AssertionError(action)
        self.collect()


REQ = {"INVITE": request_bytes("INVITE"), "OPTIONS": request_bytes("OPTIONS")}


def client(method: str, reliable: bool) -> ClientTransaction:
    return new_client(REQ[method], branch="z9hG4bK-a1", method=method, reliable=reliable)


def server(method: str, reliable: bool) -> ServerTransaction:
    req = request(method)
    return new_server(req, key=server_key(req), reliable=reliable)


def run(txn: Transaction, steps: list[tuple[float, str]]) -> list[tuple[float, str]]:
    r = Run(txn)
    for t, action in steps:
        r.step(t, action)
    assert txn.state is State.TERMINATED
    assert r.trace[-1][1] == "terminated"
    return r.trace


A_TIMES = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, doubling, no cap
E_TIMES = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # E: doubling, capped at T2

INVITE_CLIENT: list[tuple[str, bool, list[tuple[float, str]], list[tuple[float, str]]]] = [
    (
        "no answer (Timer A retransmits, Timer B = 64*T1 times out)",
        False,
        [(0, "start"), (0, "end")],
        [(0, "tx INVITE")] + [(t, "rtx INVITE") for t in A_TIMES]
        + [(32, "timeout B"), (32, "terminated")],
    ),
    (
        "no answer over TCP: no retransmission, Timer B",
        True,
        [(0, "start"), (0, "end")],
        [(0, "tx INVITE"), (32, "timeout B"), (32, "terminated")],
    ),
    (
        "1xx stops retransmissions; 486 is ACKed and its retransmissions re-ACKed; Timer D 32 s",
        False,
        [(0, "start"), (1, "recv 100"), (2, "recv 180"), (5, "recv 486"), (5.5, "recv 486"),
         (6, "recv 180"), (6, "end")],
        [(0, "tx INVITE"), (0.5, "rtx INVITE"), (1, "up 100"), (2, "up 180"), (5, "up 486"),
         (5, "tx ACK"), (5.5, "rtx ACK"), (37, "terminated")],
    ),
    (
        "486 over TCP: ACK, then Terminated at once (Timer D = 0)",
        True,
        [(0, "start"), (1, "recv 486")],
        [(0, "tx INVITE"), (1, "up 486"), (1, "tx ACK"), (1, "terminated")],
    ),
    (
        "final without provisional goes straight to Completed",
        False,
        [(0, "start"), (0.7, "recv 603"), (0.7, "end")],
        [(0, "tx INVITE"), (0.5, "rtx INVITE"), (0.7, "up 603"), (0.7, "tx ACK"),
         (32.7, "terminated")],
    ),
    (
        "2xx: Accepted (RFC 6026), 2xx retransmissions passed up, Timer M = 64*T1",
        False,
        [(0, "start"), (1, "recv 180"), (2, "recv 200"), (3, "recv 200"), (4, "recv 486"),
         (4, "end")],
        [(0, "tx INVITE"), (0.5, "rtx INVITE"), (1, "up 180"), (2, "up 200"), (3, "up 200"),
         (34, "terminated")],
    ),
    (
        "2xx over TCP: Accepted still lasts Timer M (it absorbs nothing, it forwards 2xx)",
        True,
        [(0, "start"), (2, "recv 200"), (2, "end")],
        [(0, "tx INVITE"), (2, "up 200"), (34, "terminated")],
    ),
    (
        "CANCEL asked while Calling waits for a provisional response (§9.1)",
        False,
        [(0, "start"), (0.2, "cancel"), (0.6, "recv 180"), (0.7, "cancel"), (1, "recv 487"),
         (1, "end")],
        [(0, "tx INVITE"), (0.5, "rtx INVITE"), (0.6, "up 180"), (0.6, "send CANCEL"),
         (1, "up 487"), (1, "tx ACK"), (33, "terminated")],
    ),
    (
        "CANCEL in Proceeding is emitted at once, once; after a final it is ignored",
        True,
        [(0, "start"), (1, "recv 183"), (2, "cancel"), (3, "cancel"), (4, "recv 200"),
         (5, "cancel"), (5, "end")],
        [(0, "tx INVITE"), (1, "up 183"), (2, "send CANCEL"), (4, "up 200"), (36, "terminated")],
    ),
    (
        "a 2xx from another fork after a non-2xx is passed up",
        False,
        [(0, "start"), (1, "recv 180"), (2, "recv 487"), (3, "recv 200"), (3, "end")],
        [(0, "tx INVITE"), (0.5, "rtx INVITE"), (1, "up 180"), (2, "up 487"), (2, "tx ACK"),
         (3, "up 200"), (34, "terminated")],
    ),
    (
        "transport error while Calling",
        True,
        [(0, "start"), (0.1, "transport-error")],
        [(0, "tx INVITE"), (0.1, "transport failed"), (0.1, "terminated")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reliable", "steps", "expected"),
    [c[1:] for c in INVITE_CLIENT],
    ids=[c[0] for c in INVITE_CLIENT],
)
def test_invite_client(reliable: bool, steps: Any, expected: Any) -> None:
    """RFC 3261 §17.1.1 with RFC 6026 §7.2."""
    assert run(client("INVITE", reliable), steps) == expected


NON_INVITE_CLIENT: list[tuple[str, bool, list[tuple[float, str]], list[tuple[float, str]]]] = [
    (
        "no answer: Timer E doubles up to T2, Timer F = 64*T1 times out",
        False,
        [(0, "start"), (0, "end")],
        [(0, "tx OPTIONS")] + [(t, "rtx OPTIONS") for t in E_TIMES]
        + [(32, "timeout F"), (32, "terminated")],
    ),
    (
        "no answer over TCP",
        True,
        [(0, "start"), (0, "end")],
        [(0, "tx OPTIONS"), (32, "timeout F"), (32, "terminated")],
    ),
    (
        "1xx: Proceeding keeps retransmitting every T2 and Timer F still runs from the start",
        False,
        [(0, "start"), (2, "recv 100"), (2, "end")],
        [(0, "tx OPTIONS"), (0.5, "rtx OPTIONS"), (1.5, "rtx OPTIONS"), (2, "up 100"),
         (3.5, "rtx OPTIONS")] + [(t, "rtx OPTIONS") for t in E_TIMES[3:]]
        + [(32, "timeout F"), (32, "terminated")],
    ),
    (
        "final: passed up once, retransmissions absorbed, Timer K = T4",
        False,
        [(0, "start"), (0.7, "recv 200"), (1, "recv 200"), (2, "recv 100"), (2, "end")],
        [(0, "tx OPTIONS"), (0.5, "rtx OPTIONS"), (0.7, "up 200"), (5.7, "terminated")],
    ),
    (
        "final over TCP: Terminated at once (Timer K = 0)",
        True,
        [(0, "start"), (0.7, "recv 404")],
        [(0, "tx OPTIONS"), (0.7, "up 404"), (0.7, "terminated")],
    ),
    (
        "transport error",
        False,
        [(0, "start"), (0.1, "transport-error")],
        [(0, "tx OPTIONS"), (0.1, "transport failed"), (0.1, "terminated")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reliable", "steps", "expected"),
    [c[1:] for c in NON_INVITE_CLIENT],
    ids=[c[0] for c in NON_INVITE_CLIENT],
)
def test_non_invite_client(reliable: bool, steps: Any, expected: Any) -> None:
    """RFC 3261 §17.1.2."""
    assert run(client("OPTIONS", reliable), steps) == expected


G_FROM_2 = [2.5, 3.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5, 33.5]  # G: T1 doubling, cap T2

INVITE_SERVER: list[tuple[str, bool, list[tuple[float, str]], list[tuple[float, str]]]] = [
    (
        "100 Trying at once; retransmissions answered with the last response, never passed up",
        False,
        [(0, "start"), (0.5, "retransmit"), (1, "send 180"), (1.5, "retransmit"),
         (2, "send 486"), (2.2, "retransmit"), (4, "ack"), (4.1, "ack"), (4.2, "retransmit"),
         (4.2, "end")],
        [(0, "tx 100"), (0, "up INVITE"), (0.5, "rtx 100"), (1, "tx 180"), (1.5, "rtx 180"),
         (2, "tx 486"), (2.2, "rtx 486"), (2.5, "rtx 486"), (3.5, "rtx 486"),
         (9, "terminated")],
    ),
    (
        "no ACK: Timer G retransmits (cap T2), Timer H = 64*T1 reports the failure",
        False,
        [(0, "start"), (2, "send 500"), (2, "end")],
        [(0, "tx 100"), (0, "up INVITE"), (2, "tx 500")]
        + [(t, "rtx 500") for t in G_FROM_2 if t < 34] + [(34, "timeout H"), (34, "terminated")],
    ),
    (
        "over TCP: no Timer G, and the ACK ends it at once (Timer I = 0)",
        True,
        [(0, "start"), (2, "send 486"), (3, "ack")],
        [(0, "tx 100"), (0, "up INVITE"), (2, "tx 486"), (3, "terminated")],
    ),
    (
        "no ACK over TCP: Timer H",
        True,
        [(0, "start"), (2, "send 486"), (2, "end")],
        [(0, "tx 100"), (0, "up INVITE"), (2, "tx 486"), (34, "timeout H"), (34, "terminated")],
    ),
    (
        "2xx: Accepted (RFC 6026); INVITE retransmissions absorbed, TU 2xx sent, ACK passed up, Timer L",
        False,
        [(0, "start"), (1, "send 200"), (1.5, "retransmit"), (2, "send 200"), (3, "ack"),
         (3, "end")],
        [(0, "tx 100"), (0, "up INVITE"), (1, "tx 200"), (2, "tx 200"), (3, "up ACK"),
         (33, "terminated")],
    ),
    (
        "CANCEL while Proceeding is reported; after the final it changes nothing",
        False,
        [(0, "start"), (1, "CANCEL"), (2, "send 487"), (2.1, "CANCEL"), (2.2, "ack"),
         (2.2, "end")],
        [(0, "tx 100"), (0, "up INVITE"), (1, "cancelled"), (2, "tx 487"), (7.2, "terminated")],
    ),
    (
        "transport error while Proceeding",
        True,
        [(0, "start"), (1, "transport-error")],
        [(0, "tx 100"), (0, "up INVITE"), (1, "transport failed"), (1, "terminated")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reliable", "steps", "expected"),
    [c[1:] for c in INVITE_SERVER],
    ids=[c[0] for c in INVITE_SERVER],
)
def test_invite_server(reliable: bool, steps: Any, expected: Any) -> None:
    """RFC 3261 §17.2.1 with RFC 6026 §7.1."""
    assert run(server("INVITE", reliable), steps) == expected


NON_INVITE_SERVER: list[tuple[str, bool, list[tuple[float, str]], list[tuple[float, str]]]] = [
    (
        "retransmission absorbed while Trying; last response re-sent after; Timer J = 64*T1",
        False,
        [(0, "start"), (0.5, "retransmit"), (1, "send 100"), (1.5, "retransmit"),
         (2, "send 200"), (2.5, "retransmit"), (2.5, "end")],
        [(0, "up OPTIONS"), (1, "tx 100"), (1.5, "rtx 100"), (2, "tx 200"), (2.5, "rtx 200"),
         (34, "terminated")],
    ),
    (
        "over TCP: Terminated as the final goes out (Timer J = 0)",
        True,
        [(0, "start"), (2, "send 404")],
        [(0, "up OPTIONS"), (2, "tx 404"), (2, "terminated")],
    ),
    (
        "transport error on the final",
        False,
        [(0, "start"), (2, "send 200"), (2.1, "transport-error")],
        [(0, "up OPTIONS"), (2, "tx 200"), (2.1, "transport failed"), (2.1, "terminated")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reliable", "steps", "expected"),
    [c[1:] for c in NON_INVITE_SERVER],
    ids=[c[0] for c in NON_INVITE_SERVER],
)
def test_non_invite_server(reliable: bool, steps: Any, expected: Any) -> None:
    """RFC 3261 §17.2.2."""
    assert run(server("OPTIONS", reliable), steps) == expected


class TestRules:
    def test_no_trying_when_disabled(self) -> None:
        """``send_trying=False`` leaves the 100 to the TU."""
        req = request()
        txn = new_server(req, key=server_key(req), reliable=False, send_trying=False)
        txn.start(0)
        assert [type(txn.next_event())] == [RequestReceived]
        assert txn.next_event() is None

    def test_trying_is_a_real_100(self) -> None:
        """The 100 copies Via/From/To/Call-ID/CSeq and has no To-tag (§8.2.6.2)."""
        from ingress.sip.parser import parse_message

        txn = server("INVITE", False)
        txn.start(0)
        ev = txn.next_event()
        assert isinstance(ev, Transmit)
        msg = parse_message(ev.data)
        req = request()
        assert msg.to.tag is None and msg.call_id == req.call_id
        assert [v.raw for v in msg.vias] == [v.raw for v in req.vias]

    def test_second_final_is_invalid(self) -> None:
        """A TU sending two finals is a bug: InvalidTransition, and the transaction ends."""
        txn = server("OPTIONS", False)
        txn.start(0)
        txn.respond(b"SIP/2.0 200 OK\r\n\r\n", 200, 1)
        assert not txn.accepts(200) and not txn.accepts(180)
        with pytest.raises(InvalidTransition):
            txn.respond(b"SIP/2.0 500 X\r\n\r\n", 500, 2)
        assert txn.state is State.TERMINATED and txn.next_deadline() is None

    def test_accepts(self) -> None:
        """``accepts`` tells the TU whether a response fits the state (RFC 6026: 2xx in Accepted)."""
        txn = server("INVITE", False)
        txn.start(0)
        assert txn.accepts(180) and txn.accepts(200) and txn.accepts(486)
        txn.respond(b"SIP/2.0 200 OK\r\n\r\n", 200, 1)
        assert txn.accepts(200) and not txn.accepts(486) and not txn.accepts(180)

    def test_cancel_non_invite_is_invalid(self) -> None:
        """§9.1: only INVITE is cancelled; a TU asking otherwise gets InvalidTransition."""
        txn = client("OPTIONS", False)
        txn.start(0)
        with pytest.raises(InvalidTransition):
            txn.cancel(1)
        assert txn.state is State.TERMINATED

    def test_buffers_released(self) -> None:
        """Finished transactions keep only what they may re-send (docs/transactions.md, memory)."""
        c = client("INVITE", False)
        c.start(0)
        c.receive_response(response(REQ["INVITE"], 200), 1)
        assert c.request is None and c._ack is None
        s = server("INVITE", False)
        s.start(0)
        s.respond(b"SIP/2.0 486 Busy\r\n\r\n", 486, 1)
        assert s.request is None and s._last == b"SIP/2.0 486 Busy\r\n\r\n"

    def test_late_timer_call_does_not_burst(self) -> None:
        """A stalled loop gets one retransmission, not one per missed tick (machine rule 4)."""
        txn = client("INVITE", False)
        txn.start(0)
        txn.handle_timer(20.0)
        events = []
        while (ev := txn.next_event()) is not None:
            events.append(summary(ev))
        assert events == ["tx INVITE", "rtx INVITE"]
        assert txn.next_deadline() == pytest.approx(21.0)  # re-armed from now: 20 + 2*T1

    def test_timer_not_fired_early(self) -> None:
        """handle_timer before a deadline does nothing."""
        txn = client("INVITE", False)
        txn.start(0)
        txn.next_event()
        txn.handle_timer(0.499)
        assert txn.next_event() is None and txn.next_deadline() == 0.5

    def test_custom_timers(self) -> None:
        """T1/T2/T4 are configurable; B/F/H/J follow 64*T1."""
        t = TimerConfig(t1=0.1, t2=0.4, t4=1.0, timer_d=2.0)
        txn = new_client(REQ["OPTIONS"], branch="b", method="OPTIONS", reliable=False, timers=t)
        r = Run(txn)
        r.step(0, "start")
        r.step(0, "end")
        times = [at for at, what in r.trace if what == "rtx OPTIONS"]
        assert times == [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7, 5.1,
                         5.5, 5.9, 6.3]  # fmt: skip
        assert r.trace[-2:] == [(6.4, "timeout F"), (6.4, "terminated")]

    @pytest.mark.parametrize("bad", [{"t1": 0}, {"t1": 1, "t2": 0.5}, {"t4": -1}])
    def test_timer_config_validated(self, bad: dict[str, float]) -> None:
        """Impossible timer values are refused."""
        with pytest.raises(ValueError):
            TimerConfig(**bad)

    def test_slotted(self) -> None:
        """Transactions and events carry no per-instance __dict__ (memory, docs/transactions.md)."""
        for txn in (client("INVITE", False), client("OPTIONS", False), server("INVITE", False),
                    server("OPTIONS", False)):  # fmt: skip
            assert not hasattr(txn, "__dict__"), type(txn).__name__
        assert not hasattr(Transmit(b""), "__dict__")

    def test_ack_has_no_transactions(self) -> None:
        """ACK never creates a client or server transaction."""
        with pytest.raises(ValueError):
            new_client(b"ACK", branch="b", method="ACK", reliable=False)
        ack = request("ACK")
        with pytest.raises(ValueError):
            new_server(ack, key=server_key(ack), reliable=False)
