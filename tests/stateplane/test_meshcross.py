"""stateplane/meshcross.py and stateplane/clusterctl.py: what a peer node's relay may hand to
this node's processes, and what a peer may ask (sans-IO)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from conf.settings import Pike, RateLimit, Settings, StatePlane
from stateplane import meshcross
from stateplane.clusterctl import MAX_LIST, parse_request

ALL = ("pike", "profiles", "ratelimit")


def test_max_frames_are_the_owners() -> None:
    """The relay's size caps are those each mesh's owner publishes at most."""
    from ingress import pikeshare
    from workers.dialogs import limits
    from workers.ratelimit import share

    assert meshcross.MAX_FRAME == {"pike": pikeshare.MAX_FRAME, "profiles": limits.MAX_FRAME,
                                   "ratelimit": share.MAX_FRAME}  # fmt: skip


def pack(msg: Any) -> bytes:
    return bytes(msgpack.packb(msg))


@pytest.mark.parametrize(("role", "frame", "relayed", "why"), [
    (b"pike", pack(["192.0.2.9", 30.0, 120]), ALL, ""),
    (b"pike", b"\xc1 not msgpack", ALL, ""),  # the ingress judges a block's shape itself
    (b"pike", b"x" * 513, ALL, "size"),
    (b"pike", pack(["192.0.2.9", 30.0, 1]), ("profiles",), "role"),
    (b"other", pack([]), ALL, "role"),
    (b"profiles", pack(["worker.1-9", "node-b", True, [["trunk", "", 3]]]), ALL, ""),
    (b"profiles", pack(["worker.1-9", "node-a", True, [["trunk", "", 3]]]), ALL, "wrong_node"),
    (b"profiles", pack(["worker.1-9", 7, True, []]), ALL, "shape"),
    (b"profiles", pack({"a": 1}), ALL, "shape"),
    (b"profiles", b"\xc1", ALL, "undecodable"),
    (b"ratelimit", pack(["node-b/worker.1-9", [["in", 3, 10, 2]]]), ALL, ""),
    (b"ratelimit", pack(["node-a/worker.1-9", [["in", 3, 10, 2]]]), ALL, "wrong_node"),
    (b"ratelimit", pack(["node-b", []]), ALL, "wrong_node"),
    (b"ratelimit", pack(["node-bb/w", []]), ALL, "wrong_node"),
])  # fmt: skip
def test_a_frame_must_speak_for_the_peer_it_came_from(role: bytes, frame: bytes,
                                                      relayed: tuple[str, ...], why: str) -> None:  # fmt: skip
    """A frame is judged against the peer whose key the connection proved (``node-b``)."""
    assert meshcross.verdict(role, frame, "node-b", relayed) == why


def test_roles_and_endpoints_come_from_our_configuration() -> None:
    s = Settings(pike=Pike(enabled=True, cluster=True), ratelimit=[RateLimit(name="in", shared=True)],
                 stateplane=StatePlane(peers=["/tmp/peer-run", "tcp://192.0.2.2:7400"]))
    assert meshcross.roles(s) == ("pike", "ratelimit")
    assert meshcross.tcp_peers(s) == ["tcp://192.0.2.2:7400"]
    assert meshcross.offset_endpoint("tcp://[2001:db8::2]:7400", 3) == "tcp://[2001:db8::2]:7403"


@pytest.mark.parametrize(("request_", "parsed"), [
    ({"cmd": "stats"}, ("stats", {})),
    ({"cmd": "dialogs", "args": {"list": 5}}, ("dialogs", {"list": 5})),
    ({"cmd": "dialogs", "args": {"list": 10**9}}, ("dialogs", {"list": MAX_LIST})),
    ({"cmd": "failback"}, None),  # a peer may look, not act
    ({"cmd": "sync"}, None),
    ({"cmd": "dialogs", "args": {"list": -1}}, None),
    ({"cmd": "dialogs", "args": {"list": "all"}}, None),
    ({"cmd": "stats", "args": [1]}, None),
    (["stats"], None),
])  # fmt: skip
def test_a_peer_may_only_look(request_: Any, parsed: Any) -> None:
    assert parse_request(pack(request_)) == parsed


def test_undecodable_requests_are_refused() -> None:
    assert parse_request(b"\xc1") is None
    assert parse_request(b"") is None
