"""The cluster-wide features with every peer on another "host" (issue #14 item 2): three
nodes, each with its own run directory and its own loopback address (127.0.0.11-13) where its
state plane binds, listing the others only as ``tcp://`` peers with CURVE keys: no ipc path
joins them, only the state planes' relays (``stateplane/meshrelay.py``) and cluster control
(``stateplane/clusterctl.py``). SIP still listens on 127.0.0.1 (each node its own port), where
sipp runs.

A trunk call limit holds across the three (calls over it refused with the configured status
wherever they arrive), a pike block raised on one holds on the others, a shared ratelimit
pipe holds its rate across them, a peer whose key is not the one configured is refused, and
``sipline ctl ... --cluster`` on one node shows all three."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.ratelimit.pipes import SHARE_INTERVAL_S

from .conftest import StartNode
from .node import VENV_BIN, Node, Proc, UacRun, env_for, free_run, sipp_uac
from .test_dialogs import dialogs
from .test_hostile_stateplane import keygen
from .test_pike import FLOODER, PIKE, answered, assert_all_dropped, ctl_pike, flood
from .test_replication import poll

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
NAMES = ("node-a", "node-b", "node-c")
HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
#: a second flooding source, for the block that must not cross
OTHER_FLOODER = "127.0.0.4"


class Cluster:
    """Three "hosts"; ``wrong_key[i]`` names a node whose key node i is given wrong, and
    ``{node}`` in ``extra`` is each node's name."""

    def __init__(self, start_node: StartNode, tmp_path: Path, dport: int, extra: str,
                 scale: str = "worker=1", wrong_key: dict[int, int] | None = None) -> None:  # fmt: skip
        keys = tmp_path / "keys"
        keys.mkdir()
        for name in (*NAMES, "stranger"):
            keygen(keys / name)
        ports = [free_run(h) for h in HOSTS]
        eps = [f"tcp://{h}:{p}" for h, p in zip(HOSTS, ports)]
        self.nodes: list[Node] = []
        for i, name in enumerate(NAMES):
            others = [j for j in range(3) if j != i]
            peers = ", ".join(f'"{eps[j]}"' for j in others)
            text = extra.replace("{node}", name) + f"""
[stateplane]
peers = [{peers}]
bind = "{HOSTS[i]}:{ports[i]}"
cluster_ctl = true

[curve]
secret_key_file = "{keys / name}.key_secret"
"""
            for j in others:
                public = "stranger" if (wrong_key or {}).get(i) == j else NAMES[j]
                text += f"""
[[peer]]
name = "{NAMES[j]}"
stateplane = "{eps[j]}"
public_key_file = "{keys / public}.key"
"""
            self.nodes.append(start_node(dport, scale, text, name=name))


def ctl_json(conf: Path, *argv: str) -> dict[str, Any]:
    done = subprocess.run([f"{VENV_BIN}/sipline", "ctl", *argv, "--json"], env=env_for(conf),
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def stateplane_stats(node: Node) -> dict[str, Any]:
    rows = ctl_json(node.conf, "stats")["stats"]
    return next(r for r in rows if r.get("role") == "stateplane")  # type: ignore[no-any-return]


def relay_stats(node: Node) -> dict[str, Any]:
    return stateplane_stats(node).get("mesh_relay") or {}


def counted(node: Node) -> int:
    """The trunk calls the node's worker admits against: its own and the other nodes'."""
    rows = ctl_json(node.conf, "dialogs")["dialogs"]["workers"]
    return sum(int(r["limits"].get("trunk", 0)) for r in rows)


TRUNK = dialogs(Path("/dev/null"), "profiles_cluster = true") + """
[[dialog_profile]]
name = "trunk"
limit = 6
over_limit_status = 503
"""


def test_trunk_limit_holds_across_three_hosts(start_node: StartNode, uas: Uas,
                                              tmp_path: Path) -> None:  # fmt: skip
    """A trunk limited to 6 calls with ``profiles_cluster``: 2 long calls held on each node
    fill it; every node then counts all 6 (its 2 and the other nodes' 4), and one more call to each node is
    refused with the configured 503 wherever it arrives. ``ctl dialogs --cluster`` on A shows
    the three nodes' 2 calls each; once the held calls end, 6 pass again through C."""
    dport, _ = uas("u1")
    extra = TRUNK.replace('cdr_file = "/dev/null"', f'cdr_file = "{tmp_path}/{{node}}.cdr"')
    cluster = Cluster(start_node, tmp_path, dport, extra)
    a, _, c = cluster.nodes
    # held 30 s: the checks below run while they are up, a ctl call taking ~1 s on a busy box
    held = [UacRun.start(n.port, "u1", 2, 10, tmp_path, timeout_s=90, extra=("-d", "30000"))
            for n in cluster.nodes]  # fmt: skip
    try:
        assert poll(lambda: [counted(n) for n in cluster.nodes] == [6, 6, 6], 15), \
            [counted(n) for n in cluster.nodes]
        doc = ctl_json(a.conf, "dialogs", "--cluster")
        assert [e["node"] for e in doc["cluster"]] == list(NAMES), doc
        assert [(e["dialogs"]["profiles"], e["error"]) for e in doc["cluster"]] == \
            [({"trunk": 2}, "")] * 3, doc
        for n in cluster.nodes:
            over = sipp_uac(n.port, "u1", 1, 10, tmp_path, timeout_s=30)
            assert (over.successful, over.failed) == (0, 1), over.output
            refused = n.proc.wait_events("call_refused", 1)
            assert [e["status"] for e in refused] == [503], refused
        results = [h.wait() for h in held]
    finally:
        for h in held:
            h.kill()
    assert [(r.successful, r.failed) for r in results] == [(2, 0)] * 3, [r.output for r in results]
    assert poll(lambda: counted(c) == 0, 10), counted(c)
    again = sipp_uac(c.port, "u1", 6, 20, tmp_path, extra=("-d", "1000"))
    assert (again.successful, again.failed) == (6, 0), again.output


def test_pike_block_on_one_host_holds_on_the_others(start_node: StartNode, uas: Uas,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """A flood of node A from 127.0.0.3 is blocked there (one ``pike_blocked``, on A); B and C
    list it as a peer's block and drop the source's requests, answering none, while a sipp UAC
    through C completes every call. ``ctl pike --cluster`` on B shows the block on all three."""
    dport, _ = uas("u1")
    cluster = Cluster(start_node, tmp_path, dport, PIKE + "cluster = true\n")
    a, b, c = cluster.nodes
    socks = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((FLOODER, 0))
            socks.append(s)
        assert 0 < answered(socks, flood(a.port, socks, 200)) <= 100
        for n in (b, c):
            assert poll(lambda n=n: any(r["src"] == FLOODER and r["origin"] == "peer"  # type: ignore[misc]
                                        for r in ctl_pike(n.conf)["blocked"]), 10), (relay_stats(a), relay_stats(n))  # type: ignore[attr-defined]
            assert_all_dropped(n.conf, n.port, socks, 20)
        doc = ctl_json(b.conf, "pike", "--cluster")
        origins = {e["node"]: [r["origin"] for r in e["pike"]["blocked"] if r["src"] == FLOODER]
                   for e in doc["cluster"]}  # fmt: skip
        assert origins == {"node-a": ["local"], "node-b": ["peer"], "node-c": ["peer"]}, doc
    finally:
        for s in socks:
            s.close()
    res = sipp_uac(c.port, "u1", 20, 10, tmp_path, timeout_s=30)
    assert (res.successful, res.failed) == (20, 0), res.output
    assert_metrics_of_every_node(b)
    assert len(a.proc.events("pike_blocked")) == 1
    assert [n.proc.events("pike_blocked") for n in (b, c)] == [[], []]


def test_a_peer_with_a_wrong_key_is_refused(start_node: StartNode, uas: Uas,
                                            tmp_path: Path) -> None:  # fmt: skip
    """Node A is given a wrong key for B (another key pair's): A's relay refuses B's
    handshake (``curve_refused``) and does not reach B's, so a block B raises (127.0.0.4)
    never reaches A, while one C raises later (127.0.0.3) does; ``ctl stats --cluster`` on A
    reaches C but not B."""
    dport, _ = uas("u1")
    cluster = Cluster(start_node, tmp_path, dport, PIKE + "cluster = true\n", wrong_key={0: 1})
    a, b, c = cluster.nodes
    socks = {}
    try:
        for src in (OTHER_FLOODER, FLOODER):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            socks[src] = s
        assert 0 < answered([socks[OTHER_FLOODER]], flood(b.port, [socks[OTHER_FLOODER]], 200)) <= 100
        assert poll(lambda: any(r["src"] == OTHER_FLOODER for r in ctl_pike(c.conf)["blocked"]), 10)  # type: ignore[attr-defined]
        assert 0 < answered([socks[FLOODER]], flood(c.port, [socks[FLOODER]], 200)) <= 100
        assert poll(lambda: any(r["src"] == FLOODER for r in ctl_pike(a.conf)["blocked"]), 10)  # type: ignore[attr-defined]
        assert [r["src"] for r in ctl_pike(a.conf)["blocked"]] == [FLOODER]  # type: ignore[attr-defined]
    finally:
        for s in socks.values():
            s.close()
    assert int(stateplane_stats(a)["stateplane"].get("curve_refused", 0)) > 0
    assert relay_stats(a)["peers"]["node-b"]["heard"] == 0
    doc = ctl_json(a.conf, "stats", "--cluster")
    reached = {e["node"]: (bool(e["stats"]), e["error"]) for e in doc["cluster"]}
    assert reached["node-a"] == (True, "") and reached["node-c"] == (True, ""), reached
    assert reached["node-b"] == (False, "no answer within 1 s"), reached
    table = subprocess.run([f"{VENV_BIN}/sipline", "ctl", "stats", "--cluster"], env=env_for(a.conf),
                           capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert table.returncode == 0, table.stderr
    sections = [line for line in table.stdout.splitlines() if line.startswith("== node")]
    assert sections == ["== node node-a", "== node node-b: no answer within 1 s", "== node node-c"]


def assert_metrics_of_every_node(node: Node) -> None:
    """``sipline metrics --cluster``'s collector on ``node``: one scrape labels samples of all
    three nodes, each of which answered."""
    from prometheus_client.core import Metric

    from conf.load import load
    from sipline.metrics import ClusterCollector

    families: dict[str, Metric] = {m.name: m for m in ClusterCollector(load(str(node.conf))).collect()}
    assert {s.labels["node"] for s in families["sipline_busy_ratio"].samples} == set(NAMES)
    assert {s.labels["node"]: s.value for s in families["sipline_node_reached"].samples} == \
        dict.fromkeys(NAMES, 1.0)
    stages = {(s.labels["node"], s.labels["stage"]) for s in families["sipline_busy_ratio"].samples}
    assert {(n, "ingress") for n in NAMES} <= stages, stages


SHARED = """
[[ratelimit]]
name = "invites"
algorithm = "sliding"
limit_per_s = 30
window_s = 1.0
methods = ["INVITE"]
shared = true
"""
LIMIT = 30


def test_shared_pipe_holds_its_rate_across_three_hosts(start_node: StartNode, uas: Uas,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """A 30/s shared pipe on three nodes of one worker each: sipp offers 20 calls/s to each
    for 5 s at once (2x the limit). Together they pass the limit within 5 % plus the exchange
    error, where unshared pipes would pass all 300; ``ctl ratelimit --cluster`` on A shows
    the pipe with 3 participants on every node."""
    dport, _ = uas("u1")
    cluster = Cluster(start_node, tmp_path, dport, SHARED)

    def participants() -> list[int]:
        doc = ctl_json(cluster.nodes[0].conf, "ratelimit", "--cluster")
        return [row.get("participants", 0) for e in doc["cluster"] for row in e["ratelimit"]]

    assert poll(lambda: participants() == [3, 3, 3], 15), participants()
    calls, rate = 100, 20
    t0 = time.monotonic()
    runs = [UacRun.start(n.port, "u1", calls, rate, tmp_path, timeout_s=60) for n in cluster.nodes]
    results = [r.wait() for r in runs]
    took_s = time.monotonic() - t0
    passed = sum(r.successful for r in results)
    assert all(r.successful + r.failed == calls for r in results), [r.output for r in results]
    expected = LIMIT * calls / rate
    exchange_error = LIMIT * SHARE_INTERVAL_S * 3
    assert passed >= 0.95 * expected - exchange_error, (passed, expected)
    assert passed <= 1.05 * LIMIT * max(took_s, calls / rate) + exchange_error, (passed, took_s)
    doc = ctl_json(cluster.nodes[0].conf, "ratelimit", "--cluster")
    rows = [row for e in doc["cluster"] for row in e["ratelimit"]]
    assert sum(r["passed"] for r in rows) == passed, rows
