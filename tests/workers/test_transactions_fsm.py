"""Property tests of the four transaction machines (h2 ``tests/test_state_machines.py``).

1. Every (state, input) pair of every machine, over UDP and TCP: either the table defines it
   and the transaction lands in the table's next state (or, over TCP, straight on in
   Terminated through a zero timer), or it raises ``InvalidTransition`` and is Terminated with
   no timer left. Never any other exception.
2. Inputs a peer can cause are defined in every live state (machine rule 2).
3. Random sequences of inputs at increasing times: no timer fires twice (one-shot timers at
   most once, retransmission timers at strictly increasing times), nothing is sent after
   Terminated, Terminated is the last event and comes exactly once, and the transaction
   always ends within the RFC bounds (B/F exactly 64*T1 after the start when no answer came,
   H exactly 64*T1 after a non-2xx final with no ACK, never more than the longest wait timer
   after the last input).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workers.test_transactions_msgs import request, request_bytes, response
from workers.transactions import (
    InvalidTransition,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    Transmit,
    server_key,
)
from workers.txn.machine import TIMER_INPUTS, Input, State

I = Input
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INVITE = request_bytes("INVITE")
OPTIONS = request_bytes("OPTIONS")
RESP = {
    (m, s): response(raw, s) for m, raw in (("INVITE", INVITE), ("OPTIONS", OPTIONS))
    for s in (100, 180, 200, 486)
}  # fmt: skip
REQS = {m: request(m) for m in ("INVITE", "OPTIONS", "CANCEL")}
ACK = request("ACK", to_tag="uas1")


class Traced:
    """Mixin: logs every input the machine processes, with its time."""

    log: list[tuple[Input, float]]

    def _process(self, inp: Input, now: float, arg: Any) -> None:
        self.log.append((inp, now))
        super()._process(inp, now, arg)  # type: ignore[misc]


class TIC(Traced, InviteClientTransaction):
    pass


class TNC(Traced, NonInviteClientTransaction):
    pass


class TIS(Traced, InviteServerTransaction):
    pass


class TNS(Traced, NonInviteServerTransaction):
    pass


MACHINES: dict[str, type[Transaction]] = {
    "invite-client": TIC,
    "non-invite-client": TNC,
    "invite-server": TIS,
    "non-invite-server": TNS,
}
CLIENTS = ("invite-client", "non-invite-client")


def make(name: str, reliable: bool, timers: TimerConfig | None = None) -> Transaction:
    cls: Any = MACHINES[name]
    kw: dict[str, Any] = {"reliable": reliable}
    if timers is not None:
        kw["timers"] = timers
    if name in CLIENTS:
        method = "INVITE" if name == "invite-client" else "OPTIONS"
        txn: Transaction = cls(INVITE if method == "INVITE" else OPTIONS, branch="z9hG4bK-a1",
                               method=method, **kw)  # fmt: skip
    else:
        req = REQS["INVITE" if name == "invite-server" else "OPTIONS"]
        txn = cls(req, key=server_key(req), **kw)
    txn.log = []  # type: ignore[attr-defined]
    return txn


def arg_for(name: str, inp: Input) -> Any:
    """A message that fits ``inp`` for machine ``name``."""
    method = "INVITE" if name.startswith("invite") else "OPTIONS"
    status = {I.RECV_1XX: 180, I.RECV_2XX: 200, I.RECV_FINAL: 486}.get(inp)
    if status is not None:
        return RESP[(method, status)]
    if inp is I.RECV_REQUEST:
        return REQS[method]
    if inp is I.RECV_ACK:
        return ACK
    if inp is I.RECV_CANCEL:
        return REQS["CANCEL"]
    sent = {I.SEND_1XX: 180, I.SEND_2XX: 200, I.SEND_FINAL: 486}.get(inp)
    if sent is not None:
        return b"SIP/2.0 %d X\r\n\r\n" % sent
    return None


PATHS: dict[str, dict[State, list[Input]]] = {
    "invite-client": {
        State.IDLE: [],
        State.CALLING: [I.SEND_REQUEST],
        State.PROCEEDING: [I.SEND_REQUEST, I.RECV_1XX],
        State.COMPLETED: [I.SEND_REQUEST, I.RECV_FINAL],
        State.ACCEPTED: [I.SEND_REQUEST, I.RECV_2XX],
        State.TERMINATED: [I.SEND_REQUEST, I.TRANSPORT_ERROR],
    },
    "non-invite-client": {
        State.IDLE: [],
        State.TRYING: [I.SEND_REQUEST],
        State.PROCEEDING: [I.SEND_REQUEST, I.RECV_1XX],
        State.COMPLETED: [I.SEND_REQUEST, I.RECV_FINAL],
        State.TERMINATED: [I.SEND_REQUEST, I.TRANSPORT_ERROR],
    },
    "invite-server": {
        State.IDLE: [],
        State.PROCEEDING: [I.RECV_REQUEST],
        State.COMPLETED: [I.RECV_REQUEST, I.SEND_FINAL],
        State.CONFIRMED: [I.RECV_REQUEST, I.SEND_FINAL, I.RECV_ACK],
        State.ACCEPTED: [I.RECV_REQUEST, I.SEND_2XX],
        State.TERMINATED: [I.RECV_REQUEST, I.TRANSPORT_ERROR],
    },
    "non-invite-server": {
        State.IDLE: [],
        State.TRYING: [I.RECV_REQUEST],
        State.PROCEEDING: [I.RECV_REQUEST, I.SEND_1XX],
        State.COMPLETED: [I.RECV_REQUEST, I.SEND_FINAL],
        State.TERMINATED: [I.RECV_REQUEST, I.TRANSPORT_ERROR],
    },
}


def reach(name: str, state: State, reliable: bool) -> Transaction | None:
    """A fresh transaction driven into ``state``, or None when the transport skips it."""
    txn = make(name, reliable)
    for inp in PATHS[name][state]:
        txn._process(inp, 1.0, arg_for(name, inp))
    while txn.next_event() is not None:
        pass
    return txn if txn.state is state else None


def check_pair(name: str, state: State, inp: Input, reliable: bool) -> bool:
    """Invariant 1 for one pair; False when the state cannot be reached on this transport."""
    txn = reach(name, state, reliable)
    if txn is None:
        return False
    table = txn.TRANSITIONS
    defined = (state, inp) in table
    try:
        txn._process(inp, 2.0, arg_for(name, inp))
    except InvalidTransition:
        assert not defined, f"{name}: defined pair {state} x {inp} raised"
        ok = True
    else:
        assert defined, f"{name}: undefined pair {state} x {inp} did not raise"
        nxt = table[(state, inp)][1]
        ok = txn.state is nxt or (reliable and txn.state is State.TERMINATED)
        assert ok, f"{name}: {state} x {inp} -> {txn.state}, table says {nxt}"
    events = list(iter(txn.next_event, None))
    if txn.state is State.TERMINATED:
        assert txn.next_deadline() is None
        if state is not State.TERMINATED:
            assert isinstance(events[-1], Terminated)
            assert sum(isinstance(e, Terminated) for e in events) == 1
        else:
            assert not events  # nothing at all after Terminated
    return True


STATES = {name: list(paths) for name, paths in PATHS.items()}


@pytest.mark.parametrize("name", list(MACHINES))
@PROPS
@given(data=st.data(), inp=st.sampled_from(Input), reliable=st.booleans())
def test_every_pair_hypothesis(name: str, data: st.DataObject, inp: Input, reliable: bool) -> None:
    """Any (state, input): the table's transition, or InvalidTransition + Terminated."""
    state = data.draw(st.sampled_from(STATES[name]))
    if not check_pair(name, state, inp, reliable):
        assert check_pair(name, state, inp, False)


@pytest.mark.parametrize("name", list(MACHINES))
def test_every_pair_exhaustive(name: str) -> None:
    """The same invariant, each of the finite pairs once (the hypothesis run may miss one)."""
    covered = 0
    for state in STATES[name]:
        for inp in Input:
            for reliable in (False, True):
                covered += check_pair(name, state, inp, reliable)
    assert covered >= len(STATES[name]) * len(Input)


@pytest.mark.parametrize("name", list(MACHINES))
def test_abandon_is_quiet_and_bounded(name: str) -> None:
    """Machine rule 7: giving a live transaction up sends and passes up nothing; it is
    Terminated at once, or keeps a timer that will end it (never waits forever)."""
    tried = 0
    for state in STATES[name]:
        for reliable in (False, True):
            txn = reach(name, state, reliable)
            if txn is None or state in (State.IDLE, State.TERMINATED):
                continue
            txn.abandon(2.0)
            events = list(iter(txn.next_event, None))
            if txn.state is State.TERMINATED:
                assert [type(e) for e in events] == [Terminated], (state, events)
            else:
                assert events == [] and txn.next_deadline() is not None, state
            tried += 1
    assert tried >= 4


def test_tables_only_use_known_states() -> None:
    """Every state a table names can be reached by the paths above (no dead rows)."""
    for name, cls in MACHINES.items():
        named = {s for s, _ in cls.TRANSITIONS} | {n for _, n in cls.TRANSITIONS.values()}
        assert named <= set(PATHS[name]), name


PEER_INPUTS = {
    "invite-client": {I.RECV_1XX, I.RECV_2XX, I.RECV_FINAL, I.TRANSPORT_ERROR},
    "non-invite-client": {I.RECV_1XX, I.RECV_2XX, I.RECV_FINAL, I.TRANSPORT_ERROR},
    "invite-server": {I.RECV_REQUEST, I.RECV_ACK, I.RECV_CANCEL, I.TRANSPORT_ERROR},
    "non-invite-server": {I.RECV_REQUEST, I.TRANSPORT_ERROR},
}


@pytest.mark.parametrize("name", list(MACHINES))
def test_peer_inputs_always_defined(name: str) -> None:
    """A peer cannot kill a live transaction by sending something odd (machine rule 2)."""
    table = MACHINES[name].TRANSITIONS
    for state in STATES[name]:
        if state in (State.IDLE, State.TERMINATED):
            continue
        missing = {i for i in PEER_INPUTS[name] if (state, i) not in table}
        assert not missing, f"{name} {state}: {missing}"


# -- random sequences -----------------------------------------------------------------------

ACTIONS = {
    "invite-client": [I.RECV_1XX, I.RECV_2XX, I.RECV_FINAL, I.CANCEL, I.TRANSPORT_ERROR],
    "non-invite-client": [I.RECV_1XX, I.RECV_2XX, I.RECV_FINAL, I.TRANSPORT_ERROR],
    "invite-server": [I.RECV_REQUEST, I.RECV_ACK, I.RECV_CANCEL, I.SEND_1XX, I.SEND_2XX,
                      I.SEND_FINAL, I.TRANSPORT_ERROR],
    "non-invite-server": [I.RECV_REQUEST, I.SEND_1XX, I.SEND_2XX, I.SEND_FINAL,
                          I.TRANSPORT_ERROR],
}  # fmt: skip
TU_INPUTS = {I.SEND_1XX, I.SEND_2XX, I.SEND_FINAL, I.CANCEL}
ONE_SHOT = TIMER_INPUTS - {I.TIMER_A, I.TIMER_E, I.TIMER_G}

timer_configs = st.builds(
    lambda t1, k2, t4, d: TimerConfig(t1=t1, t2=t1 * k2, t4=t4, timer_d=d),
    st.sampled_from([0.05, 0.5, 1.0]),
    st.sampled_from([1, 4, 8]),
    st.sampled_from([0.0, 1.0, 5.0]),
    st.sampled_from([0.0, 32.0]),
)
steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.01, 0.3, 1.0, 4.0, 20.0, 40.0]), st.integers(0, 6)),
    max_size=12,
)


def advance(txn: Transaction, until: float, events: list[tuple[float, Any]]) -> float:
    """Fire timers at their deadlines up to ``until``; returns the time reached."""
    now = 0.0
    while (d := txn.next_deadline()) is not None and d <= until:
        assert d >= now
        now = d
        txn.handle_timer(d)
        events.extend((d, e) for e in iter(txn.next_event, None))
    return until


def apply(name: str, txn: Transaction, inp: Input, now: float) -> None:
    arg = arg_for(name, inp)
    if inp in TU_INPUTS:
        try:
            txn._process(inp, now, arg)
        except InvalidTransition:
            assert txn.state is State.TERMINATED
        return
    if txn.state is State.TERMINATED:
        return  # the table drops a terminated transaction: nothing can reach it
    txn._process(inp, now, arg)  # peer input: must never raise in a live state


@pytest.mark.parametrize("name", list(MACHINES))
@PROPS
@given(timers=timer_configs, reliable=st.booleans(), seq=steps)
def test_random_sequences(
    name: str, timers: TimerConfig, reliable: bool, seq: list[tuple[float, int]]
) -> None:
    """Timers fire once, nothing after Terminated, and the transaction ends within RFC bounds."""
    txn = make(name, reliable, timers)
    events: list[tuple[float, Any]] = []
    txn._process(
        I.SEND_REQUEST if name in CLIENTS else I.RECV_REQUEST, 0.0, arg_for(name, I.RECV_REQUEST)
    )
    events.extend((0.0, e) for e in iter(txn.next_event, None))
    now = last_input = 0.0
    inputs: list[tuple[float, Input]] = []
    for dt, pick in seq:
        now = advance(txn, now + dt, events)
        inp = ACTIONS[name][pick % len(ACTIONS[name])]
        if txn.state is not State.TERMINATED:
            last_input = now
            inputs.append((now, inp))
        apply(name, txn, inp, now)
        events.extend((now, e) for e in iter(txn.next_event, None))
    # whoever the transaction waits for answers, then only time passes
    if txn.state is not State.TERMINATED:
        closing = I.RECV_FINAL if name in CLIENTS else I.SEND_FINAL
        if (txn.state, closing) in txn.TRANSITIONS:
            last_input = now
            inputs.append((now, closing))
            apply(name, txn, closing, now)
            events.extend((now, e) for e in iter(txn.next_event, None))
    advance(txn, 1e9, events)
    assert txn.state is State.TERMINATED
    assert txn.next_deadline() is None

    kinds = [e for _, e in events]
    assert isinstance(kinds[-1], Terminated) and sum(isinstance(e, Terminated) for e in kinds) == 1
    end = events[-1][0]

    log: list[tuple[Input, float]] = txn.log  # type: ignore[attr-defined]
    fired = [(i, t) for i, t in log if i in TIMER_INPUTS]
    once = [i for i, _ in fired if i in ONE_SHOT]
    assert len(once) == len(set(once)), f"a one-shot timer fired twice: {once}"
    for timer in (I.TIMER_A, I.TIMER_E, I.TIMER_G):
        times = [t for i, t in fired if i is timer]
        assert times == sorted(set(times)), f"{timer} fired twice at one time: {times}"
    if reliable:
        assert not any(i in (I.TIMER_A, I.TIMER_E, I.TIMER_G) for i, _ in fired)

    longest = max(timers.timeout, timers.timer_d, timers.t4)
    assert end <= last_input + longest + 1e-9

    got = [i for _, i in inputs]
    if name in CLIENTS and I.TRANSPORT_ERROR not in got:
        answered = {I.RECV_2XX, I.RECV_FINAL} | ({I.RECV_1XX} if name == "invite-client" else set())
        first = next((t for t, i in inputs if i in answered), None)
        if first is None or first > timers.timeout:
            letter = "B" if name == "invite-client" else "F"
            assert TimedOut(letter) in kinds
            assert end == pytest.approx(timers.timeout)  # exactly 64*T1 after the start
    if name == "invite-server":
        finals = [n for n, (_, i) in enumerate(inputs) if i is I.SEND_FINAL]
        if TimedOut("H") in kinds:
            assert finals and end == pytest.approx(inputs[finals[0]][0] + timers.timeout)
            assert I.RECV_ACK not in [i for _, i in inputs[finals[0] :]]
    # no retransmission is ever scheduled past the end
    assert all(t <= end for t, e in events if isinstance(e, Transmit))


# -- the tables in docs/transactions.md are generated from the code --------------------------

DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "transactions.md"
DOC_MACHINES = {
    "INVITE client": InviteClientTransaction,
    "non-INVITE client": NonInviteClientTransaction,
    "INVITE server": InviteServerTransaction,
    "non-INVITE server": NonInviteServerTransaction,
}


def render_table(cls: type[Transaction]) -> str:
    """One machine's TRANSITIONS as a markdown table, in state then input order."""
    states, inputs = list(State), list(Input)
    rows = sorted(cls.TRANSITIONS.items(), key=lambda kv: (states.index(kv[0][0]),
                                                           inputs.index(kv[0][1])))  # fmt: skip
    lines = ["| state | input | effect | next |", "|---|---|---|---|"]
    for (state, inp), (effect, nxt) in rows:
        name = "—" if effect is None else effect.__name__.lstrip("_").replace("_", " ")
        lines.append(f"| {state.value} | {inp.value} | {name} | {nxt.value} |")
    return "\n".join(lines)


def render_all() -> str:
    """What docs/transactions.md §"The four tables" holds (print this to regenerate it)."""
    return "\n\n".join(f"### {title}\n\n{render_table(cls)}" for title, cls in DOC_MACHINES.items())


def test_doc_tables_match_code() -> None:
    """docs/transactions.md shows the tables the code runs (regenerate with render_all())."""
    assert render_all() in DOC.read_text()
