"""``sipline auth-ha1``: credentials file lines from a password on stdin."""

from __future__ import annotations

import io

import pytest

from conf.credfile import parse_file
from sipline import cli


def test_prints_loadable_lines_with_the_rfc7616_ha1(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """RFC 7616 §3.9.1's user: its MD5 HA1, and lines a credentials file accepts."""
    monkeypatch.setattr("sys.stdin", io.StringIO("Circle of Life\n"))
    assert cli.main(["auth-ha1", "Mufasa", "http-auth@example.org"]) == 0
    out = capsys.readouterr().out
    table = parse_file(out)
    assert table[("Mufasa", "MD5")] == "3d78807defe7de2157e2b0b6573a855f"
    assert len(table[("Mufasa", "SHA-256")]) == 64


def test_refuses_empty_password_and_spaced_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["auth-ha1", "alice", "r"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["auth-ha1", "al ice", "r"]) == 2
