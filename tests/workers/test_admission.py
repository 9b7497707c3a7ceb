"""What becomes of a new request (workers/admission.py), without the stateful core around
it: a StatelessProxy for the plan, a dialog table for call limits, the outs list the core
would pass. The same paths through the whole core are in tests/workers/test_stateful.py."""

from __future__ import annotations

from dataclasses import replace

from conf.settings import DestinationSet, DialogProfile, Mode, Route
from dialogstate.table import DialogTable
from workers.admission import Admission
from workers.proxy import Out, StatelessProxy
from workers.routing.table import RoutingTable

from .dialog_helpers import dialog_settings
from .helpers import UAS, inbound, parsed_req, parsed_resp, request


def admission(route_mode: Mode = "stateful", limit: int = 0) -> Admission:
    s = dialog_settings(profiles=[DialogProfile(name="all", limit=limit)] if limit else [])
    s = replace(s, route=[Route(name="default", to="uas", mode=route_mode)],
                destination_set=[DestinationSet(name="uas", destinations=[f"sip:{UAS}"],
                                                probe_interval_s=5)])  # fmt: skip
    sl = StatelessProxy(s, RoutingTable(s))
    dialogs = DialogTable(s, is_us=sl.listeners.uri_is_us, emit_deltas=False)
    return Admission(s, sl, None, dialogs, {})


def invite(n: int) -> bytes:
    return request("INVITE", via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa{n}",
                   call_id=f"a{n}@10.0.0.1")  # fmt: skip


def test_a_stateful_route_takes_the_request_on_with_its_targets() -> None:
    """A request of a stateful route becomes a context whose first target is the route's
    destination; nothing is sent yet (the core forwards it)."""
    a, outs = admission(), list[Out]()
    ctx = a.admit(parsed_req(invite(1)), inbound(), 0.0, 0.0, outs)
    assert ctx is not None and outs == []
    ((hop, *_),) = ctx.targets
    assert f"{hop.host_plain}:{hop.port}" == UAS


def test_a_stateless_route_is_forwarded_at_once() -> None:
    """A stateless route's request is forwarded with the plan made, and no context."""
    a, outs = admission(route_mode="stateless"), list[Out]()
    assert a.admit(parsed_req(invite(1)), inbound(), 0.0, 0.0, outs) is None
    ((_, meta, data),) = outs
    assert f"{meta[1]}:{meta[2]}" == UAS and data.startswith(b"INVITE ")


def test_a_route_mode_swapped_by_a_reload_decides() -> None:
    """``route_mode`` (what ``use_routing`` swaps) is read for each request; without a
    stateful route or proxy the core is not needed for it."""
    a = admission()
    a.route_mode = {"default": "stateless"}
    outs: list[Out] = []
    assert a.admit(parsed_req(invite(1)), inbound(), 0.0, 0.0, outs) is None and len(outs) == 1
    assert not a.any_stateful


def test_a_call_over_its_limit_is_refused_counted_and_queued_for_the_log() -> None:
    """With one live call in a profile of limit 1, the next INVITE gets 486, ``over_limit``
    counts it and ``refused`` holds one entry naming it for the worker to log."""
    a = admission(limit=1)
    assert a.dialogs is not None
    first = parsed_req(invite(1))
    a.dialogs.invite_forwarded(first, caller="c", callee="d", source_ip="10.0.0.1",
                               source_port=5070, destination=UAS, now=0.0, wall=0.0)  # fmt: skip
    outs: list[Out] = []
    assert a.admit(parsed_req(invite(2)), inbound(), 0.1, 0.1, outs) is None
    ((_, meta, data),) = outs
    assert meta[1] == "10.0.0.1" and parsed_resp(data).status == 486
    assert a.counters == {"over_limit": 1}
    assert [(r["call_id"], r["status"]) for r in a.refused] == [("a2@10.0.0.1", 486)]


def test_every_destination_down_answers_503() -> None:
    """A stateful route whose probed set has its one destination disabled (``ctl
    destinations set``) answers 503 statelessly."""
    a = admission()
    assert a.sl.routing.dispatcher.disable("uas", f"sip:{UAS}")
    outs: list[Out] = []
    assert a.admit(parsed_req(invite(1)), inbound(), 0.0, 0.0, outs) is None
    assert [parsed_resp(d).status for _, _, d in outs] == [503]
