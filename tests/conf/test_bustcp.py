"""The hop between hosts (conf/bustcp.py): what the config loader refuses, naming the key
and what it expected, and the checks a heartbeat's endpoint and ident must pass before an
ingress connects anywhere (docs/architecture.md "Stages on several hosts")."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zmq

from conf import bustcp, curve
from conf.load import ConfigError, from_dict


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("edge", "work", "other"):
        secret, public, _ = curve.keygen(str(tmp_path / name))
        out[name], out[name + "_pub"] = secret, public
    return out


def worker_host(keys: dict[str, Path], bus: dict[str, Any] | None = None,
                peers: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A worker host ``work`` at 127.0.0.3 serving the ingress of ``edge`` at 127.0.0.2."""
    data: dict[str, Any] = {
        "node": {"name": "work", "run_dir": "/tmp/sipline-work"},
        "curve": {"secret_key_file": str(keys["work"])},
        "bus": {"address": "127.0.0.3", "ingresses": ["tcp://127.0.0.2:7600"]} if bus is None
        else bus,
        "peer": [{"name": "edge", "bus_address": "127.0.0.2",
                  "public_key_file": str(keys["edge_pub"])}] if peers is None else peers,
    }  # fmt: skip
    data.update(extra)
    return data


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    return info.value


def test_a_worker_host_and_an_edge_load(keys: dict[str, Path]) -> None:
    """The two sides of one hop load; ipc stays the default (no address)."""
    s = from_dict(worker_host(keys))
    assert s.bus.address == "127.0.0.3" and s.bus.ingresses == ["tcp://127.0.0.2:7600"]
    edge = from_dict({"node": {"name": "edge", "run_dir": "/tmp/sipline-edge"},
                      "curve": {"secret_key_file": str(keys["edge"])},
                      "bus": {"address": "127.0.0.2", "ingress_port": 7600},
                      "peer": [{"name": "work", "bus_address": "127.0.0.3",
                                "public_key_file": str(keys["work_pub"])}]})  # fmt: skip
    assert edge.bus.ingress_port == 7600 and edge.peer[0].bus_address == "127.0.0.3"
    plain = from_dict({})
    assert plain.bus.address == "" and plain.bus.ingresses == []
    probing = from_dict({**worker_host(keys), "destination_set": [
        {"name": "uas", "destinations": ["sip:127.0.0.1:5090"], "probe_interval_s": 5}]})
    assert probing.destination_set[0].probe_interval_s == 5  # it hears the edge's ring


BAD = [
    ({"bus": {"address": "localhost"}}, "bus.address", "an IP address", "localhost"),
    ({"bus": {"address": "0.0.0.0"}}, "bus.address", "not a wildcard", "0.0.0.0"),
    ({"bus": {"address": "::"}}, "bus.address", "not a wildcard", "::"),
    ({"bus": {"address": "127.0.0.3", "ingresses": ["127.0.0.2:7600"]}}, "bus.ingresses[0]",
     "tcp://ip:port", "127.0.0.2:7600"),
    ({"bus": {"address": "127.0.0.3", "ingresses": ["tcp://edge.example:7600"]}},
     "bus.ingresses[0]", "tcp://ip:port", "tcp://edge.example:7600"),
    ({"bus": {"address": "127.0.0.3", "ingresses": ["tcp://127.0.0.2:70000"]}},
     "bus.ingresses[0]", "tcp://ip:port", "tcp://127.0.0.2:70000"),
    ({"bus": {"address": "127.0.0.3", "ingresses": ["tcp://127.0.0.9:7600"]}},
     "bus.ingresses[0]", "a [[peer]] bus_address (127.0.0.2)", "tcp://127.0.0.9:7600"),
    ({"bus": {"address": "127.0.0.3", "ingresses": ["tcp://127.0.0.2:7600",
                                                     "tcp://127.0.0.2:7600"]}},
     "bus.ingresses[1]", "each ingress once", "tcp://127.0.0.2:7600 again (bus.ingresses[0])"),
    ({"bus": {"ingresses": ["tcp://127.0.0.2:7600"]}}, "bus.ingresses",
     "[] unless bus.address is set", ["tcp://127.0.0.2:7600"]),
    ({"bus": {"ingress_port": 7600}}, "bus.ingress_port", "0 unless bus.address", "7600"),
    ({"peers": [{"name": "edge", "bus_address": "127.0.0.3", "public_key": "K"}]},
     "peer[0].bus_address", "another host's address", "127.0.0.3"),
    ({"peers": [{"name": "edge", "bus_address": "127.0.0.2"}]}, "peer[0].bus_address",
     "unless the peer has public_key", "127.0.0.2"),
    ({"peers": [{"name": "edge", "bus_address": "127.0.0.2", "public_key": "K"},
                {"name": "other", "bus_address": "127.0.0.2", "public_key": "K"}]},
     "peer[1].bus_address", "each host once", "127.0.0.2 again (peer[0].bus_address)"),
    ({"peers": [{"name": "edge", "bus_address": "*", "public_key": "K"}]},
     "peer[0].bus_address", "an IP address", "*"),
    ({"node": {"name": "n" * 41, "run_dir": "/tmp/sipline-work"}}, "node.name",
     "at most 40 characters", "n" * 41),
    ({"node": {"name": "n" * 20, "run_dir": "/" + "r" * 60}}, "node.name",
     "at most 14 characters with [bus] address and this run_dir", "n" * 20),
    ({"bus": {"address": "127.0.0.3", "ingresses": []},
      "destination_set": [{"name": "uas", "destinations": ["sip:127.0.0.1:5090"],
                           "probe_interval_s": 5}]},
     "destination_set[0].probe_interval_s", "0 with [bus] address and no [bus] ingresses", "5"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "key", "expected", "found"), BAD,
                         ids=["name", "wildcard", "wildcard-v6", "no-scheme", "host-name", "port",
                              "not-a-peer", "twice", "no-address", "port-no-address",
                              "own-address", "keyless-peer", "host-twice", "peer-wildcard",
                              "long-node-name", "long-ipc-path", "edge-probing"])  # fmt: skip
def test_a_bad_value_is_refused_naming_file_key_and_expectation(
    change: dict[str, Any], key: str, expected: str, found: object, keys: dict[str, Path],
) -> None:  # fmt: skip
    """Each bad endpoint, address or key stops the load; the message names the file, the key,
    what was expected and what was found."""
    change = dict(change)
    peers = change.pop("peers", None)
    if peers is not None:
        inline = curve.load_public(str(keys["edge_pub"])).decode()
        peers = [{**p, "public_key": inline} if p.get("public_key") == "K" else p for p in peers]
    data = worker_host(keys, peers=peers, **change) if "bus" not in change else \
        worker_host(keys, bus=change.pop("bus"), peers=peers, **change)  # fmt: skip
    e = error(data)
    assert e.key == key, e
    assert expected in e.expected, e
    assert (found if isinstance(found, str) else found[0]) in str(e), e  # type: ignore[index]
    assert str(e).startswith(f"{e.file}: {key}: expected "), e


def test_the_hop_needs_our_own_key(keys: dict[str, Path]) -> None:
    """No plain TCP bus: an address without [curve] is refused, and a peer's key without our
    own is refused by the curve checks."""
    data = worker_host(keys, peers=[])
    del data["curve"]
    data["bus"] = {"address": "127.0.0.3"}
    e = error(data)
    assert e.key == "bus.address" and "CURVE only" in e.expected


# -- what a heartbeat may make an ingress connect to (rules 3-4) --------------------------------


@pytest.mark.parametrize(("ep", "parsed"), [
    ("tcp://127.0.0.3:4000", ("127.0.0.3", 4000)),
    ("tcp://[::1]:4000", ("::1", 4000)),
    ("tcp://[0:0::1]:4000", ("::1", 4000)),
    ("tcp://::1:4000", None),
    ("tcp://[127.0.0.1]:4000", None),
    ("tcp://127.0.0.3:0", None),
    ("tcp://127.0.0.3:99999", None),
    ("tcp://127.0.0.3:*", None),
    ("ipc:///tmp/x.ipc", None),
    ("tcp://127.0.0.3:4000/", None),
    ("tcp://" + "1" * 80 + ":1", None),
    (["tcp://127.0.0.3:4000"], None),
    (None, None),
])  # fmt: skip
def test_endpoints_are_read_strictly(ep: object, parsed: tuple[str, int] | None) -> None:
    assert bustcp.parse_endpoint(ep) == parsed


def test_an_ingress_connects_only_to_peer_addresses_with_their_key(keys: dict[str, Path]) -> None:
    """A worker's endpoint counts only at a peer's bus_address, with an ident that carries
    that peer's name; the server key is the configured one, never one a frame could name."""
    s = from_dict({"node": {"name": "edge", "run_dir": "/tmp/sipline-edge"},
                   "curve": {"secret_key_file": str(keys["edge"])},
                   "bus": {"address": "127.0.0.2", "ingress_port": 7600},
                   "peer": [{"name": "work", "bus_address": "127.0.0.3",
                             "public_key_file": str(keys["work_pub"])}]})  # fmt: skip
    work_key = curve.load_public(str(keys["work_pub"]))

    async def judge() -> list[bytes | None]:
        ctx: zmq.Context[Any] = zmq.Context()
        hop = bustcp.TcpHop(ctx, asyncio.get_running_loop(), s, Counter())
        try:
            return [hop.worker_key("work.worker.1-42", "tcp://127.0.0.3:4000"),
                    hop.worker_key("other.worker.1-42", "tcp://127.0.0.3:4000"),
                    hop.worker_key("work.worker.1-42", "tcp://127.0.0.4:4000"),
                    hop.worker_key("work.worker.1-42", "tcp://127.0.0.2:4000"),
                    hop.worker_key("work/../x-1", "tcp://127.0.0.3:4000"),
                    hop.worker_key("work.worker.1-42", "ipc:///tmp/sipline-edge/worker-x.ipc")]
        finally:
            hop.close()
            ctx.destroy(linger=0)

    assert asyncio.run(judge()) == [work_key, None, None, None, None, None]


@pytest.mark.parametrize(("proc", "n"), [("ingress.1", 1), ("ingress.3", 3), ("ingress", 1),
                                          ("ingress.0", 1), ("ingress.x", 1)])  # fmt: skip
def test_ingress_n_listens_at_its_offset(proc: str, n: int) -> None:
    assert bustcp.ingress_index(proc) == n
