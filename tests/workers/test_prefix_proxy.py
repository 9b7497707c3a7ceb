"""A route to a prefix table in the stateless proxy: the longest prefix's group gets the
request, and a user without a prefix gets the table's status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conf.settings import DestinationSet, PrefixTable, Route
from workers.proxy import StatelessProxy
from workers.routing.prefix_csv import PrefixFileError
from workers.routing.table import RoutingTable

from .helpers import inbound, one, parsed_resp, request, settings

ROWS = "+44,uk\n+4420,london\n+4420,uk,1\n"


def prefix_proxy(tmp_path: Path, rows: str = ROWS, **table: object) -> StatelessProxy:
    csv = tmp_path / "t.csv"
    csv.write_text(rows)
    s = settings(
        sets=[DestinationSet(name="uk", destinations=["sip:10.0.0.44:5060"]),
              DestinationSet(name="london", destinations=["sip:10.0.0.20:5070"])],
        routes=[Route(name="pstn", prefix_table="t")],
    )  # fmt: skip
    s = dataclasses.replace(s, prefix_table=[PrefixTable(name="t", file=str(csv), **table)])  # type: ignore[arg-type]
    return StatelessProxy(s, RoutingTable(s))


@pytest.mark.parametrize(("user", "dest"), [("+442079460000", ["10.0.0.20", 5070]),
                                            ("+441314960000", ["10.0.0.44", 5060])])  # fmt: skip
def test_longest_prefix_group_gets_the_request(tmp_path: Path, user: str, dest: list[object],
                                               ) -> None:  # fmt: skip
    """The request leaves for the first destination of the longest prefix's first group."""
    _, meta, data = one(prefix_proxy(tmp_path).handle(request(uri=f"sip:{user}@h"), inbound()))
    assert meta[1:3] == dest
    assert data.startswith(f"INVITE sip:{user}@h SIP/2.0".encode())


@pytest.mark.parametrize("user", ["+33140000000", "alice", "4420", "+44" + "1" * 40,
                                  "%2B442079460000", "+4420;npdi"])
def test_no_prefix_gets_404(tmp_path: Path, user: str) -> None:
    """No prefix of the user (or a user that is no number) is answered 404, not forwarded."""
    _, meta, data = one(prefix_proxy(tmp_path).handle(request(uri=f"sip:{user}@h"), inbound()))
    assert meta[1:3] == ["10.0.0.1", 5070]  # back to the sender
    assert parsed_resp(data).status == 404


def test_configured_no_match_status(tmp_path: Path) -> None:
    """no_match_status and no_match_reason are what a miss is answered."""
    p = prefix_proxy(tmp_path, no_match_status=480, no_match_reason="No Carrier")
    _, _, data = one(p.handle(request(uri="sip:999@h"), inbound()))
    assert data.startswith(b"SIP/2.0 480 No Carrier\r\n")


def test_bad_file_stops_the_routing_table(tmp_path: Path) -> None:
    """A bad file builds no routing table (the worker exits 2: tests/test_cli.py)."""
    with pytest.raises(PrefixFileError) as info:
        prefix_proxy(tmp_path, rows="+44,uk\n+45,nowhere\n")
    assert (info.value.line, info.value.field) == (2, "group")
