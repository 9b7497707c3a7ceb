"""Overload shedding on a running node: the worker is stopped (SIGSTOP), its ingress's queue
for it fills, and the ingress sheds in order: OPTIONS dropped, new INVITEs refused 503, BYE
kept and delivered once the worker runs again (SIGCONT). The same stall shows in the
ingress's per-hop figures: backlog depth and the oldest message's wait."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import StartNode
from .node import LOCALHOST, Node, free_port
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

#: a small queue, so a few hundred messages fill it behind a stopped worker; a worker missing
#: 40 heartbeats (10 s) is dropped, so the 1-2 s stop does not make it look dead
BUS = "\n[bus]\nhwm = 1\nmax_pending = 50\nliveness = 40\n"
#: tests/e2e/node.py's ``[log] stats_interval_s``: rates are per second over it
STATS_INTERVAL_S = 0.5
#: the stalled-pipe test's flood bound; its worker stays in the ring 25 s (liveness x 250 ms)
#: so a flood slowed by load never outlives it
FILL_S = 18.0
STALL_BUS = BUS.replace("liveness = 40", "liveness = 100")


def request(method: str, port: int, proxy: int, *, to_tag: str = "") -> tuple[bytes, str]:
    """A request from ``port`` whose Request-URI names the proxy (so the routing table, and
    its destination, the sink, decide where it goes)."""
    call_id = uuid.uuid4().hex
    tag = f";tag={to_tag}" if to_tag else ""
    data = (
        f"{method} sip:uas@{LOCALHOST}:{proxy} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:load@{LOCALHOST}>;tag=f\r\n"
        f"To: <sip:uas@{LOCALHOST}>{tag}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return data, call_id


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """The destination: takes what is forwarded, never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # room for the whole flood the worker forwards once it runs again (~1 MB)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((LOCALHOST, free_port()))
        s.settimeout(0.2)
        yield s


def replies(sock: socket.socket, until: Callable[[bytes], bool] | None,
            wait_s: float = 10.0) -> list[bytes]:  # fmt: skip
    """What ``sock`` receives up to the first datagram ``until`` holds for (included), at
    most ``wait_s``; with no ``until``, what has arrived already."""
    out, end = [], time.monotonic() + wait_s
    while time.monotonic() < end and (until is not None or select.select([sock], [], [], 0)[0]):
        try:
            out.append(sock.recv(65535))
        except TimeoutError:  # polling step, bounded by the deadline
            continue
        if until is not None and until(out[-1]):
            break
    return out


def test_shedding_order_with_the_worker_stopped(start_node: StartNode,
                                                sink: socket.socket) -> None:  # fmt: skip
    """Behind a stopped worker: OPTIONS gets nothing, a new INVITE 503 with Retry-After, and
    the BYE is kept and forwarded once the worker runs again; the drops are counted by
    reason in the ingress's load_stats."""
    node = start_node(sink.getsockname()[1], "worker=1", BUS)
    worker = node.pid("worker.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind((LOCALHOST, 0))
        ua.settimeout(0.2)
        me = ua.getsockname()[1]
        os.kill(worker, signal.SIGSTOP)
        try:
            for _ in range(3000):  # fill the kernel, ZeroMQ and the ingress's own queue
                ua.sendto(request("INFO", me, node.port, to_tag="t")[0], (LOCALHOST, node.port))
            options, options_call = request("OPTIONS", me, node.port)
            invite, invite_call = request("INVITE", me, node.port)
            bye, bye_call = request("BYE", me, node.port, to_tag="t")
            for data in (options, invite, bye):
                ua.sendto(data, (LOCALHOST, node.port))
            # the ingress answers the INVITE itself, the worker still stopped
            got = replies(ua, lambda g: invite_call.encode() in g)
        finally:
            os.kill(worker, signal.SIGCONT)
        # the worker handles what the ingress kept in the order it came: an OPTIONS or
        # INVITE kept would be forwarded (or answered) before the BYE
        forwarded = replies(sink, lambda f: bye_call.encode() in f and f.startswith(b"BYE "))
        got += replies(ua, None)
    answered = [g for g in got if invite_call.encode() in g]
    assert answered and answered[0].startswith(b"SIP/2.0 503"), got[:3]
    assert b"Retry-After:" in answered[0]
    assert forwarded and forwarded[-1].startswith(b"BYE "), forwarded[-3:]
    assert not any(invite_call.encode() in f or options_call.encode() in f for f in forwarded)
    assert not [g for g in got if options_call.encode() in g]  # shed: no answer at all
    end = time.monotonic() + 10
    while not any(shed(e, "drop_shed_options") and shed(e, "drop_shed_invite")
                  for e in node.proc.events("load_stats")):  # fmt: skip
        assert time.monotonic() < end, "the sheds never showed in the ingress's load_stats"
        time.sleep(0.1)  # polling step, bounded by the deadline


def shed(stats: dict[str, object], reason: str) -> bool:
    """An ingress's ``load_stats`` that counts drops for ``reason``."""
    drops = stats.get("drops")
    return str(stats["proc"]).startswith("ingress") and isinstance(drops, dict) and (
        drops.get(reason, 0) >= 1)  # fmt: skip


def test_stalled_pipe_reports_depth_and_oldest_age(start_node: StartNode,
                                                   sink: socket.socket) -> None:  # fmt: skip
    """With the worker stopped, the ingress's pipe to it reports a backlog and an oldest
    message that ages with the stop, in load_stats and ctl stats; after SIGCONT both fall
    back to 0."""
    node = start_node(sink.getsockname()[1], "worker=1", STALL_BUS)
    worker = node.pid("worker.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind((LOCALHOST, 0))
        me = ua.getsockname()[1]
        os.kill(worker, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            fill(ua, me, node)
            seen = len(node.proc.events("load_stats"))
            # the stop lasts until the ingress has logged its oldest message a second old
            end = time.monotonic() + 15
            while max(map(oldest_ms, logged := stalled_stats(node, seen)), default=0) < 1000:
                assert time.monotonic() < end, f"the oldest never aged 1 s: {logged}"
                time.sleep(0.05)  # polling step, bounded by the deadline
            reply = ingress_stats(node)
            waited_ms = (time.monotonic() - stopped_at) * 1000
            logged = stalled_stats(node, seen)
        finally:
            os.kill(worker, signal.SIGCONT)
    ((peer, hop),) = reply["hops"].items()
    assert peer.startswith("worker.1-") and hop["queued"] > 0, reply
    assert 1000 <= hop["oldest_ms"] <= waited_ms, (hop, waited_ms)
    assert reply["queued_oldest_ms"] == hop["oldest_ms"] and reply["queued_out"] == hop["queued"]
    ages = [e["hops"][peer]["oldest_ms"] for e in logged]
    assert any(a >= 500 for a in ages) and ages == sorted(ages), ages  # it ages while stopped
    end = time.monotonic() + 5
    while time.monotonic() < end:
        last = [e for e in node.proc.events("load_stats") if str(e["proc"]).startswith("ingress")]
        if last[-1]["queued"] == 0 and last[-1]["hops"][peer]["oldest_ms"] == 0:  # type: ignore[index]
            break
        time.sleep(0.1)  # polling step, bounded by the deadline
    else:
        raise AssertionError(f"the backlog never drained: {last[-1]}")
    # the logged rates add up to the pipe's sent total: the fill's bursts, taken before the
    # backlog formed and while it had room, show as messages per second in the intervals
    # they fell in (a rate stuck at 0, or one over the wrong interval, would not). The reply
    # came after the fill and nothing reached the ingress since, so its total is the last.
    took = logged_sent(last, peer)
    assert took == hop["sent"] >= hop["queued"], (took, hop)


def logged_sent(stats: list[dict[str, Any]], peer: str) -> float:
    """Messages the pipe to ``peer`` took, as its ``sent_per_s`` over ``stats`` add up."""
    rates = [float(e["hops"][peer]["sent_per_s"]) for e in stats if peer in e["hops"]]
    return sum(rates) * STATS_INTERVAL_S


def fill(ua: socket.socket, me: int, node: Node) -> None:
    """Flood until the pipe to the stopped worker holds a backlog that stays: a ``load_stats``
    interval in which INFOs came in and the pipe, holding some, took none (the socket buffers
    beneath it are full). How much a burst gets into those buffers first depends on how the
    ingress's loop interleaves reading and flushing ([bus] flush_ms batches several messages a
    frame), and on a loaded box the kernel drops much of a burst before the ingress reads it,
    so no count of bursts is enough: the flood watches the ingress's own figures."""
    seen = len(node.proc.events("load_stats"))
    end = time.monotonic() + FILL_S
    while not any(stuck(e) for e in stalled_stats(node, seen)):
        assert time.monotonic() < end, f"no backlog formed: {stalled_stats(node, seen)[-3:]}"
        for _ in range(1000):
            ua.sendto(request("INFO", me, node.port, to_tag="t")[0], (LOCALHOST, node.port))
        time.sleep(0.05)  # the ingress's loop reads and queues what came


def stuck(stats: dict[str, Any]) -> bool:
    """An interval in which messages came in and a pipe holding some took none."""
    return float(stats.get("msgs_in_per_s", 0)) > 0 and any(
        int(h.get("queued", 0)) > 0 and float(h.get("sent_per_s", 1)) == 0
        for h in stats["hops"].values())  # fmt: skip


def stalled_stats(node: Node, seen: int) -> list[dict[str, Any]]:
    """The ingresses' ``load_stats`` logged after the first ``seen`` (of every process)."""
    return [e for e in node.proc.events("load_stats")[seen:] if str(e["proc"]).startswith("ingress")]


def oldest_ms(stats: dict[str, Any]) -> float:
    """The age of the oldest message any of the ingress's pipes holds."""
    return max((float(hop["oldest_ms"]) for hop in stats["hops"].values()), default=0.0)


def ingress_stats(node: Node) -> dict[str, Any]:
    """The ingress's answer to ``sipline ctl stats --json`` (the stopped worker is silent)."""
    stats = ctl(node.conf, "stats")["stats"]
    return next(r for r in stats if r.get("role") == "ingress")  # type: ignore[union-attr, attr-defined, no-any-return]
