"""The opensips.cfg fragment of docs/routing.md, written as sipline configuration, through a
real node with sipp on both sides: 403 for a source that is not trusted, "00" stripped and "+"
put in its place, P-Asserted-Identity replaced with one built from the From domain, 404 when
no route matches, and failure routing to the next destination set on a 503 from the first
set's UAS and on a timeout (a socket that never answers)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .node import Node, Proc, UacRun, assert_clean_stop, free_port, read_stat, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
CALLS = 4


def fragment(run_dir: Path, port: int, uac_ports: list[int], checker: int, primary: int,
             silent: int, backup: int) -> str:  # fmt: skip
    """docs/routing.md's worked example, with the test's ports (keep the two alike)."""
    trusted = "".join(f"""
[[trusted]]
cidr = "127.0.0.1"
port = {p}
tag = "carrier"
""" for p in uac_ports)
    return f"""
[node]
name = "routes"
run_dir = "{run_dir}"

[[listen]]
transport = "udp"
address = "127.0.0.1"
port = {port}

[[listen]]
transport = "tcp"
address = "127.0.0.1"
port = {port}

[proxy]
mode = "stateful"

[transactions]
t1_ms = 50   # Timer B = 64*T1 = 3.2 s: the timeout case ends soon

[log]
level = "info"

{trusted}
[[destination_set]]
name = "checker"
destinations = ["sip:127.0.0.1:{checker}"]

[[destination_set]]
name = "primary"
destinations = ["sip:127.0.0.1:{primary}"]

[[destination_set]]
name = "silent"
destinations = ["sip:127.0.0.1:{silent}"]

[[destination_set]]
name = "backup"
destinations = ["sip:127.0.0.1:{backup}"]

[[route]]   # if (!check_source_address(1)) {{ sl_send_reply(403, "Forbidden"); exit; }}
name = "untrusted"
untrusted = "carrier"
reject = 403
reason = "Forbidden"

[[route]]   # if ($rU =~ "^00") {{ strip(2); prefix("+"); }}
name = "international"
ruri_user = "00.*"
strip_user = 2
prefix_user = "+"
continue_routing = true

[[route]]   # remove_hf("P-Asserted-Identity"); append_hf("P-Asserted-Identity: <sip:+15551234@$fd>")
name = "pai"
continue_routing = true
[[route.header_edit]]
name = "P-Asserted-Identity"
action = "set"
value = "<sip:+15551234@{{from_host}}>"

[[route]]
name = "checked"
ruri_user = '\\+15551234'
to = "checker"

[[route]]   # t_on_failure("next_gw"): 5xx or 408 (or no answer) go on to the next set
name = "us"
ruri_user = '\\+1555000\\d'
to = "primary"
failure_sets = ["backup"]
failure_codes = ["5xx", "408"]

[[route]]
name = "us-silent"
ruri_user = '\\+1555999\\d'
to = "silent"
failure_sets = ["backup"]

[[route]]   # if (!do_routing(0)) {{ send_reply(404, "No route"); exit; }}
name = "no-route"
reject = 404
reason = "No route"
"""


def wait_stat(stf: Path, calls: int, deadline_s: float = 10.0) -> tuple[int, int]:
    """A sipp UAS's (successful, failed) once ``calls`` ended, or what it says at the
    deadline (it writes its -trace_stat file every second)."""
    end = time.monotonic() + deadline_s
    found = (0, 0)
    while time.monotonic() < end:
        if stf.exists() and len(stf.read_text().splitlines()) > 1:
            found = read_stat(stf)
            if sum(found) >= calls:
                break
        time.sleep(0.2)  # polling step, bounded by the deadline
    return found


def invites(sock: socket.socket) -> set[str]:
    """The Call-IDs of the INVITEs a silent destination received (it answers none)."""
    ids: set[str] = set()
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return ids
        if data.startswith(b"INVITE "):
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"call-id:"):
                    ids.add(line.split(b":", 1)[1].strip().decode())


def test_issue_fragment(tmp_path: Path, uas: Uas) -> None:
    """Each branch of the fragment behaves as OpenSIPS would through one node."""
    checker, _ = uas("u1", "uas_rr_pai")
    stf = tmp_path / "primary.csv"
    primary, _ = uas("u1", "uas_unavailable", extra=("-trace_stat", "-stf", str(stf), "-fd", "1"))
    backup, _ = uas("u1", "uas_rr")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    uac_port, timed_port, port = free_port(), free_port(), free_port()
    conf = tmp_path / "sipline.toml"
    run_dir = tmp_path / "run"
    conf.write_text(fragment(run_dir, port, [uac_port, timed_port], checker, primary,
                             silent.getsockname()[1], backup))  # fmt: skip
    node = Node.start(conf, run_dir, port, "worker=2")
    try:
        # the timeout case takes Timer B (3.2 s) per call: in the background meanwhile
        timed = UacRun.start(port, "u1", CALLS, 10, tmp_path, 60, "uac_rr",
                             local_port=timed_port, service="0015559991")  # fmt: skip

        res = sipp_uac(port, "u1", CALLS, 10, tmp_path, 30, "uac_forbidden", service="0015551234")
        assert (res.successful, res.failed) == (CALLS, 0), res.output  # any port but uac_port: untrusted

        res = sipp_uac(port, "u1", CALLS, 10, tmp_path, 30, "uac_rr_pai",
                       local_port=uac_port, service="0015551234")  # fmt: skip
        assert (res.successful, res.failed) == (CALLS, 0), res.output  # the UAS answers 488 on a miss

        res = sipp_uac(port, "u1", CALLS, 10, tmp_path, 30, "uac_notfound",
                       local_port=uac_port, service="12345")  # fmt: skip
        assert (res.successful, res.failed) == (CALLS, 0), res.output

        res = sipp_uac(port, "u1", CALLS, 10, tmp_path, 30, "uac_rr",
                       local_port=uac_port, service="0015550001")  # fmt: skip
        assert (res.successful, res.failed) == (CALLS, 0), res.output
        assert wait_stat(stf, CALLS)[0] == CALLS  # each call met the 503 first

        res = timed.wait()
        assert (res.successful, res.failed) == (CALLS, 0), res.output
        assert len(invites(silent)) == CALLS  # each call met the silence first
    finally:
        silent.close()
    assert_clean_stop(*node.stop())
