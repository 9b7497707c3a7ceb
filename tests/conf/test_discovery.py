"""Ingresses found through the state plane (conf/discovery.py): what an edge announces, and
what a worker host takes of an announcement: only endpoints at the announcing peer's own
bus_address, only from a configured peer that proved its key, never more than the bound
(docs/architecture.md "Finding the edge through the state plane")."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from structlog.testing import capture_logs

from conf import discovery, envelope
from conf.load import from_dict
from conf.settings import Settings
from stateplane import updates as up
from stateplane.ingresses import IngressFinder
from tests.conf.test_bustcp import error, keys  # noqa: F401 (a fixture)

EDGE_SP = "tcp://127.0.0.2:7400"
ADDRESSES = {"edge": "127.0.0.2", "edge2": "127.0.0.5"}


def worker_host(keys: dict[str, Path], bus: dict[str, Any] | None = None,  # noqa: F811
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Host ``work`` (127.0.0.3) that learns its ingresses from the state plane of ``edge``."""
    data: dict[str, Any] = {
        "node": {"name": "work", "run_dir": "/tmp/sipline-work"},
        "curve": {"secret_key_file": str(keys["work"])},
        "bus": {"address": "127.0.0.3", "discover": True} if bus is None else bus,
        "stateplane": {"peers": [EDGE_SP]},
        "peer": [{"name": "edge", "bus_address": "127.0.0.2", "stateplane": EDGE_SP,
                  "public_key_file": str(keys["edge_pub"])}],
    }  # fmt: skip
    data.update(extra)
    return data


def edge_host(keys: dict[str, Path], port: int = 7600) -> Settings:  # noqa: F811
    return from_dict({"node": {"name": "edge", "run_dir": "/tmp/sipline-edge"},
                      "curve": {"secret_key_file": str(keys["edge"])},
                      "bus": {"address": "127.0.0.2", "ingress_port": port},
                      "stateplane": {"bind": "127.0.0.2:7400"},
                      "peer": [{"name": "work", "bus_address": "127.0.0.3",
                                "public_key_file": str(keys["work_pub"])}]})  # fmt: skip


class TestLoad:
    def test_a_discovering_worker_host_loads_and_may_probe(self, keys: dict[str, Path]) -> None:  # noqa: F811
        """Only its [[peer]] names the edge; it hears the edge's ring, so probing is allowed."""
        s = from_dict({**worker_host(keys), "destination_set": [
            {"name": "uas", "destinations": ["sip:127.0.0.1:5090"], "probe_interval_s": 5}]})
        assert discovery.learns(s) and not discovery.announces(s)
        assert discovery.peer_addresses(s) == {"edge": "127.0.0.2"}

    def test_discover_needs_an_address(self, keys: dict[str, Path]) -> None:  # noqa: F811
        e = error(worker_host(keys, {"discover": True}))
        assert e.key == "bus.discover" and "bus.address" in e.expected

    def test_discover_needs_a_peer_with_bus_address_and_a_tcp_state_plane(
            self, keys: dict[str, Path]) -> None:  # noqa: F811  # fmt: skip
        data = worker_host(keys)
        data["peer"][0]["stateplane"] = ""
        data["stateplane"] = {}
        e = error(data)
        assert e.key == "bus.discover" and "tcp:// stateplane" in e.expected

    def test_explicit_ingresses_take_precedence(self, keys: dict[str, Path]) -> None:  # noqa: F811
        s = from_dict(worker_host(keys, {"address": "127.0.0.3", "discover": True,
                                         "ingresses": ["tcp://127.0.0.2:7600"]}))  # fmt: skip
        assert not discovery.learns(s)

    def test_an_edge_without_discover_may_not_probe(self, keys: dict[str, Path]) -> None:  # noqa: F811
        e = error(worker_host(keys, {"address": "127.0.0.3"}, destination_set=[
            {"name": "uas", "destinations": ["sip:127.0.0.1:5090"], "probe_interval_s": 5}]))
        assert e.key == "destination_set[0].probe_interval_s"


class TestAnnounce:
    def test_the_edge_announces_each_live_ingress_at_its_offset(self, keys: dict[str, Path]) -> None:  # noqa: F811
        """Ports as the ingresses compute them (ingress.N at ingress_port + N - 1); idents of
        other roles or nodes name nothing."""
        s = edge_host(keys)
        idents = ["edge.ingress.1-10", "edge.ingress.3-11", "edge.ingress-12", "edge.ingress.1-13",
                  "other.ingress.2-14", "edge.worker.1-15", "ingress.2-16"]  # fmt: skip
        assert discovery.announced(s, idents) == ["tcp://127.0.0.2:7600", "tcp://127.0.0.2:7602"]
        assert discovery.announces(s)

    def test_an_announcement_is_bounded(self, keys: dict[str, Path]) -> None:  # noqa: F811
        s = edge_host(keys, port=1000)
        many = [f"edge.ingress.{n}-{n}" for n in range(1, 200)]
        assert len(discovery.announced(s, many)) == discovery.MAX_ANNOUNCED

    def test_a_port_past_65535_is_not_announced(self, keys: dict[str, Path]) -> None:  # noqa: F811
        s = edge_host(keys, port=65535)
        assert discovery.announced(s, ["edge.ingress.1-1", "edge.ingress.2-2"]) == [
            "tcp://127.0.0.2:65535"]


class TestAccept:
    def test_an_endpoint_at_the_announcers_address_is_taken(self) -> None:
        v = discovery.accept("edge", ["tcp://127.0.0.2:7600", "tcp://127.0.0.2:7601",
                                      "tcp://127.0.0.2:7600"], ADDRESSES)  # fmt: skip
        assert v.accepted == ["tcp://127.0.0.2:7600", "tcp://127.0.0.2:7601"] and not v.refused

    @pytest.mark.parametrize(("peer", "ep", "reason"), [
        ("edge", "tcp://127.0.0.9:7600", "not at the announcer's bus_address 127.0.0.2"),
        # another configured peer's address: a peer speaks only for itself
        ("edge", "tcp://127.0.0.5:7600", "not at the announcer's bus_address 127.0.0.2"),
        ("edge2", "tcp://127.0.0.2:7600", "not at the announcer's bus_address 127.0.0.5"),
        ("stranger", "tcp://127.0.0.2:7600", "announcer is not a [[peer]] with bus_address"),
        ("edge", "tcp://localhost:7600", "not tcp://ip:port"),
        ("edge", "ipc:///tmp/sipline-edge/ingress-x.ipc", "not tcp://ip:port"),
        ("edge", "tcp://127.0.0.2:0", "not tcp://ip:port"),
        ("edge", 7600, "not tcp://ip:port"),
    ], ids=["forged-host", "other-peers-host", "wrong-peer", "unknown-peer", "name", "ipc",
            "port-0", "not-a-string"])  # fmt: skip
    def test_a_forged_endpoint_is_refused(self, peer: str, ep: object, reason: str) -> None:
        own = f"tcp://{ADDRESSES[peer]}:7600" if peer in ADDRESSES else "tcp://127.0.0.2:1"
        v = discovery.accept(peer, [own, ep], ADDRESSES)
        assert v.refused[-1] == (str(ep), reason)
        assert v.accepted == ([own] if peer in ADDRESSES else [])

    def test_an_announcement_over_the_bound_is_refused_whole(self) -> None:
        eps = [f"tcp://127.0.0.2:{7000 + n}" for n in range(discovery.MAX_ANNOUNCED + 1)]
        v = discovery.accept("edge", eps, ADDRESSES)
        assert v.accepted is None and v.refused == [("65 endpoints", "more than 64")]
        assert discovery.accept("edge", eps[:-1], ADDRESSES).accepted == eps[:-1]


class TestWorkerCheck:
    def test_a_worker_checks_every_entry_again(self) -> None:
        """What the node's state plane hands over is checked as the announcement was: an
        endpoint of one peer at another's address, or a malformed entry, is refused; a
        peer's list over the bound is left out (its pipes stand)."""
        over = [f"tcp://127.0.0.5:{n}" for n in range(1, discovery.MAX_ANNOUNCED + 2)]
        header: list[Any] = [["edge", ["tcp://127.0.0.2:7600", "tcp://127.0.0.5:7600"]],
                             ["edge2", over], ["../x", ["tcp://127.0.0.2:1"]],
                             ["edge", ["tcp://127.0.0.2:7601"]], ["edge"],
                             "tcp://127.0.0.2:7600"]  # fmt: skip
        taken, refused = discovery.entries(header, ADDRESSES)
        assert taken == {"edge": ["tcp://127.0.0.2:7600"]}
        assert [r[1] for r in refused] == [
            "not at the announcer's bus_address 127.0.0.2", "more than 64",
            *["not [peer name, [endpoint, ...]], each peer once"] * 4]

    def test_too_many_endpoints_change_nothing(self) -> None:
        header = [[f"e{n}", [f"tcp://127.0.0.2:{p}" for p in range(1, 61)]] for n in range(5)]
        assert discovery.entries(header, ADDRESSES)[0] is None
        assert discovery.entries({"edge": 1}, ADDRESSES)[0] is None
        assert discovery.entries([["edge", []]], ADDRESSES)[0] == {"edge": []}

    def test_the_envelope_carries_only_peers_and_lists_of_strings(self) -> None:
        good = envelope.pack(envelope.KIND_INGRESSES, [["edge", ["tcp://127.0.0.2:7600"]]])
        assert envelope.unpack(good).header == [["edge", ["tcp://127.0.0.2:7600"]]]
        for bad in ([["edge", "tcp://127.0.0.2:7600"]], [["edge", [1]]], [["edge"]], ["edge"],
                    {"edge": []}, [["e", []]] * (envelope.MAX_RING + 1)):  # fmt: skip
            with pytest.raises(envelope.EnvelopeError):
                envelope.unpack(envelope.pack(envelope.KIND_INGRESSES, bad))


class TestStatePlane:
    def test_the_wire_carries_an_announcement(self) -> None:
        msg = up.Ingresses("edge", ["tcp://127.0.0.2:7600"])
        assert up.unpack(up.pack(msg)) == msg
        for body in (["edge"], ["edge", "tcp://x"], ["edge", [1]], ["", []]):
            frames = [b"INGRESSES", msgpack.packb([up.VERSION, *body])]
            with pytest.raises(up.UpdateError):
                up.unpack(frames)

    @pytest.fixture
    def finder(self, keys: dict[str, Path]) -> Any:  # noqa: F811
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        counters: Counter[str] = Counter()
        f = IngressFinder(ctx, from_dict(worker_host(keys)), lambda _: None, counters)
        yield f, counters
        f.close()
        ctx.destroy(linger=0)

    def test_only_an_authenticated_configured_peer_is_heard(self, finder: Any) -> None:
        """A peer met without its key (or without a [[peer]] name) announces nothing."""
        f, counters = finder
        msg = up.Ingresses("edge", ["tcp://127.0.0.2:7600"])
        with capture_logs() as logs:
            f.receive("edge", False, msg, 0.0)
            f.receive(None, True, msg, 20.0)
        assert f.heard == {} and counters["ingresses_unauthenticated"] == 2
        assert [e["event"] for e in logs] == ["announced_ingress_refused"] * 2
        with capture_logs() as logs:
            f.receive("edge", True, msg, 40.0)
        assert f.heard == {"edge": ["tcp://127.0.0.2:7600"]}
        assert logs[0]["event"] == "ingresses_learnt"

    def test_a_forged_endpoint_is_refused_and_logged_and_changes_follow(self, finder: Any) -> None:
        f, counters = finder
        with capture_logs() as logs:
            f.receive("edge", True, up.Ingresses("edge", ["tcp://127.0.0.2:7600",
                                                          "tcp://127.0.0.9:7600"]), 0.0)  # fmt: skip
        assert f.heard == {"edge": ["tcp://127.0.0.2:7600"]}
        assert counters["announced_ingress_refused"] == 1
        refused = [e for e in logs if e["event"] == "announced_ingress_refused"]
        assert refused[0]["endpoint"] == "tcp://127.0.0.9:7600" and refused[0]["peer"] == "edge"
        # an ingress added, then the first removed: each announcement replaces the last
        f.receive("edge", True, up.Ingresses("edge", ["tcp://127.0.0.2:7600",
                                                      "tcp://127.0.0.2:7601"]), 1.0)  # fmt: skip
        f.receive("edge", True, up.Ingresses("edge", ["tcp://127.0.0.2:7601"]), 2.0)
        assert f.heard == {"edge": ["tcp://127.0.0.2:7601"]}
        # too many: refused whole, the last list stands
        many = [f"tcp://127.0.0.2:{n}" for n in range(1, 100)]
        f.receive("edge", True, up.Ingresses("edge", many), 3.0)
        assert f.heard == {"edge": ["tcp://127.0.0.2:7601"]}

    def test_the_workers_get_every_peer_heard_and_only_those(self, finder: Any,
                                                            tmp_path: Path) -> None:  # fmt: skip
        """Each tick hands the live workers one envelope: empty before any peer is heard
        (a restarted state plane takes no pipe away), then the peer's accepted list."""
        f, _ = finder
        ep = f"ipc://{tmp_path}/worker-w.ipc"
        pull = f.ctx.socket(zmq.PULL)
        pull.linger = 0
        pull.bind(ep)

        def handed(expected: list[Any]) -> bool:
            """Tick until the worker reads ``expected`` (the first sends may go before the
            connect, and envelopes of earlier ticks may still be on their way)."""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                f.tick({"w.worker.1-1": ep})
                while pull.poll(50):
                    if envelope.unpack(pull.recv_multipart()).header == expected:
                        return True
            return False

        try:
            assert handed([])
            f.receive("edge", True, up.Ingresses("edge", ["tcp://127.0.0.2:7600"]), 0.0)
            assert handed([["edge", ["tcp://127.0.0.2:7600"]]])
        finally:
            pull.close(linger=0)
