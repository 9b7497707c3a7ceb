"""Overload shedding (ingress/shedding.py): the order, alone and on a real stalled worker pipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq

from conf.settings import Bus
from ingress.bus import FULL
from ingress.shedding import ADMIT, REFUSE, SHED, Shedder
from tests.pipeline.helpers import run
from tests.pipeline.test_bus import IN_META, Hop

CFG = Bus(max_pending=100, max_batch=16)


@pytest.mark.parametrize(
    ("method", "fill", "verdict"),
    [
        (b"OPTIONS", 0.49, ADMIT), (b"OPTIONS", 0.5, SHED), (b"REGISTER", 0.6, SHED),
        (b"SUBSCRIBE", 0.6, SHED), (b"INVITE", 0.6, ADMIT), (b"INVITE", 0.75, REFUSE),
        (b"INFO", 0.99, ADMIT), (b"ACK", 5.0, ADMIT), (b"CANCEL", 5.0, ADMIT),
        (b"BYE", 5.0, ADMIT), (None, 5.0, ADMIT),
    ],
)  # fmt: skip
def test_order(method: bytes | None, fill: float, verdict: int) -> None:
    """OPTIONS/REGISTER go first, new INVITEs next; ACK, CANCEL, BYE and responses never."""
    assert Shedder(CFG).verdict(method, fill) == verdict


def test_never_shed_kinds_have_a_reserve() -> None:
    """ACK, CANCEL, BYE and responses may queue past max_pending (reserve_fill, plus one
    batch: the backlog grows by whole batches)."""
    s = Shedder(CFG)
    assert s.limit(b"BYE", 100) == 125 + 16 and s.limit(None, 100) == 125 + 16
    assert s.limit(b"INVITE", 100) == 100


def test_stalled_worker_sheds_in_order(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A worker that stops reading: as the ingress's backlog for it grows, OPTIONS are shed
    first, then new INVITEs refused, while BYEs still queue into the reserve; past that even
    they are refused and nothing grows further."""
    cfg = Bus(hwm=1, max_batch=1, max_pending=40)

    async def body() -> None:
        hop = Hop(ctx, tmp_path, cfg)
        try:
            await hop.joined()
            hop.worker._loop.remove_reader(hop.worker._pull.FD)  # the worker stops reading
            bus = hop.ingress
            pipe = next(iter(bus._pipes.values()))

            def fill_to(share: float, method: bytes) -> None:
                for _ in range(100_000):
                    if pipe.backlog_msgs >= share * cfg.max_pending:
                        return
                    assert bus.submit(b"c", IN_META, b"x" * 200, method) == ADMIT
                raise AssertionError("the backlog never grew")

            fill_to(0.5, b"INFO")
            assert bus.submit(b"c", IN_META, b"x", b"OPTIONS") == SHED
            assert bus.submit(b"c", IN_META, b"x", b"REGISTER") == SHED
            assert bus.submit(b"c", IN_META, b"x", b"INVITE") == ADMIT
            fill_to(0.75, b"BYE")
            assert bus.submit(b"c", IN_META, b"x", b"INVITE") == REFUSE
            fill_to(1.0, b"ACK")
            assert bus.submit(b"c", IN_META, b"x", b"INFO") == FULL
            fill_to(1.25 + cfg.max_batch / cfg.max_pending, b"BYE")
            assert bus.submit(b"c", IN_META, b"x", b"BYE") == FULL
            assert pipe.backlog_msgs <= 1.25 * cfg.max_pending + 2 * cfg.max_batch
        finally:
            hop.close()

    run(body)
