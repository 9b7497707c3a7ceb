"""Reading Digest credentials: the grammar, its bounds, and the never-raise-anything-else rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.auth.header import (
    MAX_HEADER_BYTES,
    MAX_PARAMS,
    CredentialsError,
    challenge_value,
    check_form,
    parse_credentials,
    quote,
)

GOOD = (b'Digest username="alice", realm="example.com", nonce="abc", uri="sip:example.com", '
        b'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="x", qop=auth, '
        b'nc=00000001')  # fmt: skip


def test_parses_every_parameter_unquoted() -> None:
    """Quoted and token values come back as text, names lower-cased."""
    c = parse_credentials(GOOD)
    assert c is not None
    assert c.params["username"] == "alice"
    assert c.params["nc"] == "00000001"
    assert c.params["algorithm"] == "MD5"
    assert c.realm == "example.com"
    check_form(c, 32)


def test_scheme_is_case_insensitive_and_lws_is_free() -> None:
    """``digest`` in any case, spaces and tabs around '=' and ',' (RFC 3261 §25.1 LWS)."""
    c = parse_credentials(b'  dIgEsT\tusername = "a" ,realm=\t"r" ')
    assert c is not None and c.params == {"username": "a", "realm": "r"}


def test_quoted_pair_unescapes() -> None:
    """``\\"`` and ``\\\\`` inside a quoted-string are the characters themselves."""
    c = parse_credentials(b'Digest username="a\\"b\\\\c"')
    assert c is not None and c.params["username"] == 'a"b\\c'


def test_other_schemes_are_not_ours() -> None:
    """Basic or another scheme: None, left for whoever it is for."""
    assert parse_credentials(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") is None
    assert parse_credentials(b"Digestusername=a") is None  # scheme token 'Digestusername'


def test_utf8_username() -> None:
    """RFC 7616 §4: usernames may be UTF-8."""
    c = parse_credentials('Digest username="jösé"'.encode())
    assert c is not None and c.params["username"] == "jösé"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"Digest",
        b"Digest ",
        b'Digest username="unterminated',
        b"Digest username=",
        b"Digest username",
        b'Digest username="a" realm="b"',
        b'Digest username="a",,realm="b"',
        b'Digest username="a", username="b"',
        b'Digest username="a\x00b"',
        b'Digest username="a\\',
        b'Digest username="\xff\xfe"',
        b"Digest " + b", ".join(b"p%d=1" % i for i in range(MAX_PARAMS + 1)),
        b'Digest username="' + b"a" * MAX_HEADER_BYTES + b'"',
        b'"Digest" username=a',
    ],
    ids=lambda v: v[:40].decode("latin-1"),
)
def test_malformed_raises_credentials_error(value: bytes) -> None:
    """Anything off the grammar or over a bound is a CredentialsError."""
    with pytest.raises(CredentialsError):
        parse_credentials(value)


@pytest.mark.parametrize(
    ("missing_or_bad", "value"),
    [
        ("no nc", GOOD.replace(b", nc=00000001", b"")),
        ("no cnonce", GOOD.replace(b', cnonce="x"', b"")),
        ("short response", GOOD.replace(b"0123456789abcdef0123456789abcdef", b"0123")),
        ("non-hex response", GOOD.replace(b"0123456789abcdef0123456789abcdef", b"z" * 32)),
        ("nc zero", GOOD.replace(b"nc=00000001", b"nc=00000000")),
        ("nc not 8 digits", GOOD.replace(b"nc=00000001", b"nc=1")),
        ("empty username", GOOD.replace(b'username="alice"', b'username=""')),
    ],
)
def test_check_form_refuses(missing_or_bad: str, value: bytes) -> None:
    """Fields qop=auth needs must be there, and hex fields hex of the right length."""
    c = parse_credentials(value)
    assert c is not None
    with pytest.raises(CredentialsError):
        check_form(c, 32)


def test_challenge_value_round_trips_through_the_parser() -> None:
    """What we send parses with the same grammar, realm quotes escaped."""
    value = challenge_value('we"ird\\realm', "n0nce", "SHA-256", True)
    c = parse_credentials(value)
    assert c is not None
    assert c.params == {"realm": 'we"ird\\realm', "nonce": "n0nce", "algorithm": "SHA-256",
                        "qop": "auth", "stale": "true"}  # fmt: skip
    assert quote("a") == '"a"'


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_credentials_error(data: bytes) -> None:
    """The invariant (h11 fuzz): a result, None, or CredentialsError; nothing else."""
    for value in (data, b"Digest " + data):
        try:
            parse_credentials(value)
        except CredentialsError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.binary(min_size=1, max_size=3), st.integers(0, 3))
def test_mutated_good_header_parses_or_raises(pos: int, insert: bytes, cut: int) -> None:
    """A valid header with bytes inserted or removed anywhere still keeps the invariant."""
    value = GOOD[:pos] + insert + GOOD[pos + cut :]
    try:
        c = parse_credentials(value)
        if c is not None:
            check_form(c, 32)
    except CredentialsError:
        pass
