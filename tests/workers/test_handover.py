"""The hold gate of a worker whose dialogs are on their way (workers/dialogs/handover.py)."""

from __future__ import annotations

from dialogstate.sources import STATEPLANE, vanished_source
from workers.dialogs import handover
from workers.dialogs.handover import HoldGate


class TestHoldGate:
    def test_holds_until_every_expected_source_handed(self) -> None:
        """Messages held while two sources are expected come out, in order, only after both."""
        gate = HoldGate()
        gate.expect(STATEPLANE, 0.0)
        gate.expect("worker:w1", 0.0)
        assert gate.hold("bye-1") is None and gate.hold("bye-2") is None
        gate.handed(STATEPLANE, 0.1)
        assert gate.pending() and gate.take_released() == []
        gate.handed("worker:w1", 0.2)
        assert not gate.pending()
        assert gate.take_released() == ["bye-1", "bye-2"]
        assert gate.take_released() == [] and len(gate) == 0

    def test_a_handed_heard_first_counts(self) -> None:
        """The state plane may say HANDED for a vanished worker before this worker noticed."""
        gate = HoldGate()
        gate.handed(vanished_source("w2"), 1.0)
        gate.expect(vanished_source("w2"), 1.1)
        assert not gate.pending()

    def test_an_early_handed_is_forgotten_after_a_while(self) -> None:
        gate = HoldGate()
        gate.handed("x", 0.0)
        gate.expire(handover.REMEMBER_S + 1)
        gate.expect("x", handover.REMEMBER_S + 1)
        assert gate.pending()

    def test_a_source_whose_worker_came_back_is_not_waited_for(self) -> None:
        """Rule 1: ``cancel`` ends a wait at once; a source not expected is not remembered
        as heard (a later real vanishing of that worker waits for its HANDED)."""
        gate = HoldGate()
        gate.expect(vanished_source("w2"), 0.0)
        gate.hold("bye")
        assert gate.cancel(vanished_source("w2")) and not gate.pending()
        assert gate.take_released() == ["bye"]
        assert not gate.cancel(vanished_source("w3"))
        gate.expect(vanished_source("w3"), 1.0)
        assert gate.expected == [vanished_source("w3")]
        assert gate.counters["waits_cancelled"] == 1

    def test_a_silent_source_costs_a_delay_not_a_message(self) -> None:
        """Rule 3: past its wait a source is given up and what was held comes out."""
        gate = HoldGate()
        gate.expect(STATEPLANE, 0.0, wait_s=2.0)
        gate.hold("m")
        assert gate.expire(1.9) == [] and gate.take_released() == []
        assert gate.expire(2.0) == [STATEPLANE]
        assert gate.take_released() == ["m"]
        assert gate.counters["waits_expired"] == 1

    def test_held_messages_are_bounded(self) -> None:
        """Rule 3: past MAX_HELD the oldest is handed back to be served as it is."""
        gate = HoldGate()
        gate.expect(STATEPLANE, 0.0)
        for i in range(handover.MAX_HELD):
            assert gate.hold(i) is None
        assert gate.hold("one more") == 0
        assert len(gate) == handover.MAX_HELD and gate.counters["held_overflow"] == 1

    def test_early_handeds_are_bounded(self) -> None:
        gate = HoldGate()
        for i in range(5000):
            gate.handed(f"s{i}", float(i))
        assert gate.stats()["expected"] == []
        assert len(gate._handed) <= 1024
