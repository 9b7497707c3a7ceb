"""Stages on several "hosts" (docs/architecture.md "Stages on several hosts"): each host is a
run directory of its own and a loopback address of its own (127.0.0.2 the edge, .3 and .4
worker hosts), with no ipc path between them; the ingress -> worker hop runs over TCP with
CURVE keys. sipp calls the edge's ingress, whose workers are all on other hosts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conf import curve, nodekey

from .node import (
    LOCALHOST,
    REPO,
    VENV_BIN,
    Proc,
    SippResult,
    UacRun,
    assert_clean_stop,
    env_for,
    free_port,
    sipp_uac,
    stat_row,
    write_config,
)
from .test_ctl import PROBING, responder  # noqa: F401 (a fixture)
from .test_dialogs import cdrs, dialogs
from .test_shedding import replies, request
from .test_worker_churn import busy, wait_for

pytestmark = pytest.mark.e2e

Uas = Callable[[str], tuple[int, Proc]]

EDGE, HOST_B, HOST_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: test_shedding's small queue (its [bus] keys, here under the edge's [bus] table); the
#: stopped worker stays in the ring for 25 s (liveness x 250 ms), the flood's bound and more
SHED_BUS = "hwm = 1\nmax_pending = 50\nliveness = 100\n"
#: at most this many thousand INFOs, and this long, to fill what TCP on loopback buffers (a
#: few MB at both ends) and the edge's queue
FLOOD_CHUNKS = 150
FLOOD_S = 12.0
#: then this long more at most to get a new INVITE refused: the stop lasts 20 s at most
RETRY_S = 8.0


@dataclass
class Hosts:
    tmp: Path
    sip_port: int
    dest_port: int
    ingress_port: int
    keys: dict[str, tuple[Path, Path]]
    #: the hosts' run directories: short, since ipc paths are (pytest's tmp_path under
    #: xdist leaves no room for the node name that idents on the hop carry)
    runs: Path

    def key(self, name: str) -> tuple[Path, Path]:
        if name not in self.keys:
            secret, public, _ = curve.keygen(str(self.tmp / name))
            self.keys[name] = (secret, public)
        return self.keys[name]

    def conf(self, name: str, address: str, bus: str, peers: dict[str, str],
             key_as: str = "", extra: str = "", set_extra: str = "",
             dests: list[int | str] | None = None) -> Path:  # fmt: skip
        """Host ``name``'s config: the edge's SIP listeners (workers write them into Via and
        Record-Route), its own run directory, ``[bus]`` and a ``[[peer]]`` per other host
        ({name: address}); ``key_as`` signs with another name's key (a host that is not who
        it says)."""
        secret = self.key(key_as or name)[0]
        tables = [extra, f'[curve]\nsecret_key_file = "{secret}"\n',
                  f"[bus]\naddress = \"{address}\"\n{bus}\n"]
        for peer, addr in peers.items():
            tables.append(f'[[peer]]\nname = "{peer}"\nbus_address = "{addr}"\n'
                          f'public_key_file = "{self.key(peer)[1]}"\n')  # fmt: skip
        path = self.tmp / f"{name}.toml"
        write_config(path, self.runs / name, self.sip_port, dests or self.dest_port,
                     extra="\n".join(tables), name=name, set_extra=set_extra)  # fmt: skip
        return path


@pytest.fixture
def hosts(tmp_path: Path, uas: Uas) -> Iterator[Hosts]:
    dport, _ = uas("u1")
    runs = Path(tempfile.mkdtemp(prefix="slh-"))
    yield Hosts(tmp_path, free_port(), dport, free_port(), {}, runs)
    shutil.rmtree(runs, ignore_errors=True)


@pytest.fixture
def run() -> Iterator[Callable[[Path, list[str]], Proc]]:
    """``run(conf, argv)``: honcho (``["start", ...]``) or one sipline process; stopped with
    SIGTERM at teardown, each process having to exit 0."""
    procs: list[Proc] = []

    def start(conf: Path, argv: list[str]) -> Proc:
        if argv[0] == "start":
            argv = [os.path.join(VENV_BIN, "honcho"), "-f", str(REPO / "Procfile"), *argv]
        else:
            argv = [os.path.join(VENV_BIN, "sipline"), *argv]
        p = Proc.start(argv, env_for(conf), REPO)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        if p.popen.poll() is None:
            stopped(p)


def stopped(p: Proc) -> None:
    """SIGTERM ``p``: honcho's processes must each exit 0 (``assert_clean_stop``), a lone
    process too."""
    rc = p.stop(signal.SIGTERM)
    if "honcho" in str(p.popen.args[0]):  # type: ignore[index]
        assert_clean_stop(rc, p.text())
    else:
        assert rc == 0, p.text()[-3000:]


def joined(edge: Proc, prefix: str) -> set[str]:
    """Workers whose ident starts with ``prefix`` that the edge's ingress has in its ring now."""
    live: set[str] = set()
    for line in list(edge.lines):
        for ev, name in (("worker_joined", "joined"), ("worker_left", "left"), ("worker_lost", "lost")):
            if f'"{ev}"' in line and f'"worker": "{prefix}' in line:
                ident = line.split('"worker": "', 1)[1].split('"', 1)[0]
                (live.add if name == "joined" else live.discard)(ident)
    return live


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """The destination (test_shedding's): takes what is forwarded, never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # the whole flood, later
        s.bind((LOCALHOST, free_port()))
        s.settimeout(0.2)
        yield s


def start_edge(hosts: Hosts, run: Callable[[Path, list[str]], Proc],
               peers: dict[str, str], extra: str = "") -> Proc:  # fmt: skip
    # listening before any worker (first_worker_wait_s = 0): the tests start the workers of
    # the other hosts once the edge listens
    conf = hosts.conf("edge", EDGE, f"ingress_port = {hosts.ingress_port}\n"
                      f"first_worker_wait_s = 0\n{extra}", peers)  # fmt: skip
    edge = run(conf, ["start", "ingress"])
    wait_for(lambda: bool(edge.events("ingress_listening")), "the edge's ingress to listen", 20)
    return edge


def worker_bus(hosts: Hosts) -> str:
    return f'ingresses = ["tcp://{EDGE}:{hosts.ingress_port}"]'


#: TCP calls run until the test has seen what it waits for; then SIGUSR1 ends them (sipp
#: places no new call and exits once the open ones have ended). At ``CPS`` this many last
#: 100 s, past every wait: a fixed 150 (5 s of calls) ended, on a loaded box, before host C's
#: worker had even started, so nothing moved between hosts or the wait for C timed out
OPEN_CALLS = 3000
CPS = 30
#: a TCP call one of whose messages is lost fails after this long (sipp -recv_timeout), its
#: screen showing which message timed out, rather than holding the run until sipp's end
RECV_TIMEOUT_MS = 10_000


def tcp_calls(hosts: Hosts, tmp_path: Path, errors: Path) -> UacRun:
    """A TCP caller (one connection for every call) to the edge, until ``ended``."""
    return UacRun.start(hosts.sip_port, "t1", OPEN_CALLS, CPS, tmp_path, timeout_s=150,
                        extra=("-recv_timeout", str(RECV_TIMEOUT_MS), "-trace_err",
                               "-error_file", str(errors)))  # fmt: skip


def ended(calls: UacRun) -> tuple[SippResult, int]:
    """Stop placing calls; the result once the open ones ended, and how many were placed."""
    calls.popen.send_signal(signal.SIGUSR1)
    res = calls.wait()
    return res, int(stat_row(calls.stf)["TotalCallCreated"])


def dropped(proc: Proc, name: str) -> int:
    """Messages ``proc`` counted under ``drops`` ``name`` over all its ``load_stats``."""
    return sum(int(str(d.get(name, 0))) for e in proc.events("load_stats")
               if isinstance(d := e.get("drops"), dict))  # fmt: skip


def served_more(worker: Proc, what: str, intervals: int = 4) -> None:
    """Until ``worker`` logged ``intervals`` more ``load_stats`` (0.5 s each) from now."""
    seen = len(worker.events("load_stats"))
    wait_for(lambda: len(worker.events("load_stats")) >= seen + intervals, what, 30)


def why(res: SippResult, errors: tuple[Path, ...], nodes: dict[str, Proc]) -> str:
    """What a failed run saw: sipp's screen and error logs, then each host's log lines that
    are not periodic stats (the tail of each, bounded)."""
    parts = [f"sipp rc={res.rc} successful={res.successful} failed={res.failed}", res.output]
    for path in errors:
        text = path.read_text(errors="replace") if path.exists() else "(none)"
        parts.append(f"--- {path.name} (first 4000 chars)\n{text[:4000]}")
    for name, proc in nodes.items():
        lines = [ln for ln in list(proc.lines) if '"load_stats"' not in ln]
        parts.append(f"--- host {name}: {len(lines)} lines, the last 60\n" + "\n".join(lines[-60:]))
        parts.append(f"drop_worker_gone: {dropped(proc, 'drop_worker_gone')}")
    return "\n".join(parts)


def test_calls_cross_from_the_edge_to_workers_on_other_hosts(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """The edge has no worker of its own: every call goes through host B's two workers over
    TCP+CURVE, and a worker joining from host C takes its share, then leaves with SIGTERM
    and loses no call."""
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    b = run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["start", "-c", "worker=2", "worker"])
    wait_for(lambda: len(joined(edge, "b.worker.")) == 2, "host B's two workers to join", 20)
    res = sipp_uac(hosts.sip_port, "u1", 200, 100, tmp_path)
    assert (res.successful, res.failed) == (200, 0), res.output
    found = b.events("ingress_found")  # one per worker, each the edge's ingress at its port
    assert len(found) == 2 and all(str(e["ingress"]).startswith("edge.ingress.1-") and
                                   e["endpoint"] == f"tcp://{EDGE}:{hosts.ingress_port}"
                                   for e in found), found  # fmt: skip

    c_conf = hosts.conf("c", HOST_C, worker_bus(hosts), {"edge": EDGE})
    # until C has joined and left (SIGUSR1 then): a fixed 1600 calls (8 s) could end, on a
    # loaded box, before C's worker had started
    calls = UacRun.start(hosts.sip_port, "u1", 200 * 120, 200, tmp_path, timeout_s=150)
    try:
        c = run(c_conf, ["worker"])
        wait_for(lambda: len(joined(edge, "c.worker-")) == 1, "host C's worker to join", 30)
        wait_for(lambda: busy(c), "calls to reach host C's worker", 30)
        stopped(c)
        wait_for(lambda: not joined(edge, "c.worker-"), "host C's worker to leave the ring")
        served_more(b, "host B's workers to serve 1 s more")
        res, placed = ended(calls)
    finally:
        calls.kill()
    assert res.successful == placed > 0 and res.failed == 0, (placed, res.output)
    assert edge.events("worker_left"), edge.text()[-2000:]
    assert not edge.events("worker_lost"), edge.text()[-2000:]


def test_a_host_without_a_listed_key_is_refused(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """Host C signs with a key the edge does not list (it claims to be host B): the edge's ZAP
    handler refuses its handshakes, counts and logs them, and never puts its worker in the
    ring; host B's worker, with the listed key, serves the calls."""
    edge = start_edge(hosts, run, {"b": HOST_B})
    rogue = run(hosts.conf("c", HOST_C, worker_bus(hosts), {"edge": EDGE}, key_as="rogue"),
                ["worker"])  # fmt: skip
    b = run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    wait_for(lambda: len(joined(edge, "b.worker-")) == 1, "host B's worker to join", 20)
    wait_for(lambda: bool(edge.events("bus_handshake_refused")), "the edge to refuse host C", 20)
    res = sipp_uac(hosts.sip_port, "u1", 100, 100, tmp_path)
    assert (res.successful, res.failed) == (100, 0), res.output
    assert not joined(edge, "c."), edge.text()[-2000:]
    assert not rogue.events("ingress_found") and b.events("ingress_found")
    assert busy(b) and not busy(rogue)
    refused = edge.events("bus_handshake_refused")
    assert {e["src"] for e in refused} == {HOST_C}, refused  # the rogue's address, no other


def test_dialogs_and_timers_on_two_worker_hosts_write_each_cdr_once(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """Stateful with dialogs: hosts B and C each run a worker and a timers process, and write
    CDRs to a file of their own. Every call's messages reach the one worker that holds its
    dialog, on whichever host: each call has exactly one CDR, ended by the caller's BYE, and
    both hosts served calls."""
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    procs = {}
    for name, addr in (("b", HOST_B), ("c", HOST_C)):
        extra = dialogs(tmp_path / f"cdr-{name}.jsonl")
        conf = hosts.conf(name, addr, worker_bus(hosts), {"edge": EDGE}, extra=extra)
        procs[name] = run(conf, ["start", "worker", "timers"])
    wait_for(lambda: len(joined(edge, "b.")) == 1 and len(joined(edge, "c.")) == 1,
             "a worker of each host to join", 20)  # fmt: skip
    res = sipp_uac(hosts.sip_port, "u1", 300, 100, tmp_path)
    assert (res.successful, res.failed) == (300, 0), res.output
    for p in procs.values():
        stopped(p)  # flushes the CDR writers
    rows = {name: cdrs(tmp_path / f"cdr-{name}.jsonl") for name in procs}
    ids = [r["call_id"] for per_host in rows.values() for r in per_host]
    assert len(ids) == 300 and len(set(ids)) == 300, {n: len(r) for n, r in rows.items()}
    assert all(rows.values()), {n: len(r) for n, r in rows.items()}  # both hosts held calls
    assert {r["cause"] for per_host in rows.values() for r in per_host} == {"bye"}


def test_a_stopped_worker_on_another_host_is_shed_for_in_order(
    run: Callable[[Path, list[str]], Proc], sink: socket.socket, tmp_path: Path,
) -> None:  # fmt: skip
    """Overload across hosts sheds as on one host: behind host B's stopped worker (SIGSTOP)
    the edge's queue for it fills over TCP, an OPTIONS gets nothing, a new INVITE 503, and
    the BYE is kept and forwarded once the worker runs again."""
    runs = Path(tempfile.mkdtemp(prefix="slh-"))
    try:
        hosts = Hosts(tmp_path, free_port(), sink.getsockname()[1], free_port(), {}, runs)
        edge = start_edge(hosts, run, {"b": HOST_B}, extra=SHED_BUS)
        b = run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["worker"])
        wait_for(lambda: len(joined(edge, "b.")) == 1, "host B's worker to join", 20)
        port = hosts.sip_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
            ua.bind((LOCALHOST, 0))
            ua.settimeout(0.2)
            me = ua.getsockname()[1]
            os.kill(b.popen.pid, signal.SIGSTOP)
            try:
                # fill the kernel's TCP buffers both ends, ZeroMQ's and the edge's own queue,
                # until the edge says its pipe to B took nothing for a whole stats interval
                # while INFOs kept coming, its queue past the INVITE mark (0.75 x 50)
                seen = len(edge.events("load_stats"))
                end = time.monotonic() + FLOOD_S
                for _ in range(FLOOD_CHUNKS):
                    flood(ua, me, port)
                    if any(stuck(e) for e in edge.events("load_stats")[seen:]):
                        break
                    if time.monotonic() > end:
                        raise AssertionError(f"the edge's pipe to host B never filled: "
                                             f"{edge.events('load_stats')[-3:]}")  # fmt: skip
                    time.sleep(0.05)  # the edge's loop reads and queues what came
                else:
                    raise AssertionError("the edge's queue for host B never filled")
                # Even then the queue drains now and then, B stopped: the kernel makes room
                # in TCP's windows in spurts (79 queued and nothing taken for 0.5 s, then 0;
                # an INVITE sent then went on to B and got nothing). So the three requests
                # go right behind a burst of INFOs that tops the queue up, and again with
                # new Call-IDs (a caller retrying) until the INVITE is answered
                while True:
                    flood(ua, me, port)
                    options, options_call = request("OPTIONS", me, port)
                    invite, invite_call = request("INVITE", me, port)
                    bye, bye_call = request("BYE", me, port, to_tag="t")
                    for data in (options, invite, bye):
                        ua.sendto(data, (LOCALHOST, port))
                    marker = invite_call.encode()
                    got = replies(ua, lambda g: marker in g, 3)  # noqa: B023 (used at once)
                    if any(marker in g for g in got) or time.monotonic() > end + RETRY_S:
                        break
            finally:
                os.kill(b.popen.pid, signal.SIGCONT)
            # B forwards every INFO the TCP buffers held first (thousands): on a loaded box
            # that takes a while
            forwarded = replies(sink, lambda f: bye_call.encode() in f and f.startswith(b"BYE "), 60)
            got += replies(ua, None)
        answered = [g for g in got if invite_call.encode() in g]
        assert answered and answered[0].startswith(b"SIP/2.0 503"), got[:3]
        assert forwarded and forwarded[-1].startswith(b"BYE "), forwarded[-3:]
        assert not any(invite_call.encode() in f or options_call.encode() in f for f in forwarded)
        assert not [g for g in got if options_call.encode() in g]
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def flood(ua: socket.socket, me: int, port: int) -> None:
    """A thousand in-dialog INFOs from ``ua`` (port ``me``) to the edge's ``port``."""
    for _ in range(1000):
        ua.sendto(request("INFO", me, port, to_tag="t")[0], (LOCALHOST, port))


def stuck(stats: dict[str, object]) -> bool:
    """A ``load_stats`` interval in which messages came in and the pipe to a worker, holding
    at least 40 (the INVITE mark of SHED_BUS's queue), took none: its TCP windows are full."""
    hops = stats.get("hops")
    return float(str(stats.get("msgs_in_per_s", 0))) > 0 and isinstance(hops, dict) and any(
        int(h.get("queued", 0)) >= 40 and float(h.get("sent_per_s", 1)) == 0
        for h in hops.values())  # fmt: skip


def test_a_killed_worker_on_another_host_is_dropped_by_its_silence(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """Heartbeats across hosts: host C's worker SIGKILLed says nothing, and the edge drops it
    after ``liveness`` missed heartbeats; host B's worker then serves every call."""
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    c = run(hosts.conf("c", HOST_C, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    wait_for(lambda: len(joined(edge, "b.")) == 1 and len(joined(edge, "c.")) == 1,
             "a worker of each host to join", 20)  # fmt: skip
    c.stop(signal.SIGKILL)
    wait_for(lambda: not joined(edge, "c."), "the edge to drop host C's silent worker")
    lost = edge.events("worker_lost")
    assert [str(e["worker"]).split("-")[0] for e in lost] == ["c.worker"], lost
    res = sipp_uac(hosts.sip_port, "u1", 100, 100, tmp_path)
    assert (res.successful, res.failed) == (100, 0), res.output


def share_node_key(hosts: Hosts, names: tuple[str, ...], shared: bool) -> None:
    """Give hosts ``names`` the same ``node.key`` in their run directories (as an operator
    copies it, docs/operations.md), or each a key of its own."""
    key = os.urandom(nodekey.KEY_BYTES)
    for name in names:
        run_dir = hosts.runs / name
        run_dir.mkdir(mode=0o700)
        fd = os.open(run_dir / nodekey.KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key if shared else os.urandom(nodekey.KEY_BYTES))


def forged(worker: Proc) -> int:
    """Responses ``worker`` dropped because their ``sl-c`` tag failed its check."""
    return sum(int(str(e["since_last_log"])) for e in worker.events("responses_dropped")
               if e.get("reason") == "forged_tag")  # fmt: skip


@pytest.mark.parametrize("shared", [True, False], ids=["shared_key", "key_per_host"])
def test_tcp_clients_reach_workers_on_other_hosts_and_get_responses_back(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], uas: Uas, tmp_path: Path,
    shared: bool,
) -> None:  # fmt: skip
    """A TCP caller (one connection for every call) through the edge: workers on hosts B and
    C sign the ``sl-c`` tag that routes each response back to that connection. The UAS rings
    for a second, and host C's worker joins and leaves while calls ring, so responses to
    INVITEs one host forwarded reach the other host's worker. With ``node.key`` copied to
    both hosts every call completes and no tag is refused; with a key per host the moved
    responses are dropped as forged (what the shared key is for)."""
    uas_errors, uac_errors = tmp_path / "uas-errors.log", tmp_path / "uac-errors.log"
    slow, _ = uas("t1", "uas_slow", extra=("-trace_err", "-error_file", str(uas_errors)))
    hosts.dest_port = slow
    share_node_key(hosts, ("b", "c"), shared)
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    b = run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    wait_for(lambda: len(joined(edge, "b.")) == 1, "host B's worker to join", 30)
    calls = tcp_calls(hosts, tmp_path, uac_errors)
    try:
        c = run(hosts.conf("c", HOST_C, worker_bus(hosts), {"edge": EDGE}), ["worker"])
        wait_for(lambda: len(joined(edge, "c.")) == 1, "host C's worker to join", 30)
        wait_for(lambda: busy(c), "calls to reach host C's worker", 30)
        if not shared:
            wait_for(lambda: forged(c) + forged(b) > 0, "a moved response to fail its tag", 30)
            return
        # past the UAS's second of ringing: C holds calls of its own, and B's INVITEs moved
        served_more(c, "host C's worker to serve 3 s", 6)
        stopped(c)
        wait_for(lambda: not joined(edge, "c."), "host C's worker to leave the ring")
        served_more(b, "host B's worker to serve 2 s more")  # C's ringing calls end on B
        res, placed = ended(calls)
    finally:
        calls.kill()
    nodes = {"edge": edge, "b": b, "c": c}
    every_call_served(res, placed, (uac_errors, uas_errors), nodes)
    assert forged(b) == 0 and forged(c) == 0, why(res, (), nodes)


def every_call_served(res: SippResult, placed: int, errors: tuple[Path, Path],
                      nodes: dict[str, Proc]) -> None:  # fmt: skip
    """Every call placed completed and the edge dropped nothing for a leaving worker."""
    assert res.failed == 0 and res.successful == placed > 0, (placed, why(res, errors, nodes))
    assert dropped(nodes["edge"], "drop_worker_gone") == 0, why(res, (), nodes)


def proc_pid(honcho: Proc, name: str) -> int:
    """The pid honcho gave its process ``name`` (``"ingress.1"``)."""
    for line in list(honcho.lines):
        if f"{name} started (pid=" in line:
            return int(line.split("(pid=", 1)[1].split(")", 1)[0])
    raise AssertionError(f"honcho did not start {name}: {honcho.text()[-2000:]}")


#: how long the edge is held still while host C's worker leaves: three times the quiet spell
#: after which a leaving worker used to stop reading, and well inside its wait for LEFT
#: (workers/bus.py LEAVE_S, 2 s). This is the scenario (an edge busy that long), not a wait
#: for an event
EDGE_HELD_S = 0.3


def test_a_worker_leaving_another_host_gets_all_the_edge_handed_it(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], uas: Uas, tmp_path: Path,
) -> None:  # fmt: skip
    """TCP calls through the edge to workers on hosts B and C. The edge is held still
    (SIGSTOP) while host C's worker stops (SIGTERM), so it reads C's ``down`` only after it
    has handed C the messages that came meanwhile (a loaded box does that for a moment):
    C reads on until the edge's ``LEFT``, which comes behind them (workers/bus.py rule 10),
    so every call completes and the edge drops nothing for C. Before, C closed after 0.1 s
    without a message and what the edge sent it next was lost; a TCP caller does not send
    it again, and its calls failed."""
    uas_errors, uac_errors = tmp_path / "uas-errors.log", tmp_path / "uac-errors.log"
    dport, _ = uas("t1", extra=("-trace_err", "-error_file", str(uas_errors)))
    hosts.dest_port = dport
    share_node_key(hosts, ("b", "c"), True)
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    b = run(hosts.conf("b", HOST_B, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    c = run(hosts.conf("c", HOST_C, worker_bus(hosts), {"edge": EDGE}), ["worker"])
    wait_for(lambda: len(joined(edge, "b.")) == 1 and len(joined(edge, "c.")) == 1,
             "a worker of each host to join", 30)  # fmt: skip
    ingress = proc_pid(edge, "ingress.1")
    calls = tcp_calls(hosts, tmp_path, uac_errors)
    try:
        served_more(c, "host C's worker to serve calls 1 s", 2)
        wait_for(lambda: busy(c), "calls to reach host C's worker", 30)
        os.kill(ingress, signal.SIGSTOP)
        try:
            c.popen.send_signal(signal.SIGTERM)
            wait_for(lambda: c.popen.poll() is not None or bool(c.events("worker_leaving")),
                     "host C's worker to say it leaves", 30)  # fmt: skip
            time.sleep(EDGE_HELD_S)  # the scenario: the edge still busy (see EDGE_HELD_S)
        finally:
            os.kill(ingress, signal.SIGCONT)
        assert c.stop(signal.SIGTERM, timeout_s=15) == 0, c.text()[-3000:]
        wait_for(lambda: not joined(edge, "c."), "host C's worker to leave the ring")
        served_more(b, "host B's worker to serve 2 s more")
        res, placed = ended(calls)
    finally:
        calls.kill()
    nodes = {"edge": edge, "b": b, "c": c}
    every_call_served(res, placed, (uac_errors, uas_errors), nodes)
    released = c.events("worker_released")
    assert released and released[0]["holding"] == [], why(res, (), nodes)  # by LEFT, in time


def health(worker: Proc, uri: str) -> list[str]:
    """The states ``worker`` moved destination ``uri`` to, in order."""
    return [str(e["new"]) for e in worker.events("destination_health") if e["uri"] == uri]


def test_probes_answered_on_every_host_keep_a_live_destination_up(
    hosts: Hosts, run: Callable[[Path, list[str]], Proc], responder: int,  # noqa: F811 -- the fixture
) -> None:  # fmt: skip
    """Probing with workers on two hosts (conf/bustcp.py rule 6): each worker gives its OPTIONS
    Call-IDs it owns in the edge's ring of every host's workers, so each answer comes back
    through the edge to the worker that sent the probe. A destination that answers stays up
    on both hosts for many probe rounds; one that never answers goes down on both."""
    dead = free_port()  # nothing listens there
    live_uri, dead_uri = f"sip:127.0.0.1:{responder}", f"sip:127.0.0.1:{dead}"
    probing = "probe_interval_s = 0.3\nprobe_timeout_s = 0.3"
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    procs = {}
    for name, addr, n in (("b", HOST_B, 2), ("c", HOST_C, 1)):
        conf = hosts.conf(name, addr, worker_bus(hosts), {"edge": EDGE}, extra=PROBING,
                          set_extra=probing, dests=[responder, dead])  # fmt: skip
        procs[name] = run(conf, ["start", "-c", f"worker={n}", "worker"])
    wait_for(lambda: len(joined(edge, "b.")) == 2 and len(joined(edge, "c.")) == 1,
             "every worker to join", 20)  # fmt: skip
    for p in procs.values():
        wait_for(lambda p=p: health(p, dead_uri)[-1:] == ["down"],  # type: ignore[misc]
                 "the dead destination to go down on each host", 20)  # fmt: skip
    # many probe rounds more (0.3 s each) with all three workers in the edge's ring
    seen = {n: len(p.events("load_stats")) for n, p in procs.items()}
    for n, p in procs.items():
        wait_for(lambda n=n, p=p: len(p.events("load_stats")) >= seen[n] + 12,  # type: ignore[misc]
                 "host to run 3 s more", 20)  # fmt: skip
    for n, p in procs.items():
        assert "down" not in health(p, live_uri), (n, health(p, live_uri))
    assert len(joined(edge, "")) == 3
