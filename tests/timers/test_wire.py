"""The TOPS and TIMER envelopes and the op checks both ends share."""

from __future__ import annotations

import math

import pytest

from conf import envelope
from timers import wire


def test_tops_round_trip() -> None:
    """A TOPS message unpacks to what was packed."""
    header = ["worker.1-2", 1, False, [["k", 1.5, "dialog", b"\x00p", 7]], [["c", 9]]]
    env = envelope.unpack(envelope.pack(envelope.KIND_TOPS, header))
    assert env.kind == envelope.KIND_TOPS and env.header == header and env.payloads == []


def test_timer_round_trip() -> None:
    """A TIMER message carries one meta per payload frame."""
    metas = [["f", "k", "dialog", 1.5, "worker.1-2", 7], ["d", "j", "", 0.0, "worker.1-2", 8]]
    frames = envelope.pack(envelope.KIND_TIMER, ["timers.1-3", metas], [b"p", b""])
    env = envelope.unpack(frames)
    assert env.header == ["timers.1-3", metas] and env.payloads == [b"p", b""]


@pytest.mark.parametrize(
    ("kind", "header", "payloads"),
    [
        (envelope.KIND_TOPS, ["w", 1, False, []], []),
        (envelope.KIND_TOPS, [1, 1, False, [], []], []),
        (envelope.KIND_TOPS, ["w", 1, False, [], []], [b"x"]),
        (envelope.KIND_TIMER, ["t", [["f", "k", "d", 1.0, "w", 1]]], []),
        (envelope.KIND_TIMER, ["t", [["f", "k"]]], [b""]),
    ],
    ids=["tops-short", "tops-worker-not-str", "tops-with-frames", "timer-no-frame",
         "timer-narrow-meta"],
)
def test_malformed_headers_are_refused(
    kind: bytes, header: list[object], payloads: list[bytes]
) -> None:
    """A header of the wrong shape raises EnvelopeError (counted and dropped by receivers)."""
    with pytest.raises(envelope.EnvelopeError):
        envelope.unpack(envelope.pack(kind, header, payloads))


@pytest.mark.parametrize(
    "arm",
    [
        ["k", math.nan, "d", b"", 1],
        ["k", math.inf, "d", b"", 1],
        ["", 1.0, "d", b"", 1],
        ["k" * (wire.MAX_KEY_CHARS + 1), 1.0, "d", b"", 1],
        ["k", 1.0, "d" * (wire.MAX_KIND_CHARS + 1), b"", 1],
        ["k", 1.0, "d", b"x" * (wire.MAX_PAYLOAD_BYTES + 1), 1],
        ["k", 1.0, "d", "not bytes", 1],
        ["k", 1.0, "d", b"", 1.5],
        ["k", True, "d", b"", 1],
        ["k", 1.0, "d", b""],
    ],
    ids=["nan", "inf", "empty-key", "long-key", "long-kind", "big-payload", "str-payload",
         "float-gen", "bool-deadline", "short"],
)
def test_bad_arms_are_refused(arm: list[object]) -> None:
    """The service applies only arms of the right types and sizes."""
    assert not wire.valid_arm(arm)


def test_good_arm_and_cancel() -> None:
    """An int deadline is fine (TOML-like widening); a cancel is [key, gen]."""
    assert wire.valid_arm(["k", 5, "dialog", b"", 1])
    assert wire.valid_cancel(["k", 1]) and not wire.valid_cancel(["k", "1"])


def test_owner_key_is_the_text_before_the_first_nul() -> None:
    """A dialog's key (Call-ID NUL From-tag) is owned as its Call-ID; other keys whole."""
    assert wire.owner_key("a@b\0tag\0x") == b"a@b"
    assert wire.owner_key("reg:alice@example.com") == b"reg:alice@example.com"
