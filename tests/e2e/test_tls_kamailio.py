"""Interop: Kamailio's tls module (OpenSSL, Debian ``kamailio-tls-modules``) as the TLS peer
of a real node, both ways at once:

    sipp UAC --UDP--> Kamailio --TLS--> sipline (TLS listener) --TLS--> Kamailio --UDP--> sipp UAS

Kamailio forwards what it receives over UDP to sipline's TLS listener (Kamailio as a TLS
client) and what it receives over TLS to the UAS; sipline's destination is Kamailio's TLS
listener, verified against our CA (Kamailio as a TLS server). Skipped where Kamailio or its
tls module is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tlscerts import Pki, issue, make_pki

from .conftest import StartNode
from .node import Proc, free_port, sipp_uac
from .test_tls import Uas, node_tls

pytestmark = pytest.mark.e2e

#: ./dev test installs kamailio and kamailio-tls-modules when they are missing: no skip
MODULES = next((p.parent for p in Path("/usr/lib").glob("*/kamailio/modules/tls.so")),
               Path("/usr/lib/kamailio/modules"))  # fmt: skip


CONFIG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
tcp_children=1
listen=udp:127.0.0.1:{udp}
listen=tls:127.0.0.1:{tls}
enable_tls=yes
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off

mpath="{modules}/"
loadmodule "tls.so"
loadmodule "kex.so"
loadmodule "pv.so"
loadmodule "corex.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
modparam("tls", "config", "{tls_cfg}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if ($pr == "tls") {{
        $du = "sip:127.0.0.1:{uas};transport=udp";
    }} else {{
        # sipp's built-in UAC sends BYE to the INVITE's Request-URI (Kamailio): address it
        # to sipline, which routes requests for itself by its table
        $rd = "127.0.0.1";
        $rp = {sipline};
        $du = "sip:127.0.0.1:{sipline};transport=tls";
    }}
    forward();
    exit;
}}
"""

TLS_CFG = """
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
ca_list = {ca}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def kamailio(tmp_path: Path, pki: Pki) -> Iterator[tuple[int, int, Path, list[Proc]]]:
    """Ports (udp, tls) for a Kamailio to be started by ``start`` once sipline's port is
    known; stopped at teardown."""
    procs: list[Proc] = []
    yield free_port(), free_port(), tmp_path, procs
    for p in procs:
        p.stop(timeout_s=5)


def start_kamailio(tmp_path: Path, pki: Pki, udp: int, tls: int, uas: int, sipline: int,
                   procs: list[Proc]) -> Proc:  # fmt: skip
    cert, key = issue(tmp_path, "kamailio", "IP:127.0.0.1", pki)
    tls_cfg = tmp_path / "kamailio-tls.cfg"
    tls_cfg.write_text(TLS_CFG.format(key=key, cert=cert, ca=pki.ca))
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CONFIG.format(udp=udp, tls=tls, modules=MODULES, tls_cfg=tls_cfg, uas=uas,
                                 sipline=sipline))  # fmt: skip
    run = tmp_path / "kamailio-run"
    run.mkdir(exist_ok=True)
    check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    proc = Proc.start(["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "64", "-Y", str(run)],
                      dict(os.environ), tmp_path)  # fmt: skip
    procs.append(proc)
    deadline = time.monotonic() + 15
    while True:  # ready once its TLS port accepts (it binds UDP first)
        try:
            socket.create_connection(("127.0.0.1", tls), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, proc.text()[-3000:]
            time.sleep(0.1)  # polling step, bounded by the deadline above
    return proc


def test_calls_through_kamailio_tls_both_ways(start_node: StartNode, uas: Uas, pki: Pki,
                                              kamailio: tuple[int, int, Path, list[Proc]],
                                              tmp_path: Path) -> None:  # fmt: skip
    """20 calls: Kamailio's TLS client reaches sipline's TLS listener and sipline's verified
    TLS connection reaches Kamailio's TLS server; every call completes."""
    kudp, ktls, kdir, procs = kamailio
    # every hop is stateless: a caller's INVITE retransmission (the first calls wait for two
    # TLS connects and handshakes, past T1 under load) reaches the UAS after its 200, which
    # sipp's built-in uas takes for an unexpected message (scenarios/uas.xml takes it in)
    dport, _ = uas("u1", extra=("-trace_err",))
    tport = free_port()
    node = start_node([f"sip:127.0.0.1:{ktls};transport=tls"], "worker=2",
                      node_tls(pki, tport).replace("handshake_timeout_ms = 500",
                                                   "handshake_timeout_ms = 3000"))  # fmt: skip
    start_kamailio(kdir, pki, kudp, ktls, dport, tport, procs)
    res = sipp_uac(kudp, "u1", 20, 10, tmp_path, timeout_s=60)
    uas_errors = "".join(p.read_text(errors="replace")[-3000:]
                         for p in tmp_path.glob("uas_*_errors.log"))  # fmt: skip
    assert (res.successful, res.failed) == (20, 0), (res.output + procs[0].text()[-3000:]
                                                     + uas_errors)  # fmt: skip
    assert not node.proc.events("tcp_connect_failed")
