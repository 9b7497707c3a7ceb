"""Certificates made for a test by the ``openssl`` command: a CA, a server certificate for
127.0.0.1 and a client certificate per name (EC P-256, two days, nothing kept)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: str  # the CA's certificate
    server_cert: str  # CN and subjectAltName 127.0.0.1 (IP) and localhost (DNS), from the CA
    server_key: str

    def client(self, name: str, ca: bool = True) -> tuple[str, str]:
        """(cert, key) naming ``name`` (subjectAltName DNS), from the CA or self-signed."""
        return issue(self.dir, name, f"DNS:{name}", self if ca else None)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def issue(d: Path, name: str, san: str, pki: Pki | None) -> tuple[str, str]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    signer = ["-CA", pki.ca, "-CAkey", str(pki.dir / "ca.key")] if pki else []
    _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(cert), "-subj",
             f"/CN={name}", "-addext", f"subjectAltName={san}", *signer)  # fmt: skip
    return str(cert), str(key)


def make_pki(d: Path) -> Pki:
    """A CA and a server certificate in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *EC, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-subj", "/CN=sipline test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    pki = Pki(d, str(d / "ca.pem"), "", "")
    cert, key = issue(d, "server", "IP:127.0.0.1,DNS:localhost", pki)
    return Pki(d, pki.ca, cert, key)
