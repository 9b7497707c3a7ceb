"""A prefix table in the stateful core, in memory: failover walks the prefix's groups in
priority order, and each destination's health goes to its own group."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conf.settings import DestinationSet, PrefixTable, Proxy, Route
from workers.proxy import StatelessProxy
from workers.routing.health import State
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import parsed_req, request, settings
from .test_stateful import UAS1, UAS2, Link, answer


def make(tmp_path: Path) -> StatefulProxy:
    csv = tmp_path / "t.csv"
    csv.write_text("44,a,0\n44,b,1\n")
    sets = [DestinationSet(name="a", destinations=[f"sip:{UAS1}"]),
            DestinationSet(name="b", destinations=[f"sip:{UAS2}"], probe_interval_s=60,
                           probe_threshold=1)]  # fmt: skip
    s = settings(sets=sets, routes=[Route(name="pstn", prefix_table="t")],
                 proxy=Proxy(mode="stateful"))  # fmt: skip
    s = replace(s, prefix_table=[PrefixTable(name="t", file=str(csv))])
    return StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))


def test_failover_walks_the_groups_and_reports_to_each(tmp_path: Path) -> None:
    """Group a (priority 0) answers 503: the INVITE goes on to group b, whose 503 marks b's
    destination down in b (its own set probes; a's does not)."""
    link = Link(make(tmp_path))
    link.from_uac(request("INVITE", "sip:4420@127.0.0.1:5999"))
    first_uas, first = link.down[-1]
    assert first_uas == UAS1
    link.from_uas(answer(first, 503, "Service Unavailable"), first_uas)
    second_uas, second = link.down[-1]
    assert second_uas == UAS2 and parsed_req(second).method == "INVITE"
    link.from_uas(answer(second, 503, "Service Unavailable"), second_uas)
    assert link.take_up() == [100, 503]
    changed = [(e.set_name, e.new) for e in link.p.health_events]
    assert ("b", State.DOWN) in changed


def test_failure_set_follows_the_prefix_groups(tmp_path: Path) -> None:
    """Once every group of the prefix failed with a status in the route's failure_codes,
    the route's failure_sets follow (OpenSIPS failure_route after the drouting list)."""
    csv = tmp_path / "t.csv"
    csv.write_text("44,a\n")
    sets = [DestinationSet(name="a", destinations=[f"sip:{UAS1}"]),
            DestinationSet(name="backup", destinations=[f"sip:{UAS2}"])]  # fmt: skip
    route = Route(name="pstn", prefix_table="t", failure_sets=["backup"])
    s = settings(sets=sets, routes=[route], proxy=Proxy(mode="stateful"))
    s = replace(s, prefix_table=[PrefixTable(name="t", file=str(csv))])
    link = Link(StatefulProxy(s, StatelessProxy(s, RoutingTable(s))))
    link.from_uac(request("INVITE", "sip:4420@127.0.0.1:5999"))
    first_uas, first = link.down[-1]
    assert first_uas == UAS1
    link.from_uas(answer(first, 503, "Service Unavailable"), first_uas)
    second_uas, second = link.down[-1]
    assert second_uas == UAS2
    link.from_uas(answer(second, 200, "OK"), second_uas)
    assert link.take_up() == [100, 200]
