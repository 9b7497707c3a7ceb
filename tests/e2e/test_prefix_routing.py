"""Prefix tables through a real node: calls reach the gateway group of their number's longest
prefix, a number without one gets 404, and the stateful proxy fails over to the next group."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cachedb.servers import Server

from .conftest import StartNode
from .node import REPO, Proc, env_for, read_stat, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]


def uas_counting(uas: Uas, calls: int, tmp_path: Path, name: str,
                 scenario: str = "uas") -> tuple[int, Proc, Path]:  # fmt: skip
    """A UAS that exits after ``calls`` calls, with its statistics file."""
    stf = tmp_path / f"{name}-stat.csv"
    port, proc = uas("u1", scenario, ("-m", str(calls), "-trace_stat", "-stf", str(stf),
                                      "-trace_msg", "-message_file", str(tmp_path / f"{name}.log")))
    return port, proc, stf


def uas_done(proc: Proc, stf: Path) -> tuple[int, int]:
    try:
        proc.popen.wait(40)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the UAS did not get its calls:\n{proc.text()[-2000:]}")
    return read_stat(stf)


def prefix_config(tmp_path: Path, a: int, b: int, rows: str, route_extra: str = "",
                  set_a_extra: str = "") -> str:  # fmt: skip
    """Two groups, a table of ``rows`` and a route to it, put before the node's default
    route (a TOML array of tables may be split), so the table decides."""
    csv = tmp_path / "carriers.csv"
    csv.write_text(rows)
    return f"""
[[destination_set]]
name = "group_a"
destinations = ["sip:127.0.0.1:{a}"]
{set_a_extra}

[[destination_set]]
name = "group_b"
destinations = ["sip:127.0.0.1:{b}"]

[[prefix_table]]
name = "carriers"
file = "{csv}"

[[route]]
name = "pstn"
methods = ["INVITE", "ACK", "BYE", "CANCEL"]
prefix_table = "carriers"
{route_extra}
"""


ROWS = "prefix,group,priority,weight\n+44,group_b\n+4420,group_a\n1555,group_b,0,1\n"


def test_calls_reach_the_group_of_their_longest_prefix(start_node: StartNode, uas: Uas,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """Calls to +4420... reach group_a (longest prefix), calls to +4413... and 1555...
    reach group_b: each UAS gets exactly its calls and every call completes."""
    a, pa, sa = uas_counting(uas, 3, tmp_path, "a")
    b, pb, sb = uas_counting(uas, 4, tmp_path, "b")
    node = start_node(a, "worker=2", listen_first=prefix_config(tmp_path, a, b, ROWS))
    for service, calls in (("+442079460001", 3), ("+441314960002", 2), ("15551234567", 2)):
        res = sipp_uac(node.port, "u1", calls, 10, tmp_path, service=service)
        assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(pa, sa) == (3, 0)
    assert uas_done(pb, sb) == (4, 0)


def test_number_without_a_prefix_gets_404(start_node: StartNode, uas: Uas,
                                          tmp_path: Path) -> None:  # fmt: skip
    """A number no prefix covers, and a user that is no number, get 404; nothing forwarded."""
    a, pa, sa = uas_counting(uas, 1, tmp_path, "a")
    node = start_node(a, "worker=1", listen_first=prefix_config(tmp_path, a, a, ROWS))
    for service in ("+33140000000", "alice"):
        res = sipp_uac(node.port, "u1", 2, 10, tmp_path, scenario="uac_notfound", service=service)
        assert (res.successful, res.failed) == (2, 0), res.output
    # the UAS still waits for its one call: the first call it sees is this one
    res = sipp_uac(node.port, "u1", 1, 10, tmp_path, service="+442000000000")
    assert (res.successful, res.failed) == (1, 0), res.output
    assert uas_done(pa, sa) == (1, 0)


def test_stateful_failover_to_the_next_priority(start_node: StartNode, uas: Uas,
                                                tmp_path: Path) -> None:  # fmt: skip
    """group_a answers 486, which its failover_codes name: the stateful proxy tries the
    prefix's next group (priority 1), and every call completes there."""
    a, pa, sa = uas_counting(uas, 3, tmp_path, "busy", scenario="uas_busy")
    b, pb, sb = uas_counting(uas, 3, tmp_path, "b", scenario="uas_rr")  # its 200 has a Contact
    rows = "+4420,group_a,0\n+4420,group_b,1\n"
    conf = prefix_config(tmp_path, a, b, rows, route_extra='mode = "stateful"',
                         set_a_extra='failover_codes = ["408", "486", "5xx"]')  # fmt: skip
    node = start_node(a, "worker=2", listen_first=conf)
    # a UAC that follows the route set (as a phone does): its ACK and BYE go to the UAS that
    # answered, not where the routing would send a new request
    res = sipp_uac(node.port, "u1", 3, 10, tmp_path, scenario="uac_rr", service="+442079460001")
    assert (res.successful, res.failed) == (3, 0), res.output
    assert uas_done(pb, sb) == (3, 0)
    assert uas_done(pa, sa)[0] == 3  # the busy UAS saw (and refused) every call first


def test_table_pushed_to_redis_routes_calls(start_node: StartNode, uas: Uas,
                                            tmp_path: Path) -> None:  # fmt: skip
    """A table in a real redis (``cachedb_key``), stored with ``sipline prefix-push`` before
    the node starts: the workers read it at start and calls reach the group of their
    number's longest prefix."""
    server = Server("redis")
    server.start()
    try:
        a, pa, sa = uas_counting(uas, 2, tmp_path, "a")
        b, pb, sb = uas_counting(uas, 2, tmp_path, "b")
        csv = tmp_path / "carriers.csv"
        conf = prefix_config(tmp_path, a, b, ROWS).replace(
            f'file = "{csv}"', 'cachedb_key = "e2e:carriers"'
        ) + f'\n[registrar]\ncachedb_url = "{server.url}"\n'
        assert "cachedb_key" in conf and "file =" not in conf  # the table is redis's alone
        conf_file = tmp_path / "push.toml"
        conf_file.write_text(f'[node]\nrun_dir = "{tmp_path / "push-run"}"\n' + conf
                             + '[[route]]\nname = "default"\nto = "group_a"\n')  # fmt: skip
        push = subprocess.run(
            [sys.executable, "-m", "sipline", "prefix-push", "carriers", str(csv)],
            env=env_for(conf_file), cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert push.returncode == 0, push.stdout + push.stderr
        node = start_node(a, "worker=2", listen_first=conf)
        for service in ("+442079460001", "+441314960002"):
            res = sipp_uac(node.port, "u1", 2, 10, tmp_path, service=service)
            assert (res.successful, res.failed) == (2, 0), res.output
        assert uas_done(pa, sa) == (2, 0)
        assert uas_done(pb, sb) == (2, 0)
    finally:
        server.cleanup()
