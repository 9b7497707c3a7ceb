"""The dispatcher, sans-IO: selection, failover order, the health table, probing, sharing.

1. Every (state, input) pair of the health machine against a spec written apart from the
   table (h2 ``tests/test_state_machines.py`` style); a pair missing from the table raises.
2. Random sequences of probe results and reports: down exactly after ``probe_threshold``
   consecutive failures, up exactly after ``probe_up_threshold`` consecutive successes, one
   event per change of state.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.settings import DestinationSet as SetCfg
from conf.settings import Listener
from ingress.sip.parser import parse_message
from workers.routing import health as health_module
from workers.routing.dispatcher import Destination, Dispatcher, DispatchSet
from workers.routing.health import (
    TRANSITIONS,
    Health,
    HealthChanged,
    Input,
    InvalidTransition,
    State,
    Thresholds,
    step,
)
from workers.routing.probes import PROBE_BRANCH_PREFIX, probe_share

S, I = State, Input
LISTEN = [Listener(transport="udp", address="127.0.0.1", port=5060),
          Listener(transport="tcp", address="127.0.0.1", port=5060),
          Listener(transport="udp", address="::1", port=5062)]  # fmt: skip
OK_INPUTS = (I.PROBE_ALIVE, I.REQUEST_ANSWERED)
BAD_INPUTS = (I.PROBE_REFUSED, I.PROBE_TIMEOUT, I.REQUEST_FAILED)


def cfg(n: int = 3, **kw: Any) -> SetCfg:
    base: dict[str, Any] = {"name": "s", "probe_interval_s": 1.0, "probe_timeout_s": 0.5,
                            "destinations": [f"sip:127.0.0.1:{7000 + i}" for i in range(n)]}  # fmt: skip
    return SetCfg(**(base | kw))


def disp(n: int = 3, **kw: Any) -> Dispatcher:
    return Dispatcher([cfg(n, **kw)], LISTEN)


def dset(d: Dispatcher) -> DispatchSet:
    return d.sets["s"]


def dest(d: Dispatcher, i: int) -> Destination:
    return dset(d).destinations[i]


def force(d: Dispatcher, i: int, state: State) -> None:
    dset(d).health[i].state = state


def fail(d: Dispatcher, i: int, times: int = 1, now: float = 0.0) -> list[HealthChanged]:
    return [e for _ in range(times) for e in d.report(dest(d, i), None, now)]


def hashed(call_id: str, n: int) -> int:
    return zlib.crc32(call_id.encode("latin-1")) % n


class TestSelection:
    def test_hash_all_up_is_the_call_hash(self) -> None:
        """With every destination up, hash_call_id is crc32(Call-ID) mod n, as before."""
        d = disp(3)
        for i in range(50):
            got = dset(d).select(f"c{i}")
            assert got is not None and got.index == hashed(f"c{i}", 3)

    @pytest.mark.parametrize("algorithm", ["hash_call_id", "weighted", "round_robin"])
    def test_down_destinations_are_skipped(self, algorithm: str) -> None:
        """No algorithm selects a down destination."""
        weights = [1, 2, 3] if algorithm == "weighted" else []
        d = disp(3, algorithm=algorithm, weights=weights, probe_threshold=1)
        fail(d, 1)
        picks = {dset(d).select(f"call-{i}") for i in range(300)}
        assert {p.index for p in picks if p} == {0, 2}

    def test_hash_moves_only_the_down_destinations_calls(self) -> None:
        """Calls that hashed elsewhere keep their destination; the down one's calls spread
        over the rest (re-hashed, as OpenSIPS does)."""
        d = disp(3, probe_threshold=1)
        fail(d, 0)
        moved = []
        for i in range(600):
            cid = f"x{i}"
            got = dset(d).select(cid)
            assert got is not None
            if hashed(cid, 3) != 0:
                assert got.index == hashed(cid, 3)
            else:
                moved.append(got.index)
        assert set(moved) == {1, 2}

    def test_round_robin_skips_in_turn(self) -> None:
        """round_robin keeps its turn and steps over a down destination."""
        d = disp(3, algorithm="round_robin", probe_threshold=1)
        fail(d, 1)
        assert [dset(d).select(f"c{i}").index for i in range(4)] == [0, 2, 0, 2]  # type: ignore[union-attr]

    def test_weighted_keeps_proportions_of_the_rest(self) -> None:
        """weighted over the usable destinations keeps their relative weights."""
        d = disp(3, algorithm="weighted", weights=[5, 1, 3], probe_threshold=1)
        fail(d, 0)
        picks = [dset(d).select(f"call-{i}@h") for i in range(4000)]
        share = sum(1 for p in picks if p and p.index == 2) / len(picks)
        assert 0.68 < share < 0.82

    def test_suspect_is_still_selected(self) -> None:
        """A destination below the failure threshold stays in service (Kamailio "trying")."""
        d = disp(1)
        fail(d, 0)
        assert dset(d).health[0].state is S.SUSPECT
        assert dset(d).select("c") == dest(d, 0)

    @pytest.mark.parametrize("state", [S.DOWN, S.RECOVERING, S.DISABLED])
    def test_none_usable(self, state: State) -> None:
        """With nothing usable select gives None; pick (stateless) still answers the hash."""
        d = disp(2)
        for i in range(2):
            force(d, i, state)
        assert dset(d).select("c1") is None
        assert dset(d).pick("c1").index == hashed("c1", 2)

    def test_fallback_choice_sticks_for_the_call(self) -> None:
        """A call sent around a down destination keeps going there (its ACK and CANCEL)
        after the destination recovers."""
        d = disp(3, probe_threshold=1)
        cid = next(f"k{i}" for i in range(100) if hashed(f"k{i}", 3) == 0)
        fail(d, 0)
        first = dset(d).select(cid)
        d.report(dest(d, 0), 200, 1.0)
        assert dset(d).health[0].state is S.UP
        assert dset(d).pick(cid) == first != dest(d, 0)

    def test_new_request_leaves_a_sticky_destination_that_went_down(self) -> None:
        """select (new requests) does not follow the call to a destination now down."""
        d = disp(3, algorithm="round_robin", probe_threshold=1)
        first = dset(d).select("c")
        assert first is not None
        fail(d, first.index)
        again = dset(d).select("c")
        assert again is not None and again != first
        assert dset(d).pick("c") == again

    def test_retry_after_holds(self) -> None:
        """A 503 with Retry-After keeps the destination out of selection that long
        (RFC 3261 §21.5.4), even without probing, and ends in handle_timer."""
        d = disp(2, probe_interval_s=0.0)
        d.report(dest(d, 0), 503, 10.0, retry_after_s=30)
        assert d.next_deadline() == 40.0
        assert {dset(d).select(f"c{i}").index for i in range(40)} == {1}  # type: ignore[union-attr]
        d.handle_timer(39.9)
        assert not dset(d).usable(dest(d, 0))
        d.handle_timer(40.0)
        assert dset(d).usable(dest(d, 0)) and d.next_deadline() is None


def states(d: Dispatcher, *pairs: tuple[int, State]) -> Dispatcher:
    for i, s in pairs:
        force(d, i, s)
    return d


class TestFailover:
    @pytest.mark.parametrize(("forced", "first", "expected"), [
        ((), 0, [1, 2, 3]),
        ((), 2, [3, 0, 1]),
        (((1, S.SUSPECT),), 0, [2, 3, 1]),
        (((1, S.DOWN), (3, S.DISABLED)), 0, [2]),
        (((0, S.RECOVERING), (1, S.SUSPECT), (2, S.SUSPECT)), 3, [1, 2]),
        (((1, S.DOWN), (2, S.DOWN), (3, S.DOWN)), 0, []),
    ], ids=["all-up", "ring-order", "suspect-last", "down-skipped", "recovering-skipped", "none"])  # fmt: skip
    def test_alternatives(self, forced: tuple[tuple[int, State], ...], first: int,
                          expected: list[int]) -> None:  # fmt: skip
        """The rest of the set after ``first``: usable only, up before suspect, ring order."""
        d = states(disp(4), *forced)
        assert [x.index for x in dset(d).alternatives(dest(d, first))] == expected

    @pytest.mark.parametrize(("kw", "status", "expected"), [
        ({}, None, True), ({}, 408, True), ({}, 500, True), ({}, 503, True), ({}, 599, True),
        ({}, 404, False), ({}, 486, False), ({}, 603, False), ({}, 302, False),
        ({"failover": False}, None, False), ({"failover": False}, 503, False),
        ({"failover_codes": ["503", "480-486"]}, 500, False),
        ({"failover_codes": ["503", "480-486"]}, 486, True),
        ({"failover_codes": ["503", "480-486"]}, None, True),
    ])  # fmt: skip
    def test_fails_over(self, kw: dict[str, Any], status: int | None, expected: bool) -> None:
        """Default: no response, 408 and every 5xx; never a 6xx; off with failover = false."""
        assert dset(disp(2, **kw)).fails_over(status) is expected


# -- the health machine ----------------------------------------------------------------------


def spec(state: State, inp: Input, fails: int, oks: int, t: Thresholds) -> State:
    """The health rules as docs/dispatcher.md states them, written apart from the table."""
    if inp is I.DISABLE:
        return S.DISABLED
    if inp is I.ENABLE:
        return S.UP if state is S.DISABLED else state
    if state is S.DISABLED:
        return S.DISABLED
    if inp in OK_INPUTS:
        if state in (S.UP, S.SUSPECT):
            return S.UP
        return S.UP if oks + 1 >= t.up else S.RECOVERING
    if state in (S.DOWN, S.RECOVERING):
        return S.DOWN
    return S.DOWN if fails + 1 >= t.down else S.SUSPECT


class TestHealthTable:
    def test_table_is_total(self) -> None:
        """Every (state, input) pair is defined: nothing from the network is refused."""
        assert set(TRANSITIONS) == {(s, i) for s in State for i in Input}

    @settings(max_examples=600, deadline=None)
    @given(st.sampled_from(State), st.sampled_from(Input), st.integers(0, 6),
           st.integers(0, 6), st.integers(1, 5), st.integers(1, 5))  # fmt: skip
    def test_every_pair(self, state: State, inp: Input, fails: int, oks: int, down: int,
                        up: int) -> None:  # fmt: skip
        """Each pair lands where the spec says, and counts as the spec says."""
        h = Health()
        h.state, h.fails, h.oks = state, fails, oks
        t = Thresholds(down, up)
        assert step(h, inp, t) is state
        assert h.state is spec(state, inp, fails, oks, t)
        if state is not S.DISABLED and inp in OK_INPUTS:
            assert (h.fails, h.oks) == (0, oks + 1)
        elif state is not S.DISABLED and inp in BAD_INPUTS:
            assert (h.fails, h.oks) == (fails + 1, 0)
        elif h.state is not state:  # disable / enable: counters start again
            assert (h.fails, h.oks) == (0, 0)

    @pytest.mark.parametrize("pair", [(S.UP, I.PROBE_TIMEOUT), (S.DISABLED, I.ENABLE)])
    def test_missing_pair_raises(self, pair: tuple[State, Input],
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """A pair the table lacks is a table bug: InvalidTransition, state unchanged."""
        table = dict(TRANSITIONS)
        del table[pair]
        monkeypatch.setattr(health_module, "TRANSITIONS", table)
        h = Health()
        h.state = pair[0]
        with pytest.raises(InvalidTransition):
            step(h, pair[1], Thresholds(3, 1))
        assert h.state is pair[0]


OUTCOMES = ["alive", "refused", "timeout", "answered", "failed"]


def feed(d: Dispatcher, outcome: str, now: float) -> list[HealthChanged]:
    """One observation of destination 0 through the public API, at ``now``."""
    if outcome in ("answered", "failed"):
        return d.report(dest(d, 0), 180 if outcome == "answered" else None, now)
    probes = d.due_probes(now)
    assert len(probes) == 1
    if outcome == "timeout":
        return d.handle_timer(probes[0].deadline)
    return d.probe_answered(probes[0].branch, 200 if outcome == "alive" else 503, now + 0.1)


class TestSequences:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(OUTCOMES), max_size=40), st.integers(1, 5),
           st.integers(1, 4))  # fmt: skip
    def test_thresholds(self, outcomes: list[str], down: int, up: int) -> None:
        """Down exactly after ``down`` failures in a row, up exactly after ``up`` successes
        in a row (from up or suspect one success is enough); one event per change."""
        d = disp(1, probe_threshold=down, probe_up_threshold=up)
        is_down, run_f, run_s = False, 0, 0
        for k, outcome in enumerate(outcomes):
            before = dset(d).health[0].state
            events = feed(d, outcome, now=float(k))
            if outcome in ("alive", "answered"):
                run_s, run_f = run_s + 1, 0
                is_down = is_down and run_s < up
            else:
                run_f, run_s = run_f + 1, 0
                is_down = is_down or run_f >= down
            after = dset(d).health[0].state
            if is_down:
                assert after is (S.RECOVERING if run_s else S.DOWN)
            else:
                assert after is (S.SUSPECT if run_f else S.UP)
            assert [(e.old, e.new) for e in events] == ([] if after is before else [(before, after)])


# -- probing ---------------------------------------------------------------------------------


class TestProbes:
    def test_options_bytes(self) -> None:
        """The probe is an OPTIONS our parser accepts, with the headers of RFC 3261 §8.1.1."""
        d = Dispatcher([cfg(1, destinations=["sip:[2001:db8::5]:5070"], probe_from="sip:p@x.org")],
                       LISTEN)  # fmt: skip
        (p,) = d.due_probes(5.0)
        req = parse_message(p.data)
        assert req.method == "OPTIONS" and req.uri.raw == "sip:[2001:db8::5]:5070"  # type: ignore[union-attr]
        assert req.max_forwards == 70  # type: ignore[union-attr]
        via = req.vias[0]
        assert (via.transport, via.host, via.port) == ("UDP", "[::1]", 5062)
        assert via.branch == p.branch and p.branch.startswith(PROBE_BRANCH_PREFIX)
        assert "rport" in via.params
        assert req.from_.uri.raw == "sip:p@x.org" and req.from_.tag
        assert req.to.uri.raw == "sip:[2001:db8::5]:5070" and req.to.tag is None
        assert (req.cseq, req.cseq_method) == (1, "OPTIONS") and req.body == b""
        assert req.header("content-length") == b"0"
        assert (p.transport, p.host, p.port, p.listener.address) == ("udp", "2001:db8::5", 5070, "::1")
        assert p.deadline == 5.5

    def test_transport_and_default_from(self) -> None:
        """A transport=tcp destination is probed over TCP; From defaults to the listener."""
        d = disp(1, destinations=["sip:127.0.0.1:7000;transport=tcp"])
        (p,) = d.due_probes(0.0)
        req = parse_message(p.data)
        assert p.transport == "tcp" and req.vias[0].transport == "TCP"
        assert req.from_.uri.raw == "sip:sipline@127.0.0.1"

    def test_branches_and_call_ids_unique(self) -> None:
        """Every probe has its own branch and Call-ID, carrying the instance token."""
        d = Dispatcher([cfg(3)], LISTEN, instance="w1-77")
        seen = []
        for t in range(5):
            d.handle_timer(float(t))
            seen += [parse_message(p.data) for p in d.due_probes(float(t))]
        assert len({m.vias[0].branch for m in seen}) == len({m.call_id for m in seen}) == 15
        assert all("w1-77" in (m.vias[0].branch or "") for m in seen)

    def test_call_ids_this_worker_owns(self) -> None:
        """With ``owns``, probes carry Call-IDs the ingress hands to this worker."""
        d = Dispatcher([cfg(3)], LISTEN, owns=lambda cid: zlib.crc32(cid.encode()) % 4 == 1)
        for t in range(4):
            d.handle_timer(float(t))
            for p in d.due_probes(float(t)):
                assert zlib.crc32(parse_message(p.data).call_id.encode()) % 4 == 1

    def test_schedule_does_not_drift(self) -> None:
        """Probes are due every interval from the first, however late the timer fires;
        a loop a whole interval behind restarts the schedule from now."""
        d = disp(1, probe_interval_s=1.0, probe_timeout_s=0.2)
        sent = []
        for now in (10.0, 11.3, 12.05, 13.9, 16.7, 17.7):
            d.handle_timer(now)
            sent += [now] * len(d.due_probes(now))
            assert d.next_deadline() is not None
        assert sent == [10.0, 11.3, 12.05, 13.9, 16.7, 17.7]
        assert dset(d).health[0].next_probe_at == 18.7

    def test_next_deadline(self) -> None:
        """next_deadline: the first probe at once, then the timeout, then the next probe."""
        d = disp(1, probe_interval_s=2.0, probe_timeout_s=0.5)
        assert d.next_deadline() == 0.0
        (p,) = d.due_probes(100.0)
        assert d.next_deadline() == 100.5
        d.probe_answered(p.branch, 200, 100.1)
        assert d.next_deadline() == 102.0

    def test_one_probe_in_flight(self) -> None:
        """A timeout equal to the interval: the old probe expires, then the next leaves."""
        d = disp(1, probe_interval_s=1.0, probe_timeout_s=1.0)
        (p1,) = d.due_probes(0.0)
        assert d.due_probes(0.5) == []
        assert [e.new for e in d.handle_timer(1.0)] == [S.SUSPECT]
        (p2,) = d.due_probes(1.0)
        assert p2.branch != p1.branch

    def test_answers_that_change_nothing(self) -> None:
        """Provisional answers, answers after the timeout and unknown branches are ignored."""
        d = disp(1)
        (p,) = d.due_probes(0.0)
        assert d.probe_answered(p.branch, 100, 0.1) == []
        assert dset(d).health[0].pending == p.branch
        d.handle_timer(0.5)
        assert d.probe_answered(p.branch, 200, 0.6) == []
        assert d.probe_answered(PROBE_BRANCH_PREFIX + "nope", 200, 0.6) == []
        assert dset(d).health[0].fails == 1

    @pytest.mark.parametrize(("status", "alive"), [(200, True), (404, True), (405, True),
                                                   (500, True), (503, False), (603, True)])  # fmt: skip
    def test_alive_codes_default(self, status: int, alive: bool) -> None:
        """By default every final answer but 503 proves the destination alive."""
        d = disp(1, probe_threshold=1)
        (p,) = d.due_probes(0.0)
        d.probe_answered(p.branch, status, 0.1)
        assert (dset(d).health[0].state is S.UP) is alive

    def test_alive_codes_configured(self) -> None:
        """alive_codes = ["200"]: a 404 counts as a failure (OpenSIPS's strict default)."""
        d = disp(1, probe_threshold=1, alive_codes=["200"])
        (p,) = d.due_probes(0.0)
        assert [e.new for e in d.probe_answered(p.branch, 404, 0.1)] == [S.DOWN]

    def test_when_down(self) -> None:
        """when_down probes only what failed; an answer brings it back and probing stops."""
        d = disp(2, probe_mode="when_down", probe_threshold=2)
        assert d.due_probes(0.0) == []
        fail(d, 1, 2)
        assert dset(d).health[1].state is S.DOWN
        (p,) = d.due_probes(1.0)
        assert p.uri == dest(d, 1).uri
        assert [e.new for e in d.probe_answered(p.branch, 200, 1.1)] == [S.UP]
        assert d.due_probes(2.0) == []

    def test_probing_off(self) -> None:
        """probe_interval_s = 0: no probes, no timer, reports change no state."""
        d = disp(2, probe_interval_s=0.0)
        assert d.next_deadline() is None and d.due_probes(0.0) == []
        assert fail(d, 0, 10) == [] and dset(d).health[0].state is S.UP
        assert d.probe_keys() == []

    def test_disable_enable(self) -> None:
        """A disabled destination is neither probed nor selected; enable puts it back up."""
        d = disp(2, algorithm="round_robin")
        (e,) = d.disable("s", dest(d, 0).uri)
        assert (e.old, e.new, e.cause) == (S.UP, S.DISABLED, I.DISABLE)
        assert [p.uri for p in d.due_probes(0.0)] == [dest(d, 1).uri]
        assert {dset(d).select(f"c{i}").index for i in range(4)} == {1}  # type: ignore[union-attr]
        assert fail(d, 0, 5) == []
        (e,) = d.enable("s", dest(d, 0).uri)
        assert e.new is S.UP and dset(d).usable(dest(d, 0))

    def test_assign(self) -> None:
        """assign limits probing to the given destinations; [] probes nothing."""
        d = disp(3)
        d.assign([("s", dest(d, 2).uri)])
        assert [p.uri for p in d.due_probes(0.0)] == [dest(d, 2).uri]
        d.assign([])
        assert d.due_probes(1.0) == [] and d.next_deadline() == 0.5  # the pending timeout

    def test_probe_share(self) -> None:
        """probe_share splits the destinations: disjoint, complete, and a worker leaving
        moves only its own share."""
        keys = [("s", f"sip:10.0.0.{i}") for i in range(60)]
        workers = ["w1", "w2", "w3"]
        shares = {w: probe_share(keys, workers, w) for w in workers}
        assert sum(len(s) for s in shares.values()) == 60 and set().union(*shares.values()) == set(keys)
        assert all(len(s) > 5 for s in shares.values())
        after = {w: probe_share(keys, ["w1", "w2"], w) for w in ("w1", "w2")}
        assert shares["w1"] <= after["w1"] and shares["w2"] <= after["w2"]


# -- sharing and status ----------------------------------------------------------------------


class TestSharing:
    def test_snapshot_apply_through_msgpack(self) -> None:
        """A non-probing worker takes the prober's view; events are marked remote."""
        prober, other = disp(2, probe_threshold=1), disp(2, probe_threshold=1)
        other.assign([])
        fail(prober, 1, now=5.0)
        prober.report(dest(prober, 0), 503, 5.0, retry_after_s=20)
        wire = msgpack.unpackb(msgpack.packb(prober.snapshot(now=6.0)), raw=False)
        events = other.apply(wire, now=100.0)
        assert [(e.uri, e.old, e.new, e.remote, e.cause) for e in events] == [
            (dest(other, i).uri, S.UP, S.DOWN, True, None) for i in (0, 1)]  # fmt: skip
        assert dset(other).health[1].fails == 1
        assert dset(other).health[0].held_until == pytest.approx(119.0)
        assert dset(other).select("c") is None

    def test_apply_never_overrides_own_probes(self) -> None:
        """What this process probes, it knows best: apply leaves it alone."""
        a, b = disp(2, probe_threshold=1), disp(2)
        fail(a, 0)
        assert b.apply(a.snapshot(0.0), 0.0) == []
        assert dset(b).health[0].state is S.UP

    def test_apply_skips_unknown_and_refuses_garbage(self) -> None:
        """Unknown sets or URIs are skipped (config change); a bad snapshot is a ValueError."""
        d = disp(1)
        d.assign([])
        row = {"set": "nope", "uri": "sip:1.2.3.4", "state": "down", "fails": 1, "oks": 0,
               "hold_s": 0.0}  # fmt: skip
        assert d.apply({"version": 1, "destinations": [row]}, 0.0) == []
        for bad in ({"version": 2}, {"version": 1, "destinations": [{"set": "s"}]},
                    {"version": 1, "destinations": [row | {"set": "s", "state": "sideways"}]}):  # fmt: skip
            with pytest.raises(ValueError):
                d.apply(bad, 0.0)

    def test_status(self) -> None:
        """status: set, uri, state, counters, last status, probe age, hold, prober."""
        d = disp(2)
        (p0, _) = d.due_probes(10.0)
        d.probe_answered(p0.branch, 404, 10.2)
        d.handle_timer(10.5)
        rows = {r["uri"]: r for r in d.status(now=12.0)}
        assert rows[dest(d, 0).uri] == {
            "set": "s", "uri": dest(d, 0).uri, "state": "up", "fails": 0, "oks": 1,
            "last_status": 404, "last_probe_age_s": 1.8, "hold_s": 0.0, "probed_here": True}  # fmt: skip
        assert rows[dest(d, 1).uri]["state"] == "suspect"
        assert rows[dest(d, 1).uri]["last_status"] is None
        assert msgpack.unpackb(msgpack.packb(d.status(12.0)), raw=False) == d.status(12.0)

    def test_destination_is_slotted(self) -> None:
        """Destinations, health records and events carry no __dict__."""
        d = disp(1)
        for obj in (dest(d, 0), dset(d).health[0], d.due_probes(0.0)[0]):
            assert not hasattr(obj, "__dict__")
        assert dataclasses.is_dataclass(HealthChanged)


# -- docs/dispatcher.md shows the table the code runs ----------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "dispatcher.md"


def render_table() -> str:
    """TRANSITIONS as markdown, one row per (state, group of inputs with the same entry)."""
    lines = ["| state | input | effect | next | next at threshold |", "|---|---|---|---|---|"]
    for state in State:
        groups: dict[Any, list[Input]] = {}
        for inp in Input:
            groups.setdefault(TRANSITIONS[(state, inp)], []).append(inp)
        for (effect, nxt, at), inputs in groups.items():
            name = "—" if effect is None else effect.__name__.lstrip("_")
            names = ", ".join(i.value for i in inputs)
            lines.append(f"| {state.value} | {names} | {name} | {nxt.value} | {at.value} |")
    return "\n".join(lines)


def test_doc_table_matches_code() -> None:
    """docs/dispatcher.md shows the health table the code runs (regenerate: render_table())."""
    assert render_table() in DOC.read_text(encoding="utf-8")
