"""Nonces: signed, expiring, bound to issuer, realm and call; nonce-counts used once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.auth.nonce import (
    MAX_NONCE_CHARS,
    WINDOW,
    NonceCounts,
    NonceMint,
    NonceState,
)

SECRET = b"0123456789abcdef0123"
T0 = 1_800_000_000.0


def mint(issuer: str = "node/worker.1", secret: bytes = SECRET) -> NonceMint:
    return NonceMint(secret, issuer, lifetime_s=30)


def test_fresh_nonce_is_valid_with_its_issue_time() -> None:
    """A nonce checks as VALID with the millisecond it was issued at."""
    m = mint()
    n = m.issue("r", "call", T0)
    assert len(n) <= MAX_NONCE_CHARS
    assert m.check(n, "r", "call", T0 + 1) == (NonceState.VALID, int(T0 * 1000))


def test_nonces_differ_even_at_the_same_instant() -> None:
    """The random salt makes two challenges at one ms two nonces."""
    m = mint()
    assert m.issue("r", "c", T0) != m.issue("r", "c", T0)


def test_expired_and_future_nonces_are_stale() -> None:
    """Past lifetime, or beyond the clock slack ahead: STALE (rule 3)."""
    m = mint()
    n = m.issue("r", "c", T0)
    assert m.check(n, "r", "c", T0 + 30.0)[0] is NonceState.VALID
    assert m.check(n, "r", "c", T0 + 30.01)[0] is NonceState.STALE
    assert m.check(n, "r", "c", T0 - 10)[0] is NonceState.STALE


def test_nonce_is_bound_to_issuer_realm_call_and_secret() -> None:
    """Any other worker, realm, Call-ID or secret sees a FOREIGN nonce (rule 2)."""
    m = mint()
    n = m.issue("r", "c", T0)
    assert m.check(n, "r2", "c", T0)[0] is NonceState.FOREIGN
    assert m.check(n, "r", "c2", T0)[0] is NonceState.FOREIGN
    assert mint("node/worker.2").check(n, "r", "c", T0)[0] is NonceState.FOREIGN
    assert (
        mint(secret=b"another secret of 16+ bytes").check(n, "r", "c", T0)[0] is NonceState.FOREIGN
    )


def test_fields_cannot_slide_between_each_other() -> None:
    """Length prefixes: realm "ab" + call "c" does not sign like realm "a" + call "bc"."""
    m = mint()
    n = m.issue("ab", "c", T0)
    assert m.check(n, "a", "bc", T0)[0] is NonceState.FOREIGN


def test_tampered_time_is_foreign() -> None:
    """Changing the issue time (to renew a nonce) breaks the MAC."""
    import base64

    m = mint()
    n = m.issue("r", "c", T0)
    raw = bytearray(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)))
    raw[7] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert m.check(forged, "r", "c", T0)[0] is NonceState.FOREIGN


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_any_text_is_foreign_never_an_exception(text: str) -> None:
    """Whatever a client sends as nonce, the answer is a state."""
    assert mint().check(text, "r", "c", T0)[0] in (NonceState.FOREIGN,)


def test_each_nc_passes_once_and_reordering_within_the_window_passes() -> None:
    """Rule 4: (nonce, nc) once; an nc below the top within WINDOW passes once too."""
    c = NonceCounts(16, T0 - 1)
    issued = int(T0 * 1000)
    assert c.use("n", issued, 1)
    assert not c.use("n", issued, 1)
    assert c.use("n", issued, 5)
    assert c.use("n", issued, 3)
    assert not c.use("n", issued, 3)
    assert c.use("n", issued, 5 + WINDOW)
    assert not c.use("n", issued, 5)  # now below the window: refused
    assert not c.use("n", issued, 0)
    assert not c.use("n", issued, 2**32)


def test_nonces_issued_before_the_tracker_are_refused() -> None:
    """A restarted worker refuses nonces of its previous run (floor at creation)."""
    c = NonceCounts(16, T0)
    assert not c.use("old", int(T0 * 1000) - 1, 1)
    assert c.use("new", int(T0 * 1000) + 1, 1)


def test_table_is_bounded_and_evicted_nonces_stay_refused() -> None:
    """Past max_nonces the oldest first-used goes, and the floor refuses it afterwards."""
    c = NonceCounts(16, T0 - 100)
    base = int(T0 * 1000)
    for i in range(40):
        assert c.use(f"n{i}", base + i, 1)
        assert len(c) <= 16
    assert not c.use("n0", base, 2)  # evicted: it may have been used with nc 2 already
    assert c.use("n39", base + 39, 2)  # still tracked


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 200)), max_size=300),
       st.integers(16, 32))  # fmt: skip
def test_no_nonce_nc_pair_is_ever_accepted_twice(uses: list[tuple[int, int]], size: int) -> None:
    """The replay invariant, whatever the order and however full the table."""
    c = NonceCounts(size, T0 - 100)
    base = int(T0 * 1000)
    accepted: set[tuple[int, int]] = set()
    for nonce, nc in uses:
        if c.use(f"n{nonce}", base + nonce, nc):
            assert (nonce, nc) not in accepted
            accepted.add((nonce, nc))
        assert len(c) <= size


def test_secret_of_16_bytes_is_the_least() -> None:
    NonceMint(b"x" * 16, "w", 30)
    with pytest.raises(ValueError):
        NonceMint(b"x" * 15, "w", 30)


def test_foreign_nonce_has_no_time() -> None:
    """Not ours: (FOREIGN, 0) whatever it decodes to."""
    m = mint()
    assert m.check("A" * 43, "r", "c", T0) == (NonceState.FOREIGN, 0)
    assert m.check("!" * 10, "r", "c", T0) == (NonceState.FOREIGN, 0)
    assert m.check(m.issue("r", "c", T0) + "AAAA", "r", "c", T0) == (NonceState.FOREIGN, 0)
    assert m.check("A", "r", "c", T0) == (NonceState.FOREIGN, 0)  # not base64 at all
    assert m.check("A" * 65, "r", "c", T0) == (NonceState.FOREIGN, 0)  # too long to be ours


def test_future_slack_is_inclusive() -> None:
    """Issued up to FUTURE_SLACK_MS ahead (another process's clock) is still valid."""
    from workers.auth.nonce import FUTURE_SLACK_MS

    m = mint()
    n = m.issue("r", "c", T0 + FUTURE_SLACK_MS / 1000)
    assert m.check(n, "r", "c", T0)[0] is NonceState.VALID
    late = m.issue("r", "c", T0 + FUTURE_SLACK_MS / 1000 + 0.002)
    assert m.check(late, "r", "c", T0)[0] is NonceState.STALE


def test_counts_boundaries() -> None:
    """nc 0 never passes, nc 0xffffffff does; a nonce issued at the floor is refused; the
    top nc is marked used when the window moves."""
    c = NonceCounts(16, T0)
    floor = int(T0 * 1000)
    assert not c.use("at-floor", floor, 1)
    assert not c.use("zero", floor + 1, 0)
    assert c.use("max", floor + 1, 0xFFFFFFFF)
    assert not c.use("max", floor + 1, 0xFFFFFFFF)
    assert c.use("n", floor + 1, 1)
    assert c.use("n", floor + 1, 3)
    assert not c.use("n", floor + 1, 3)  # the new top is marked
    assert not c.use("n", floor + 1, 1)  # the old top moved down the window
    assert c.use("n", floor + 1, 2)
    assert c.use("n", floor + 1, 3 + WINDOW - 1)
    assert not c.use("n", floor + 1, 3)  # 3 is now at the window's far edge, still marked
    assert not c.use("n", floor + 1, 3 + WINDOW - 1)
