"""[auth] and [[auth_realm]] at load: files that load, secrets long enough, realms quotable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conf.credfile import CredentialsFileError, load_secret, parse_file
from conf.load import ConfigError, from_dict

MD5 = "0" * 32
SHA = "a" * 64


def files(tmp_path: Path, users: str = f"alice MD5 {MD5}\nalice SHA-256 {SHA}\n",
          secret: bytes = b"0123456789abcdef") -> tuple[str, str]:  # fmt: skip
    (tmp_path / "users").write_text(users, encoding="utf-8")
    (tmp_path / "secret").write_bytes(secret)
    return str(tmp_path / "users"), str(tmp_path / "secret")


def conf(tmp_path: Path, **auth: Any) -> dict[str, Any]:
    users, secret = files(tmp_path)
    return {"auth": {"enabled": True, "nonce_secret_file": secret, **auth},
            "auth_realm": [{"realm": "example.com", "credentials_file": users}]}  # fmt: skip


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "conf/test.toml")
    return info.value


def test_valid_configuration_loads(tmp_path: Path) -> None:
    s = from_dict(conf(tmp_path))
    assert s.auth.enabled and s.auth_realm[0].realm == "example.com"
    assert s.auth.algorithms == ["SHA-256", "MD5"]


def test_defaults_are_off_and_need_nothing() -> None:
    """The shipped default: no auth, no realm, no secret needed."""
    s = from_dict({})
    assert not s.auth.enabled and s.auth_realm == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"auth_realm": []}, "auth_realm"),
        ({"auth": {"enabled": True}}, "auth.nonce_secret_file"),
        ({"algorithms": ["SHA-512"]}, "auth.algorithms[0]"),
        ({"algorithms": ["MD5", "MD5"]}, "auth.algorithms[1]"),
        ({"algorithms": []}, "auth.algorithms"),
        ({"methods": ["invite"]}, "auth.methods[0]"),
        ({"nonce_secret_file": "relative/secret"}, "auth.nonce_secret_file"),
        ({"nonce_secret_file": "/nonexistent/secret"}, "auth.nonce_secret_file"),
        ({"nonce_lifetime_s": 0}, "auth.nonce_lifetime_s"),
    ],
)
def test_auth_mistakes_name_their_key(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    data = conf(tmp_path)
    if "auth_realm" in change or "auth" in change:
        data.update(change)
        if "auth" in change:
            data["auth"]["nonce_secret_file"] = ""
    else:
        data["auth"].update(change)
    assert error(data).key == key


def test_short_secret_is_refused(tmp_path: Path) -> None:
    data = conf(tmp_path)
    (tmp_path / "secret").write_bytes(b"short")
    e = error(data)
    assert e.key == "auth.nonce_secret_file" and "5 bytes" in str(e)


@pytest.mark.parametrize(
    ("realm", "key"),
    [
        ({"realm": 'bad"realm'}, "auth_realm[0].realm"),
        ({"realm": ""}, "auth_realm[0].realm"),
        ({"credentials_file": ""}, "auth_realm[0].credentials_file"),
        ({"credentials_file": "users"}, "auth_realm[0].credentials_file"),
        ({"cachedb_url": "ftp://x"}, "auth_realm[0].cachedb_url"),
        ({"domains": ["bad domain"]}, "auth_realm[0].domains[0]"),
    ],
)
def test_realm_mistakes_name_their_key(tmp_path: Path, realm: dict[str, Any], key: str) -> None:
    data = conf(tmp_path)
    data["auth_realm"][0].update(realm)
    assert error(data).key == key


def test_duplicate_realm_is_refused(tmp_path: Path) -> None:
    data = conf(tmp_path)
    data["auth_realm"].append(dict(data["auth_realm"][0]))
    assert error(data).key == "auth_realm[1].realm"


def test_bad_credentials_file_names_its_line(tmp_path: Path) -> None:
    data = conf(tmp_path)
    (tmp_path / "users").write_text(f"# users\nalice MD5 {MD5}\nbob MD5 xyz\n", encoding="utf-8")
    e = error(data)
    assert e.key == "auth_realm[0].credentials_file" and "users:3" in str(e)


@pytest.mark.parametrize(
    "line",
    [
        f"alice MD5 {MD5} extra",
        "alice MD5",
        f"alice SHA-1 {MD5}",
        f"alice SHA-256 {MD5}",
        f"alice MD5 {'g' * 32}",
    ],
)
def test_credential_lines_refused(line: str) -> None:
    with pytest.raises(CredentialsFileError):
        parse_file(line)


def test_credentials_file_table_and_duplicates() -> None:
    """Comments and blank lines skip; hex is lower-cased; a repeated user+algorithm is refused."""
    table = parse_file(f"# c\n\nalice MD5 {MD5.upper()}\n alice\tSHA-256 {SHA.upper()}\n")
    assert table == {("alice", "MD5"): MD5, ("alice", "SHA-256"): SHA}
    with pytest.raises(CredentialsFileError, match="twice"):
        parse_file(f"alice MD5 {MD5}\nalice MD5 {MD5}\n")


def test_secret_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"  0123456789abcdef\n")
    assert load_secret(str(tmp_path / "s")) == b"0123456789abcdef"
