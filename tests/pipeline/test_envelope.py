"""The ZeroMQ envelope: what one process packs the other unpacks; anything else is refused."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf import envelope
from conf.envelope import EnvelopeError

IN_META = ["udp", "127.0.0.1", 5060, 0, "127.0.0.1", 5060, 1.5]
OUT_META = ["tcp", "127.0.0.1", 5080, 7, "127.0.0.1", 5060]


class TestRoundTrip:
    def test_in_batch(self) -> None:
        """An ingress batch keeps its metas and raw payloads, in order."""
        frames = envelope.pack(envelope.KIND_IN, ["ingress.1-1", [IN_META, IN_META]], [b"a", b"b"])
        env = envelope.unpack(frames)
        assert env.kind == envelope.KIND_IN
        assert env.header == ["ingress.1-1", [IN_META, IN_META]]
        assert env.payloads == [b"a", b"b"]

    def test_out_batch(self) -> None:
        """A worker batch round-trips."""
        env = envelope.unpack(envelope.pack(envelope.KIND_OUT, [[OUT_META]], [b"SIP/2.0 200 OK"]))
        assert env.header == [[OUT_META]]

    def test_heartbeat(self) -> None:
        """A heartbeat carries worker id, endpoint and state."""
        ring = ["i", "tcp://127.0.0.2:7600", "up", ["b.w-1", "a.w-2"], ["tcp://127.0.0.3:9", ""]]
        assert envelope.unpack(envelope.pack(envelope.KIND_HB, ring)).header == ring
        adopt = ["b", [["call", "tag"]], True, "stateplane@b"]
        assert envelope.unpack(envelope.pack(envelope.KIND_ADOPT, adopt)).header == adopt
        env = envelope.unpack(envelope.pack(envelope.KIND_HB, ["w-1", "ipc:///x", "up"]))
        assert env.header == ["w-1", "ipc:///x", "up"]

    def test_adopt_handed_back(self) -> None:
        """An ADOPT without a source, with one, and with a worker to keep the records for
        (stateplane/handover.py rule 6)."""
        for header in (["node-a", [["c1"]]], ["node-a", [["c1"]], True],
                       ["node-a", [["c1"]], True, "stateplane@node-a", "c.worker-1"]):  # fmt: skip
            assert envelope.unpack(envelope.pack(envelope.KIND_ADOPT, header)).header == header

    def test_release(self) -> None:
        header = ["node-a", ["127.0.0.11"], ["call-1\x00tag"]]
        env = envelope.unpack(envelope.pack(envelope.KIND_RELEASE, header))
        assert env.kind == envelope.KIND_RELEASE and env.header == header

    def test_payload_is_its_own_frame(self) -> None:
        """The raw SIP bytes travel untouched in their own frame."""
        raw = b"INVITE sip:x SIP/2.0\r\n\r\n"
        frames = envelope.pack(envelope.KIND_IN, ["i", [IN_META]], [raw])
        assert frames[2] is raw


class TestRefusal:
    @pytest.mark.parametrize(
        "frames",
        [
            [],
            [envelope.KIND_IN],
            [b"\x02IN", msgpack.packb(["i", []])],
            [b"nonsense", msgpack.packb(["i", []])],
            [envelope.KIND_IN, b"\xc1"],
            [envelope.KIND_IN, msgpack.packb(["i", [IN_META]])],  # meta without payload
            [envelope.KIND_IN, msgpack.packb(["i", [[1, 2]]]), b"x"],  # short meta
            [envelope.KIND_OUT, msgpack.packb({"a": 1})],
            [envelope.KIND_HB, msgpack.packb(["w", "e"])],
            [envelope.KIND_HB, msgpack.packb({1: 2})],  # int map key refused
            [envelope.KIND_ADOPT, msgpack.packb(["node-a", [], "yes"])],  # handed_back is a bool
            [envelope.KIND_ADOPT, msgpack.packb(["node-a", [], True, 1])],  # source is a str
            [envelope.KIND_ADOPT, msgpack.packb(["node-a", [], True, "s", 1])],  # owner a str
            [envelope.KIND_ADOPT, msgpack.packb(["node-a", [], True, "s", "o", "x"])],  # 6
            [envelope.KIND_HB, msgpack.packb(["i", "e", "up", ["w-1"], []])],  # an endpoint each
            [envelope.KIND_HB, msgpack.packb(["i", "e", "up", ["w-1"], [1]])],  # a str each
            [envelope.KIND_RELEASE, msgpack.packb(["node-a", [1], []])],  # an address is a str
            [envelope.KIND_RELEASE, msgpack.packb(["node-a", ["127.0.0.11"], []]), b"x"],
            [envelope.KIND_IN, b"\x00" * (envelope.MAX_HEADER_BYTES + 1)],
        ],
        ids=[
            "empty", "one-frame", "future-version", "unknown-kind", "bad-msgpack",
            "meta-without-payload", "short-meta", "map-header", "short-heartbeat", "int-key",
            "adopt-flag-not-bool", "adopt-source-not-str", "adopt-owner-not-str",
            "adopt-six-fields", "ring-endpoints-short",
            "ring-endpoint-not-str", "release-not-str", "release-with-payload", "huge-header",
        ],
    )  # fmt: skip
    def test_bad_envelopes(self, frames: list[bytes]) -> None:
        """Malformed envelopes raise EnvelopeError."""
        with pytest.raises(EnvelopeError):
            envelope.unpack(frames)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=64), max_size=5))
    def test_any_frames(self, frames: list[bytes]) -> None:
        """Arbitrary frames unpack or raise EnvelopeError, nothing else."""
        try:
            envelope.unpack(frames)
        except EnvelopeError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(sorted(envelope.KINDS)), st.binary(max_size=64), st.integers(0, 3))
    def test_any_header(self, kind: bytes, header: bytes, n: int) -> None:
        """A valid kind with an arbitrary header unpacks or raises EnvelopeError."""
        try:
            envelope.unpack([kind, header] + [b"x"] * n)
        except EnvelopeError:
            pass


#: one value out of place in an otherwise valid meta, and what it would have broken
BAD_IN = {
    "received_at-none": (6, None),  # the worker subtracted it from a float
    "received_at-nan": (6, float("nan")),
    "received_at-int": (6, 1),
    "src_ip-name": (1, "example.com"),
    "src_port-str": (2, "5060"),
    "src_port-huge": (2, 1 << 16),
    "conn-negative": (3, -1),
    "conn-bool": (3, True),
    "transport-list": (0, ["udp"]),
}
BAD_OUT = {
    "dst_ip-list": (1, ["127.0.0.1"]),  # the ingress hashed it: TypeError
    "dst_ip-name": (1, "x" * 64),  # the ingress resolved it in its loop (UnicodeError)
    "dst_ip-none": (1, None),
    "dst_port-float": (2, 5060.0),
    "local_ip-int": (4, 1),
    "local_port-negative": (5, -1),
    "conn-str": (3, "7"),
}


class TestMetaValues:
    """IN and OUT metas of the right length but a value of the wrong type or range are
    refused (tests/e2e/test_hostile_frames.py found each breaking a reader)."""

    @pytest.mark.parametrize("case", sorted(BAD_IN))
    def test_bad_in_meta(self, case: str) -> None:
        i, value = BAD_IN[case]
        meta = list(IN_META)
        meta[i] = value
        with pytest.raises(EnvelopeError, match="malformed IN header"):
            envelope.unpack(envelope.pack(envelope.KIND_IN, ["i", [IN_META, meta]], [b"a", b"b"]))

    @pytest.mark.parametrize("case", sorted(BAD_OUT))
    def test_bad_out_meta(self, case: str) -> None:
        i, value = BAD_OUT[case]
        meta = list(OUT_META)
        meta[i] = value
        with pytest.raises(EnvelopeError, match="malformed OUT header"):
            envelope.unpack(envelope.pack(envelope.KIND_OUT, [[meta]], [b"a"]))

    def test_ipv6_and_tls_pass(self) -> None:
        """IPv6 literals (with a scope) and any transport name are metas as the hop makes them."""
        out = ["tls", "::1", 5061, 0, "fe80::1%lo", 5061]
        inb = ["tcp", "2001:db8::1", 1, 3, "::1", 5060, 2.0]
        assert envelope.unpack(envelope.pack(envelope.KIND_OUT, [[out]], [b"a"])).header == [[out]]
        env = envelope.unpack(envelope.pack(envelope.KIND_IN, ["i", [inb]], [b"a"]))
        assert env.header == ["i", [inb]]


def test_handed_and_fwd_envelopes() -> None:
    """HANDED names a source and its receiver, nothing else; FWD is shaped as an IN."""
    env = envelope.unpack(envelope.pack(envelope.KIND_HANDED, ["stateplane", "worker.1-7"]))
    assert env.header == ["stateplane", "worker.1-7"]
    fwd = envelope.unpack(envelope.pack(envelope.KIND_FWD, ["ingress.1-1", [IN_META]], [b"x"]))
    assert fwd.kind == envelope.KIND_FWD and fwd.payloads == [b"x"]
    for bad in (["stateplane"], ["stateplane", 7], ["a", "b", "c"]):
        with pytest.raises(envelope.EnvelopeError):
            envelope.unpack(envelope.pack(envelope.KIND_HANDED, bad))
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack(envelope.pack(envelope.KIND_HANDED, ["a", "b"], [b"x"]))
