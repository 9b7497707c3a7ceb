"""Reload without restart through a real node with sipp on both sides (docs/operations.md,
"Reload without restart"): ``sipline ctl reload`` moves new calls to another destination set
while a call held across the reload completes on the UAS it started on; a bad file, or a
change to a key that needs a restart, is refused whole with a message naming the file and the
key, and the node keeps routing as before; SIGHUP to each worker does the same; ``sipline ctl
destinations set ... inactive`` steers calls away from a destination and ``active`` brings
them back; a changed prefix table CSV is taken, a bad one refused with its line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conf.control import ask
from tests.cachedb.servers import Server

from .conftest import StartNode
from .node import REPO, VENV_BIN, Node, Proc, UacRun, env_for, sipp_uac
from .test_prefix_routing import prefix_config

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
STATEFUL = '\n[proxy]\nmode = "stateful"\n'


def ctl(node: Node, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"{VENV_BIN}/sipline", "ctl", *words], check=False,
                          env=env_for(node.conf),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def traced_uas(uas: Uas, tmp_path: Path, name: str) -> tuple[int, Proc, Path]:
    """A UAS whose messages are written to ``<name>.log``: its INVITEs are counted there."""
    log = tmp_path / f"{name}.log"
    port, proc = uas("u1", "uas", ("-trace_msg", "-message_file", str(log), "-trace_stat",
                                   "-stf", str(tmp_path / f"{name}-stat.csv")))  # fmt: skip
    return port, proc, log


def invites(log: Path) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count("\nINVITE sip:")


def wait_for(what: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.05)  # polling step, bounded by the deadline
    return what()


def edit(node: Node, old: str, new: str) -> str:
    """Rewrite the node's configuration file in place; returns the text it had."""
    text = node.conf.read_text()
    assert old in text, text
    node.conf.write_text(text.replace(old, new, 1))
    return text


def worker_generations(node: Node) -> dict[str, int]:
    done = ctl(node, "stats", "--json")
    assert done.returncode == 0, done.stderr
    return {r["proc"]: r["routing"]["generation"] for r in json.loads(done.stdout)["stats"]
            if "routing" in r}  # fmt: skip


def test_ctl_reload_moves_new_calls_and_keeps_a_held_call(start_node: StartNode, uas: Uas,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """A call held 12 s (a reload on a loaded box took over 4 s) starts on set "uas" (UAS
    a); the route is edited to set "other" (UAS b) and ``ctl reload`` answers generation 1
    from both workers; 3 new calls reach b only, the held call's BYE completes on a. A bad set name and a changed listener port are then
    refused naming the file and the key; the next call still reaches b."""
    a, _, alog = traced_uas(uas, tmp_path, "a")
    b, _, blog = traced_uas(uas, tmp_path, "b")
    other = f'\n[[destination_set]]\nname = "other"\ndestinations = ["sip:127.0.0.1:{b}"]\n'
    node = start_node(a, "worker=2", extra=STATEFUL + other)
    held = UacRun.start(node.port, "u1", 1, 1, tmp_path, timeout_s=60, extra=("-d", "12000"))
    try:
        assert wait_for(lambda: "\nACK sip:" in (alog.read_text(errors="replace")
                                                 if alog.exists() else "")), "no call on a"
        edit(node, 'to = "uas"', 'to = "other"')
        done = ctl(node, "reload")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("generation 1 ") == 2, done.stdout
        assert held.popen.poll() is None, "the held call ended before the reload"
        res = sipp_uac(node.port, "u1", 3, 10, tmp_path)
        assert (res.successful, res.failed) == (3, 0), res.output
        assert invites(blog) == 3 and invites(alog) == 1
        res_held = held.wait()
        assert (res_held.successful, res_held.failed) == (1, 0), res_held.output
    finally:
        held.kill()
    assert set(worker_generations(node).values()) == {1}
    assert ctl(node, "stats").stdout.count("gen 1 ") == 2  # the table's routing column

    good = edit(node, 'to = "other"', 'to = "nosuch"')
    done = ctl(node, "reload")
    assert done.returncode == 1
    assert str(node.conf) in done.stderr and "route[0].to" in done.stderr, done.stderr
    assert "nothing changed" in done.stderr
    node.conf.write_text(good.replace(f"port = {node.port}", f"port = {node.port + 1}", 1))
    done = ctl(node, "reload")
    assert done.returncode == 1
    assert "listen[0].port" in done.stderr and "restart" in done.stderr, done.stderr
    assert len(node.proc.wait_events("reload_refused", 4)) >= 4  # 2 files x 2 workers
    assert set(worker_generations(node).values()) == {1}
    res = sipp_uac(node.port, "u1", 1, 10, tmp_path)
    assert (res.successful, res.failed) == (1, 0), res.output
    assert invites(blog) == 4 and invites(alog) == 1


def test_sighup_reloads_and_destinations_can_be_marked(start_node: StartNode, uas: Uas,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """Set "uas" lists a and b (round robin). ``ctl destinations set uas <a> inactive``: 4
    calls all reach b and ``ctl destinations`` shows a disabled; ``active``: a gets calls
    again. Then the set is edited to list a only and SIGHUP sent to each worker (and to the
    ingress and the timer service, which log it and go on): both workers log
    ``routing_reloaded`` and calls reach a only; a bad file and SIGHUP: both log
    ``reload_refused`` naming the file and key, and calls still reach a."""
    a, _, alog = traced_uas(uas, tmp_path, "a")
    b, _, blog = traced_uas(uas, tmp_path, "b")
    node = start_node([a, b], "worker=2", extra=STATEFUL, set_extra='algorithm = "round_robin"')
    a_uri = f"sip:127.0.0.1:{a}"
    done = ctl(node, "destinations", "set", "uas", a_uri, "inactive")
    assert done.returncode == 0 and done.stdout.count("is disabled") == 2, done.stdout + done.stderr
    rows = json.loads(ctl(node, "destinations", "--json").stdout)["destinations"]
    assert {r["uri"]: r["state"] for r in rows}[a_uri] == "disabled"
    res = sipp_uac(node.port, "u1", 4, 10, tmp_path)
    assert (res.successful, res.failed) == (4, 0), res.output
    assert (invites(alog), invites(blog)) == (0, 4)
    done = ctl(node, "destinations", "set", "uas", a_uri, "active")
    assert done.returncode == 0 and done.stdout.count("is up") == 2, done.stdout + done.stderr
    res = sipp_uac(node.port, "u1", 4, 10, tmp_path)
    assert (res.successful, res.failed) == (4, 0), res.output
    assert invites(alog) >= 1 and invites(alog) + invites(blog) == 8
    done = ctl(node, "destinations", "set", "uas", "sip:127.0.0.1:9", "inactive")
    assert done.returncode == 1 and "no destination" in done.stderr

    seen = invites(alog), invites(blog)
    edit(node, f'"sip:127.0.0.1:{a}", "sip:127.0.0.1:{b}"', f'"sip:127.0.0.1:{a}"')
    workers = [node.pid("worker.1"), node.pid("worker.2")]
    for pid in [*workers, node.pid("ingress.1"), node.pid("timers.1")]:  # as `kill -HUP` to all
        os.kill(pid, signal.SIGHUP)
    assert len(node.proc.wait_events("routing_reloaded", 2, 20)) == 2
    assert len(node.proc.wait_events("sighup_ignored", 2, 20)) == 2  # and they live on
    res = sipp_uac(node.port, "u1", 4, 10, tmp_path)
    assert (res.successful, res.failed) == (4, 0), res.output
    assert (invites(alog), invites(blog)) == (seen[0] + 4, seen[1])
    edit(node, 'to = "uas"', 'to = "nosuch"')
    for pid in workers:
        os.kill(pid, signal.SIGHUP)
    refused = node.proc.wait_events("reload_refused", 2, 20)
    assert len(refused) == 2 and all("route[0].to" in str(e["error"]) and str(node.conf)
                                     in str(e["error"]) for e in refused), refused  # fmt: skip
    res = sipp_uac(node.port, "u1", 2, 10, tmp_path)
    assert (res.successful, res.failed) == (2, 0), res.output
    assert invites(alog) == seen[0] + 6
    assert set(worker_generations(node).values()) == {1}


def test_ctl_reload_reads_a_changed_prefix_table(start_node: StartNode, uas: Uas,
                                                 tmp_path: Path) -> None:  # fmt: skip
    """The prefix CSV alone changes (+4420 moves from group_a to group_b): ``ctl reload``
    takes it, and the next calls to +4420... reach b; a CSV with a bad line is refused
    naming the file and the line, and calls still reach b."""
    a, _, alog = traced_uas(uas, tmp_path, "a")
    b, _, blog = traced_uas(uas, tmp_path, "b")
    node = start_node(a, "worker=2", listen_first=prefix_config(
        tmp_path, a, b, "prefix,group\n+44,group_b\n+4420,group_a\n"))  # fmt: skip
    csv = tmp_path / "carriers.csv"
    res = sipp_uac(node.port, "u1", 2, 10, tmp_path, service="+442079460001")
    assert (res.successful, res.failed) == (2, 0), res.output
    assert (invites(alog), invites(blog)) == (2, 0)
    csv.write_text("prefix,group\n+44,group_b\n+4420,group_b\n")
    done = ctl(node, "reload")
    assert done.returncode == 0 and done.stdout.count("1 prefix tables") == 2, done.stderr
    res = sipp_uac(node.port, "u1", 2, 10, tmp_path, service="+442079460001")
    assert (res.successful, res.failed) == (2, 0), res.output
    assert (invites(alog), invites(blog)) == (2, 2)
    csv.write_text("prefix,group\n+44,group_b\n+4420,group_c\n")
    done = ctl(node, "reload")
    assert done.returncode == 1 and f"{csv}:3: group" in done.stderr, done.stderr
    res = sipp_uac(node.port, "u1", 1, 10, tmp_path, service="+442079460001")
    assert (res.successful, res.failed) == (1, 0), res.output
    assert (invites(alog), invites(blog)) == (2, 3)


def push_table(node: Node, name: str, rows: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    csv = tmp_path / f"push-{time.monotonic_ns()}.csv"
    csv.write_text(rows)
    return subprocess.run([f"{VENV_BIN}/sipline", "prefix-push", name, str(csv)], check=False,
                          env=env_for(node.conf), capture_output=True, text=True, timeout=60)  # fmt: skip


def test_ctl_reload_takes_a_table_pushed_to_redis(start_node: StartNode, uas: Uas,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """A table kept in a real redis (``cachedb_key``): ``sipline prefix-push`` of a table
    that moves +4420 to group_b, then ``ctl reload``: both workers take it (generation 1) and
    the next calls to +4420... reach b. A chunk damaged in redis then refuses the reload on
    every worker naming ``cachedb:KEY``, and calls still reach b."""
    server = Server("redis")
    server.start()
    try:
        a, _, alog = traced_uas(uas, tmp_path, "a")
        b, _, blog = traced_uas(uas, tmp_path, "b")
        conf = prefix_config(tmp_path, a, b, "").replace(
            f'file = "{tmp_path / "carriers.csv"}"', 'cachedb_key = "e2e:reload"'
        ) + f'\n[registrar]\ncachedb_url = "{server.url}"\n'  # fmt: skip
        assert "cachedb_key" in conf
        # the node's file is written by start_node; push through a file of the same keys first
        first = tmp_path / "first.toml"
        first.write_text(f'[node]\nrun_dir = "{tmp_path / "push-run"}"\n' + conf
                         + '[[route]]\nname = "default"\nto = "group_a"\n')  # fmt: skip
        csv = tmp_path / "v1.csv"
        csv.write_text("prefix,group\n+44,group_b\n+4420,group_a\n")
        pushed = subprocess.run([f"{VENV_BIN}/sipline", "prefix-push", "carriers", str(csv)],
                                env=env_for(first), capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        node = start_node(a, "worker=2", listen_first=conf)
        res = sipp_uac(node.port, "u1", 2, 10, tmp_path, service="+442079460001")
        assert (res.successful, res.failed) == (2, 0), res.output
        assert (invites(alog), invites(blog)) == (2, 0)
        pushed = push_table(node, "carriers", "prefix,group\n+44,group_b\n+4420,group_b\n", tmp_path)
        assert pushed.returncode == 0, pushed.stderr
        # pushed, not yet reloaded: the workers still route by the table they read
        res = sipp_uac(node.port, "u1", 1, 10, tmp_path, service="+442079460001")
        assert (res.successful, res.failed) == (1, 0), res.output
        assert (invites(alog), invites(blog)) == (3, 0)
        done = ctl(node, "reload")
        assert done.returncode == 0 and done.stdout.count("1 prefix tables") == 2, done.stdout + done.stderr
        assert set(worker_generations(node).values()) == {1}
        res = sipp_uac(node.port, "u1", 2, 10, tmp_path, service="+442079460001")
        assert (res.successful, res.failed) == (2, 0), res.output
        assert (invites(alog), invites(blog)) == (3, 2)
        damage = subprocess.run(
            [VENV_BIN + "/python", "-c", DAMAGE, server.url, "e2e:reload"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert damage.returncode == 0, damage.stderr
        done = ctl(node, "reload")
        assert done.returncode == 1 and "cachedb:e2e:reload" in done.stderr, done.stdout + done.stderr
        assert set(worker_generations(node).values()) == {1}
        res = sipp_uac(node.port, "u1", 1, 10, tmp_path, service="+442079460001")
        assert (res.successful, res.failed) == (1, 0), res.output
        assert (invites(alog), invites(blog)) == (3, 3)
    finally:
        server.cleanup()


#: overwrite chunk 0 of the current version with other bytes (the digest no longer matches)
DAMAGE = """
import asyncio, sys
from workers.cachedb import open_cachedb
async def main():
    db = open_cachedb(sys.argv[1], timeout_s=2.0)
    try:
        cur = await db.get(sys.argv[2] + ":current")
        await db.set(sys.argv[2] + ":" + cur.split()[0].decode() + ":0", b"prefix,group\\n+44,group_a\\n")
    finally:
        await db.close()
asyncio.run(main())
"""


def worker_views(node: Node, uri: str) -> dict[str, str]:
    """Each live worker's own state for destination ``uri`` (not ``ctl``'s merged view)."""
    replies, _ = ask(str(node.run_dir), "destinations", timeout_s=5.0)
    return {str(r["proc"]): d["state"] for r in replies for d in r.get("destinations", ())
            if d["uri"] == uri}  # fmt: skip


def test_a_worker_started_after_a_mark_takes_it(start_node: StartNode, uas: Uas,
                                                tmp_path: Path) -> None:  # fmt: skip
    """``ctl destinations set uas <a> inactive`` on a one-worker node, then a second worker
    started by hand: it reads the mark at start (docs/operations.md "Marking destinations"),
    so both workers show a disabled and 6 calls, spread over both, all reach b. ``active``
    clears it: a third worker started then has a up."""
    a, _, alog = traced_uas(uas, tmp_path, "a")
    b, _, blog = traced_uas(uas, tmp_path, "b")
    node = start_node([a, b], "worker=1", extra=STATEFUL, set_extra='algorithm = "round_robin"')
    a_uri = f"sip:127.0.0.1:{a}"
    done = ctl(node, "destinations", "set", "uas", a_uri, "inactive")
    assert done.returncode == 0 and done.stdout.count("is disabled") == 1, done.stdout + done.stderr
    late: list[Proc] = []
    try:
        late.append(Proc.start([f"{VENV_BIN}/sipline", "worker"], env_for(node.conf), REPO))
        assert late[0].wait_events("worker_ready", 1, 30), late[0].text()[-2000:]
        assert wait_for(lambda: len(worker_views(node, a_uri)) == 2)
        assert set(worker_views(node, a_uri).values()) == {"disabled"}, worker_views(node, a_uri)
        assert wait_for(lambda: any(e.get("workers") == 2 and str(e["proc"]).startswith("ingress")
                                    for e in node.proc.events("worker_joined"))), \
            node.proc.text()[-2000:]  # the ingress sends to both (the timers log it too)
        res = sipp_uac(node.port, "u1", 6, 10, tmp_path)
        assert (res.successful, res.failed) == (6, 0), res.output
        assert (invites(alog), invites(blog)) == (0, 6)
        assert late[0].events("destination_marks_taken"), late[0].text()[-2000:]
        done = ctl(node, "destinations", "set", "uas", a_uri, "active")
        assert done.returncode == 0 and done.stdout.count("is up") == 2, done.stdout + done.stderr
        late.append(Proc.start([f"{VENV_BIN}/sipline", "worker"], env_for(node.conf), REPO))
        assert late[1].wait_events("worker_ready", 1, 30), late[1].text()[-2000:]
        assert wait_for(lambda: len(worker_views(node, a_uri)) == 3)
        assert set(worker_views(node, a_uri).values()) == {"up"}, worker_views(node, a_uri)
    finally:
        for p in late:
            if p.popen.poll() is None:
                p.stop(signal.SIGTERM, timeout_s=10)
