"""TLS configuration (``[[listen]]`` transport ``tls``, ``[tls]``) is validated at load: every
file is read and judged, and the error names the key, the file and the fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from conf import tlsfiles
from conf.load import ConfigError, from_dict
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"transport": "tls", "port": 5061, "cert_file": pki.server_cert,
            "key_file": pki.server_key, **extra}  # fmt: skip


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "t.toml")
    return info.value


class TestListener:
    def test_valid(self, pki: Pki) -> None:
        """A TLS listener with a certificate, its key and client verification loads."""
        s = from_dict({"listen": [{"transport": "udp"},
                                  tls(pki, verify_client="require", ca_file=pki.ca,
                                      client_names=["trunk.example.com", "*.carrier.net"])]})  # fmt: skip
        assert s.listen[1].transport == "tls"
        assert s.listen[1].client_names == ["trunk.example.com", "*.carrier.net"]

    def test_certificate_and_key_required(self, pki: Pki) -> None:
        """A TLS listener without its certificate or key is refused, naming the key."""
        e = error({"listen": [{"transport": "tls"}]})
        assert (e.key, e.expected) == ("listen[0].cert_file", "an absolute file path")
        e = error({"listen": [{"transport": "tls", "cert_file": pki.server_cert}]})
        assert e.key == "listen[0].key_file"
        e = error({"listen": [tls(pki, cert_file="relative/server.pem")]})
        assert e.key == "listen[0].cert_file"

    @pytest.mark.parametrize(
        ("field", "make", "fault"),
        [
            ("cert_file", lambda p, d: str(d / "missing.pem"), "No such file or directory"),
            ("cert_file", lambda p, d: p.server_key, "no PEM certificate"),
            ("cert_file", lambda p, d: _write(d / "garbage.pem",
                                              b"-----BEGIN CERTIFICATE-----\nnot base64!\n"
                                              b"-----END CERTIFICATE-----\n"), "cannot parse"),
            ("key_file", lambda p, d: p.ca, "no PEM private key"),
            ("key_file", lambda p, d: p.client("other.example.com")[1], "does not match cert_file"),
            ("key_file", lambda p, d: _write(d / "bad.key",
                                             b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                             b"-----END PRIVATE KEY-----\n"), "cannot parse"),
            ("key_file", lambda p, d: _encrypted(p, d), "encrypted"),
            ("key_file", lambda p, d: str(d), "Is a directory"),
        ],
        ids=["missing", "key-as-cert", "bad-pem", "cert-as-key", "mismatch", "bad-key",
             "encrypted", "directory"],
    )
    def test_bad_files(self, pki: Pki, tmp_path: Path, field: str, make: Any, fault: str) -> None:
        """A file that cannot be used is refused at load: the key, the file and the fault."""
        path = make(pki, tmp_path)
        e = error({"listen": [tls(pki, **{field: path})]})
        assert e.key == f"listen[0].{field}"
        assert str(e.found).startswith(path + ": ") and fault in str(e.found)
        assert field.split("_")[0] in e.expected

    def test_key_never_in_the_error(self, pki: Pki, tmp_path: Path) -> None:
        """No byte of a private key reaches the error, whatever file it was given as."""
        key_body = Path(pki.server_key).read_text().splitlines()[1]
        for data in ({"listen": [tls(pki, cert_file=pki.server_key)]},
                     {"listen": [tls(pki, ca_file=pki.server_key, verify_client="require")]},
                     {"listen": [tls(pki, key_file=pki.server_key, cert_file=pki.ca)]}):  # fmt: skip
            e = error(data)
            assert key_body not in str(e) and "PRIVATE" not in str(e.found)

    def test_client_verification_needs_a_ca(self, pki: Pki) -> None:
        """verify_client needs ca_file, client_names needs verify_client = require."""
        e = error({"listen": [tls(pki, verify_client="optional")]})
        assert (e.key, e.found) == ("listen[0].ca_file", "nothing")
        e = error({"listen": [tls(pki, verify_client="optional", ca_file=pki.ca,
                                  client_names=["a.example.com"])]})  # fmt: skip
        assert e.key == "listen[0].client_names"
        e = error({"listen": [tls(pki, verify_client="require", ca_file=pki.server_key)]})
        assert e.key == "listen[0].ca_file" and "no PEM certificate" in str(e.found)
        e = error({"listen": [tls(pki, verify_client="require", ca_file=pki.ca,
                                  client_names=["bad name"])]})  # fmt: skip
        assert e.key == "listen[0].client_names[0]"

    def test_tls_keys_only_on_tls_listeners(self, pki: Pki) -> None:
        """A UDP or TCP listener given a certificate is refused (it would never be used)."""
        e = error({"listen": [{"transport": "tcp", "cert_file": pki.server_cert}]})
        assert (e.key, e.expected) == ("listen[0].cert_file", 'nothing unless transport = "tls"')
        e = error({"listen": [{"transport": "udp", "verify_client": "require"}]})
        assert e.key == "listen[0].verify_client"


class TestOutbound:
    def test_client_files_checked_when_tls_is_used(self, pki: Pki, tmp_path: Path) -> None:
        """[tls] files are validated like a listener's."""
        base = {"listen": [tls(pki)]}
        assert from_dict({**base, "tls": {"ca_file": pki.ca}}).tls.ca_file == pki.ca
        e = error({**base, "tls": {"ca_file": str(tmp_path / "none.pem")}})
        assert e.key == "tls.ca_file" and "No such file" in str(e.found)
        e = error({**base, "tls": {"cert_file": pki.server_cert}})
        assert (e.key, e.expected) == ("tls.key_file", "an absolute file path")
        e = error({**base, "tls": {"key_file": pki.server_key}})
        assert e.key == "tls.cert_file"
        cert, _ = pki.client("me.example.com")
        e = error({**base, "tls": {"cert_file": cert, "key_file": pki.server_key}})
        assert e.key == "tls.key_file" and "does not match" in str(e.found)
        e = error({**base, "tls": {"max_handshakes": 4, "max_handshakes_per_ip": 8}})
        assert e.key == "tls.max_handshakes_per_ip"

    @pytest.mark.parametrize(
        ("uri", "ok"),
        [
            ("sips:127.0.0.1", True),
            ("sip:127.0.0.1:5071;transport=tls", True),
            ("sip:127.0.0.1;transport=TLS", True),
            ("sips:[::1]", False),  # no IPv6 TLS listener
            ("sip:127.0.0.1;transport=sctp", False),
        ],
    )
    def test_tls_destinations(self, pki: Pki, uri: str, ok: bool) -> None:
        """sips: and transport=tls destinations need a TLS listener of their family."""
        data = {"listen": [{"transport": "udp"}, tls(pki)],
                "destination_set": [{"name": "d", "destinations": [uri]}]}  # fmt: skip
        if ok:
            assert from_dict(data).destination_set[0].destinations == [uri]
        else:
            assert error(data).key == "destination_set[0].destinations[0]"


class TestNames:
    CERT: ClassVar[dict[str, Any]] = {"subject": ((("commonName", "cn.example.com"),),),
            "subjectAltName": (("DNS", "Trunk.Example.com"), ("IP Address", "192.0.2.7"))}  # fmt: skip

    @pytest.mark.parametrize(
        ("allowed", "ok"),
        [
            ([], True),
            (["trunk.example.com"], True),
            (["TRUNK.example.com"], True),
            (["192.0.2.7"], True),
            (["*.example.com"], True),
            (["*.com"], False),
            (["cn.example.com"], False),  # subjectAltName first: the CN is not looked at
            (["other.example.com", "*.example.com"], True),
            (["example.com"], False),
        ],
    )
    def test_names_allowed(self, allowed: list[str], ok: bool) -> None:
        """A wildcard allows one left-most label; subjectAltNames hide the commonName."""
        assert tlsfiles.names_allowed(self.CERT, allowed) is ok

    def test_common_name_without_alt_names(self) -> None:
        cert = {"subject": ((("commonName", "cn.example.com"),),)}
        assert tlsfiles.cert_names(cert) == ["cn.example.com"]
        assert tlsfiles.names_allowed(cert, ["cn.example.com"])
        assert not tlsfiles.names_allowed(None, ["cn.example.com"])
        wild = {"subjectAltName": (("DNS", "*.example.com"),)}
        assert not tlsfiles.names_allowed(wild, ["a.example.com"])  # taken literally


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _encrypted(pki: Pki, d: Path) -> str:
    import subprocess

    out = d / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", pki.server_key, "-aes256", "-passout",
                    "pass:secret", "-out", str(out)], check=True, capture_output=True)  # fmt: skip
    return str(out)
