"""Load-time checks of ``[auth]`` and ``[[auth_realm]]`` (``conf/sections/auth.py``)."""

from __future__ import annotations

import os
import re

from conf import credfile
from conf.checks.common import CACHEDB_SCHEMES, DOMAIN_RE, _methods
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Settings

#: a realm is quoted in challenges and is part of cacheDB keys: keep it plain
REALM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_@:]{0,127}")


def check_auth(f: str, s: Settings) -> None:
    """[auth] and [[auth_realm]] (docs/auth.md): files that load, realms that can be quoted."""
    a = s.auth
    for i, algorithm in enumerate(a.algorithms):
        if algorithm not in credfile.HEX_LEN or a.algorithms.index(algorithm) != i:
            expected = "each of " + ", ".join(credfile.HEX_LEN) + " at most once"
            raise ConfigError(f, f"auth.algorithms[{i}]", expected, algorithm)
    _methods(f, "auth", a.methods)
    names: dict[str, int] = {}
    for i, r in enumerate(s.auth_realm):
        key = f"auth_realm[{i}]"
        if not REALM_RE.fullmatch(r.realm):
            raise ConfigError(f, f"{key}.realm", "letters, digits and .-_@: (at most 128)", r.realm)
        if r.realm in names:
            found = Said(f"{show(r.realm)} again (auth_realm[{names[r.realm]}])")
            raise ConfigError(f, f"{key}.realm", "a realm of its own", found)
        names[r.realm] = i
        for j, domain in enumerate(r.domains):
            if not DOMAIN_RE.fullmatch(domain):
                raise ConfigError(f, f"{key}.domains[{j}]", "a host name or an address", domain)
        if r.credentials_file:
            if not os.path.isabs(r.credentials_file):
                raise ConfigError(f, f"{key}.credentials_file", "an absolute file path",
                                  r.credentials_file)  # fmt: skip
            try:
                credfile.load_file(r.credentials_file)
            except credfile.CredentialsFileError as exc:
                raise ConfigError(f, f"{key}.credentials_file", "lines of 'username algorithm ha1'",
                                  Said(str(exc))) from None  # fmt: skip
        if r.cachedb_url:
            scheme = r.cachedb_url.partition("://")[0]
            if "://" not in r.cachedb_url or scheme not in CACHEDB_SCHEMES:
                raise ConfigError(f, f"{key}.cachedb_url", "a cacheDB URL (docs/cachedb.md)",
                                  r.cachedb_url)  # fmt: skip
        if not r.credentials_file and not r.cachedb_url:
            raise ConfigError(f, f"{key}.credentials_file", "a file (or a cachedb_url)", Said("nothing"))
    if not a.enabled:
        return
    if not s.auth_realm:
        raise ConfigError(f, "auth_realm", "at least one [[auth_realm]] with [auth] enabled",
                          Said("nothing"))  # fmt: skip
    if not a.algorithms:
        raise ConfigError(f, "auth.algorithms", "at least one algorithm when enabled", [])
    path = a.nonce_secret_file
    if not path or not os.path.isabs(path):
        raise ConfigError(f, "auth.nonce_secret_file", "an absolute file path (required when enabled)",
                          path)  # fmt: skip
    try:
        credfile.load_secret(path)
    except ValueError as exc:
        raise ConfigError(f, "auth.nonce_secret_file", "a readable secret of 16 bytes or more",
                          Said(f"{show(path)}: {exc}")) from None  # fmt: skip
