"""Ingresses found through the state plane (docs/architecture.md "Finding the edge through
the state plane"): worker host B names no ingress; its state plane hears the edge's over
TCP+CURVE, and its workers serve what the edge announces, following an ingress that comes
and goes. An authenticated peer that announces an endpoint outside its own address is
refused and logged. Hosts as in test_hosts.py: a loopback address and a run directory each."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from conf import curve
from stateplane import updates as up

from .node import REPO, VENV_BIN, Proc, env_for, free_run, sipp_uac, write_config
from .test_hosts import EDGE, HOST_B, Hosts, hosts, joined, run, stopped  # noqa: F401 (fixtures)
from .test_worker_churn import wait_for

pytestmark = pytest.mark.e2e

Run = Callable[[Path, list[str]], Proc]
#: a peer of host B that holds its listed key and announces what it should not
ROGUE = "127.0.0.5"


def conf(h: Hosts, name: str, address: str, bus: str, peers: dict[str, tuple[str, str]],
         stateplane: str) -> Path:  # fmt: skip
    """Host ``name``'s config, as ``Hosts.conf`` writes it, with a ``[stateplane]`` table and
    each peer ({name: (bus address, its state plane or "")})."""
    tables = [f'[curve]\nsecret_key_file = "{h.key(name)[0]}"\n',
              f'[bus]\naddress = "{address}"\n{bus}\n', f"[stateplane]\n{stateplane}\n"]  # fmt: skip
    for peer, (addr, sp) in peers.items():
        tables.append(f'[[peer]]\nname = "{peer}"\nbus_address = "{addr}"\n'
                      f'public_key_file = "{h.key(peer)[1]}"\n'
                      + (f'stateplane = "{sp}"\n' if sp else ""))  # fmt: skip
    path = h.tmp / f"{name}.toml"
    write_config(path, h.runs / name, h.sip_port, h.dest_port,
                 extra="\n".join(tables), name=name)  # fmt: skip
    return path


def learnt(b: Proc, peer: str) -> list[list[str]]:
    """Each list of endpoints host B's state plane took from ``peer``, in order."""
    return [list(e["endpoints"]) for e in b.events("ingresses_learnt")  # type: ignore[call-overload]
            if e["peer"] == peer]  # fmt: skip


def counter(b: Proc, name: str) -> int:
    """The latest value of the state plane's counter ``name`` (its replication_stats)."""
    stats = [e for e in b.events("replication_stats") if name in e]
    return int(stats[-1][name]) if stats else 0  # type: ignore[call-overload]


@pytest.fixture
def rogue(hosts: Hosts) -> Iterator[tuple[zmq.Socket[bytes], int]]:  # noqa: F811
    """A state plane PUB on ``ROGUE`` that proves the rogue peer's listed key (a peer gone
    bad, or its key stolen): CURVE server with that key, admitting any client."""
    secret = curve.load_secret(str(hosts.key("rogue")[0]))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.curve_secretkey, pub.curve_publickey, pub.curve_server = secret.secret, secret.public, True
    port = free_run(ROGUE, 2)
    pub.bind(f"tcp://{ROGUE}:{port}")
    yield pub, port
    pub.close(linger=0)
    ctx.destroy(linger=0)


def start_ingress(conf_path: Path, proc: str) -> Proc:
    """One more ingress on the edge, as honcho's ``proc`` (its TCP port: its index's)."""
    env = {**env_for(conf_path), "HONCHO_PROCESS_NAME": proc}
    return Proc.start([os.path.join(VENV_BIN, "sipline"), "ingress"], env, REPO)


def test_worker_host_learns_the_edge_through_its_state_plane(
    hosts: Hosts, run: Run, rogue: tuple[zmq.Socket[bytes], int], tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    """B is configured with the edge only as a [[peer]]: its workers join the edge's ingress
    and carry the calls, join a second ingress started on the edge and let it go when it
    stops; what the rogue peer announces (the edge's address, an address of no peer, too
    many endpoints) is refused, counted and logged, and opens no pipe."""
    sp_port = free_run(EDGE, 2)
    edge_sp = f"tcp://{EDGE}:{sp_port}"
    pub, rogue_port = rogue
    rogue_sp = f"tcp://{ROGUE}:{rogue_port}"
    edge_conf = conf(hosts, "edge", EDGE, f"ingress_port = {hosts.ingress_port}",
                     {"b": (HOST_B, "")}, f'bind = "{EDGE}:{sp_port}"')  # fmt: skip
    edge = run(edge_conf, ["start", "ingress", "stateplane"])
    port = hosts.ingress_port
    wait_for(lambda: bool(edge.events("ingress_listening")), "the edge's ingress to listen", 20)
    b = run(conf(hosts, "b", HOST_B, "discover = true",
                 {"edge": (EDGE, edge_sp), "rogue": (ROGUE, rogue_sp)},
                 f'peers = ["{edge_sp}", "{rogue_sp}"]'),
            ["start", "-c", "worker=2", "worker", "stateplane"])  # fmt: skip
    wait_for(lambda: len(joined(edge, "b.worker.")) == 2, "host B's two workers to join", 30)
    assert learnt(b, "edge")[0] == [f"tcp://{EDGE}:{port}"], b.text()[-3000:]
    res = sipp_uac(hosts.sip_port, "u1", 100, 50, tmp_path)
    assert (res.successful, res.failed) == (100, 0), res.output

    # an ingress added on the edge is announced, learnt, and joined by both workers
    second = start_ingress(edge_conf, "ingress.2")
    try:
        wait_for(lambda: [f"tcp://{EDGE}:{port}", f"tcp://{EDGE}:{port + 1}"] in learnt(b, "edge"),
                 "B to learn the edge's second ingress", 30)  # fmt: skip
        wait_for(lambda: len([e for e in b.events("ingress_found")
                              if e.get("endpoint") == f"tcp://{EDGE}:{port + 1}"]) == 2,
                 "both workers to find the second ingress", 30)  # fmt: skip
    finally:
        rc = second.stop(signal.SIGTERM)
    assert rc == 0, second.text()[-3000:]
    # ... and when it stops, it leaves what B learnt and each worker drops its pipe
    wait_for(lambda: learnt(b, "edge")[-1] == [f"tcp://{EDGE}:{port}"], "B to forget it", 30)
    wait_for(lambda: len(b.events("ingress_undiscovered")) == 2, "both workers to let it go", 30)

    # the rogue proves its listed key but may speak only for its own address, and briefly
    forged = [up.Ingresses("rogue", [f"tcp://{EDGE}:{port + 2}", "tcp://127.0.0.9:7600"]),
              up.Ingresses("rogue", [f"tcp://{ROGUE}:{n}" for n in range(1000, 1065)]),
              up.Ingresses("edge", [f"tcp://{EDGE}:{port + 3}"])]  # another's name: wrong_node
    deadline = time.monotonic() + 30
    while counter(b, "announced_ingress_refused") < 4 and time.monotonic() < deadline:
        for msg in forged:
            pub.send_multipart(up.pack(msg))
        time.sleep(0.1)  # a publishing pace, not a synchronisation: we poll B's counter
    assert counter(b, "announced_ingress_refused") >= 4, b.text()[-3000:]
    refused = b.events("announced_ingress_refused")
    assert refused and refused[0]["peer"] == "rogue", refused
    assert refused[0]["reason"] in ("not at the announcer's bus_address 127.0.0.5",
                                    "more than 64"), refused  # fmt: skip
    assert not learnt(b, "rogue"), learnt(b, "rogue")
    wrong = b.events("replica_wrong_node")  # the rogue speaking in the edge's name
    assert wrong and wrong[0]["expected"] == "rogue" and wrong[0]["claimed"] == "edge", wrong
    assert learnt(b, "edge")[-1] == [f"tcp://{EDGE}:{port}"]
    found: Any = {e.get("endpoint") for e in b.events("ingress_discovered")}
    assert found == {f"tcp://{EDGE}:{port}", f"tcp://{EDGE}:{port + 1}"}, found
    res = sipp_uac(hosts.sip_port, "u1", 50, 50, tmp_path)
    assert (res.successful, res.failed) == (50, 0), res.output
    stopped(b)
    stopped(edge)
