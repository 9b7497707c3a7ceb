"""The ingress <-> worker hop between hosts: ZeroMQ over TCP, CURVE only (issue #14;
``docs/architecture.md`` "Stages on several hosts", ``docs/security.md``).

Rules:
1. A host joins the hop over TCP when ``[bus] address`` is set. Processes of one host still
   meet over ipc:// in its run directory; a host without ``address`` is a one-host node, as
   before. The TCP endpoints are sockets of their own, never the ipc ones, and they take only
   what the hop carries between hosts: a worker's ``IN`` and ``HB``, an ingress's ``OUT`` and
   ``HB``, and between worker hosts the dialogs that move (``ADOPT``, ``HANDED``, ``FWD`` to
   a worker's TCP socket, each checked against the host its key authenticated:
   ``dialogstate/hosts.py``). ``RELEASE`` and ``TIMER`` stay on the host.
2. CURVE only: ``address`` needs ``[curve] secret_key_file``. Every TCP socket we bind is a
   CURVE server behind a ZAP allow-list (``conf.curve`` rule 3) of the keys of the
   ``[[peer]]`` tables that have a ``bus_address``; every socket we connect expects, as the
   server's key, the key configured for the address it connects to.
3. Endpoints come from configuration. A worker host names the ingresses it serves in
   ``[bus] ingresses``, each at a peer's ``bus_address`` (or, with ``[bus] discover``, learns
   them from that peer's state plane, held to the same address: ``conf/discovery.py``); ``ingress.N`` listens at
   ``address:ingress_port + N - 1``. A worker listens on a port the kernel picks and names it
   in its heartbeats; an ingress connects there only when the address is a peer's
   ``bus_address``, with that peer's key as the server key (``worker_key``). What a frame
   names opens nothing the configuration did not allow, and only the holder of that peer's
   secret key can answer there.
4. Idents name their host: ``<node name>.<process>-<pid>`` (``ident``), since pids and honcho
   names repeat across hosts. A heartbeat over TCP whose ident does not start with the name
   of the peer at its endpoint's address is refused.
5. An ingress announces itself to each worker that joined over TCP with ``HB [ingress_id,
   endpoint, state]``, at once and every heartbeat; a worker takes it only from an endpoint of
   its ``[bus] ingresses`` (``workers/bus.py``) and forgets an ingress it has not heard from
   for ``liveness`` heartbeats.
6. That heartbeat names the ingress's ring (the idents of its live workers, every host's):
   a worker owns a Call-ID among them, as the ingress decides, so it gives its OPTIONS
   probes Call-IDs whose answers come back to it (``probe_interval_s``). A worker keeps a
   ring (``ring_idents``) only while that ingress is live; the union over the live
   ingresses is its view (they hear the same heartbeats). Probes are still shared out among
   the workers of each host: each host keeps the health of every destination itself. A
   host with ``address`` but no ``ingresses`` (an edge's own workers) hears no ring: probing
   is refused there at load.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from conf import curve, sockets
from conf.refused import RefusalLog

if TYPE_CHECKING:
    from conf.settings import Settings


#: ``tcp://`` + a bracketed IPv6 address (45) + ``:65535``: longer is not an endpoint of ours
MAX_ENDPOINT_CHARS = 64
#: idents are at most 64 characters (``conf.sockets.IDENT_RE``) and rule 4 puts the node
#: name in front of ``worker.99-4194304``: 40 leaves room for it
MAX_NODE_NAME_CHARS = 40
#: what an ipc path leaves for the run directory and the node name: sun_path is 107 bytes,
#: and ``/ingress-ingress.99-4194304.ipc`` takes 31 of them (``conf.checks.common.MAX_RUN_DIR_BYTES``)
IPC_PATH_BYTES = 107 - 31
#: the lowest receive HWM on a CURVE server socket that still receives (``bind_pull``)
MIN_CURVE_RCVHWM = 2
#: workers an ingress keeps in its ring: far more than any deployment, and a bound on what
#: heartbeats (from a peer's key, or a process of the host) can make it hold
MAX_WORKERS = 1024

_TCP_RE = re.compile(r"tcp://(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):([0-9]{1,5})")


class BusConfigError(ValueError):
    """A ``[bus]`` or ``[[peer]] bus_address`` value that cannot be used; ``conf.load`` turns
    it into a ``ConfigError`` with the file."""

    def __init__(self, key: str, expected: str, found: object) -> None:
        super().__init__(key, expected, found)
        self.key, self.expected, self.found = key, expected, found


def parse_endpoint(ep: object) -> tuple[str, int] | None:
    """``(ip, port)`` of ``tcp://ip:port`` (``[v6]:port`` for IPv6), ip in its canonical
    form; None for anything else, whatever its type."""
    if not isinstance(ep, str) or len(ep) > MAX_ENDPOINT_CHARS:
        return None
    m = _TCP_RE.fullmatch(ep)
    if m is None:
        return None
    try:
        ip = ipaddress.ip_address(m.group(1) or m.group(2))
    except ValueError:
        return None
    if (m.group(1) is not None) != (ip.version == 6):
        return None
    port = int(m.group(3))
    if not 1 <= port <= 65535:
        return None
    return str(ip), port


def endpoint(ip: str, port: int | str) -> str:
    """``tcp://ip:port``, IPv6 in brackets (what ZeroMQ and ``parse_endpoint`` read)."""
    return f"tcp://[{ip}]:{port}" if ":" in ip else f"tcp://{ip}:{port}"


def ident(settings: Settings, role: str) -> str:
    """This process's ident: ``<process>-<pid>``, with the node name in front when the host
    is on the TCP hop (rule 4)."""
    base = f"{proc_name(role)}-{os.getpid()}"
    return f"{settings.node.name}.{base}" if settings.bus.address else base


def proc_name(role: str) -> str:
    """honcho's name for this process (``worker.1``), or ``role`` when started by hand (as
    ``conf.process.proc_name``, which imports the loader that imports us)."""
    return os.environ.get("HONCHO_PROCESS_NAME") or role


def ingress_index(proc: str) -> int:
    """N of honcho's ``ingress.N`` (1 for an ingress started by hand)."""
    tail = proc.rpartition(".")[2]
    return int(tail) if tail.isdigit() and tail != "0" else 1


def ingress_port(first: int, proc: str) -> int:
    """Rule 3: the TCP port of honcho's ``proc`` (``ingress.N``) when ``ingress.1`` takes
    ``first``; past 65535 for a high N, which ``conf.discovery`` does not announce."""
    return first + ingress_index(proc) - 1


# -- configuration ------------------------------------------------------------------------------


def _address(key: str, text: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BusConfigError(key, "an IP address like 192.0.2.10 or 2001:db8::10", text) from None
    if ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.scope_id):
        # heartbeats name it as the place to connect to: a wildcard names no host
        raise BusConfigError(key, "one host's address (not a wildcard, multicast or %zone)", text)
    return str(ip)


def check(s: Settings) -> None:
    """Rules 2-4 at load: addresses, endpoints and keys the hop can use.

    Raises:
        BusConfigError: the first value that cannot be used.
    """
    bus = s.bus
    own = _address("bus.address", bus.address) if bus.address else ""
    if own and not s.curve.secret_key_file:
        raise BusConfigError("bus.address", '"" unless [curve] secret_key_file is set (the hop '
                             "between hosts is CURVE only)", bus.address)  # fmt: skip
    room = IPC_PATH_BYTES - len(os.fsencode(s.node.run_dir)) - 1
    if own and len(s.node.name) > min(MAX_NODE_NAME_CHARS, room):
        raise BusConfigError("node.name", f"at most {min(MAX_NODE_NAME_CHARS, max(room, 0))} "
                             "characters with [bus] address and this run_dir (idents, and "
                             "the ipc paths named after them, carry it)", s.node.name)  # fmt: skip
    if bus.ingress_port and not own:
        raise BusConfigError("bus.ingress_port", "0 unless bus.address is set", bus.ingress_port)
    if bus.ingresses and not own:
        raise BusConfigError("bus.ingresses", "[] unless bus.address is set (workers need an "
                             "address to be reached at)", bus.ingresses)  # fmt: skip
    if bus.discover and not own:
        raise BusConfigError("bus.discover", "false unless bus.address is set (workers need an "
                             "address to be reached at)", True)  # fmt: skip
    if bus.discover and not bus.ingresses and not any(
            p.bus_address and p.stateplane.startswith("tcp://") for p in s.peer):  # fmt: skip
        # conf.discovery rule 2: only such a peer's announcements are heard
        raise BusConfigError("bus.discover", "false unless a [[peer]] has both bus_address and "
                             "a tcp:// stateplane (whose state plane announces its ingresses)",
                             True)  # fmt: skip
    for i, ds in enumerate(s.destination_set):
        if own and not bus.ingresses and not bus.discover and ds.probe_interval_s > 0:
            # rule 6: only a worker that hears an ingress over TCP knows every host's
            # workers; one on the edge's host would give probes Call-IDs of its host's ring
            raise BusConfigError(f"destination_set[{i}].probe_interval_s", "0 with [bus] address "
                                 "and no [bus] ingresses or discover (workers on an edge host "
                                 "do not hear the ring of every host's workers)",
                                 ds.probe_interval_s)  # fmt: skip
    hosts: dict[str, int] = {}
    for i, peer in enumerate(s.peer):
        if not peer.bus_address:
            continue
        key = f"peer[{i}].bus_address"
        ip = _address(key, peer.bus_address)
        if not own:
            raise BusConfigError(key, '"" unless [bus] address is set (this host is on the hop)',
                                 peer.bus_address)  # fmt: skip
        if ip == own:
            raise BusConfigError(key, "another host's address, not [bus] address (one host "
                                 "meets over ipc)", peer.bus_address)  # fmt: skip
        if ip in hosts:
            raise BusConfigError(key, "each host once", f"{peer.bus_address} again "
                                 f"(peer[{hosts[ip]}].bus_address)")  # fmt: skip
        if not (peer.public_key or peer.public_key_file):
            raise BusConfigError(key, '"" unless the peer has public_key or public_key_file '
                                 "(the hop is CURVE only)", peer.bus_address)  # fmt: skip
        hosts[ip] = i
    seen: dict[tuple[str, int], int] = {}
    for i, ep in enumerate(bus.ingresses):
        key = f"bus.ingresses[{i}]"
        parsed = parse_endpoint(ep)
        if parsed is None:
            raise BusConfigError(key, "tcp://ip:port like tcp://192.0.2.1:7500 or "
                                 "tcp://[2001:db8::1]:7500", ep)  # fmt: skip
        if parsed[0] not in hosts:
            known = ", ".join(p.bus_address for p in s.peer if p.bus_address) or "none is set"
            raise BusConfigError(key, f"an address of a [[peer]] bus_address ({known})", ep)
        if parsed in seen:
            raise BusConfigError(key, "each ingress once", f"{ep} again (bus.ingresses[{seen[parsed]}])")
        seen[parsed] = i


def ring_idents(ring: object) -> frozenset[str] | None:
    """Rule 6: the idents of an ingress's ring, or None for one that is not a list of at
    most ``MAX_WORKERS`` valid idents. Every ident is kept, of hosts we know or not: the ring
    only tells who the ingress sends a Call-ID to (its own decision, which a ring we trimmed
    would contradict), and opens no pipe and moves no dialog."""
    if not isinstance(ring, list) or len(ring) > MAX_WORKERS:
        return None
    if not all(sockets.valid_ident(i) for i in ring):
        return None
    return frozenset(ring)


# -- the hop --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Host:
    """A peer on the hop: its node name and the key its bus sockets present."""

    name: str
    key: bytes


class TcpHop:
    """The TCP side of one process's hop (rules 2-3): the ZAP allow-list, and sockets bound
    and connected with CURVE. ``counters`` gets ``bus_handshake_refused``."""

    __slots__ = ("_ctx", "_refused", "address", "counters", "hosts", "ingress_port", "ingresses",
                 "keys", "zap")  # fmt: skip

    def __init__(self, ctx: zmq.Context[Any], loop: Any, settings: Settings,
                 counters: Counter[str], serve: bool = True) -> None:  # fmt: skip
        """``serve``: this process binds CURVE servers (the ZAP handler runs); a state plane
        only connects to other hosts' workers and has a handler of its own, or none."""
        keys = curve.node_keys(settings)
        assert keys is not None  # rule 2, checked at load
        self.keys = keys
        self.address = str(ipaddress.ip_address(settings.bus.address))
        self.ingress_port = settings.bus.ingress_port
        self.ingresses = tuple(settings.bus.ingresses)
        self.hosts: dict[str, Host] = {}
        for peer in settings.peer:
            key = curve.peer_key(peer.public_key, peer.public_key_file)
            if peer.bus_address and key is not None:
                self.hosts[str(ipaddress.ip_address(peer.bus_address))] = Host(peer.name, key)
        self.counters = counters
        self._ctx = ctx
        self._refused = RefusalLog("bus_handshake_refused")
        allowed = {h.key: h.name for h in self.hosts.values()}
        # before any CURVE bind: without a handler libzmq admits every key (conf.curve rule 3)
        self.zap = curve.ZapHandler(ctx, loop, allowed, self._verdict) if serve else None

    def _verdict(self, ok: bool, address: str) -> None:
        if not ok:
            self.counters["bus_handshake_refused"] += 1
            self._refused.note(time.monotonic(), reason="key not in [[peer]] bus_address keys", src=address)

    def worker_key(self, ident: object, ep: object) -> bytes | None:
        """The server key to connect to worker ``ident`` at ``ep`` with, or None when rule 3
        or 4 forbids connecting there."""
        parsed = parse_endpoint(ep)
        host = self.hosts.get(parsed[0]) if parsed is not None else None
        if host is None or not sockets.valid_ident(ident):
            return None
        if not str(ident).startswith(host.name + "."):
            return None
        return host.key

    def server_key(self, ep: str) -> bytes:
        """The key of the host at configured endpoint ``ep`` (an entry of ``ingresses``)."""
        parsed = parse_endpoint(ep)
        assert parsed is not None  # checked at load
        return self.hosts[parsed[0]].key

    def key_of(self, name: str) -> bytes | None:
        """The key of the peer host named ``name`` (``conf.discovery`` rule 7), or None."""
        return next((h.key for h in self.hosts.values() if h.name == name), None)

    def ingress_endpoint(self) -> str | None:
        """Where this ingress listens (rule 3), or None when ``ingress_port`` is 0."""
        if not self.ingress_port:
            return None
        return endpoint(self.address, ingress_port(self.ingress_port, proc_name("ingress")))

    def bind_pull(self, ep: str, hwm: int) -> tuple[zmq.Socket[bytes], str]:
        """A CURVE-server PULL bound at ``ep`` (port ``*``: the kernel picks); returns it and
        the endpoint it got."""
        assert self.zap is not None  # a CURVE server needs the allow-list (conf.curve rule 3)
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL)
        sockets.base(sock, hwm, sockets.MAX_MSG_BYTES)
        # libzmq 4.3.5, seen: a CURVE server whose ZAP handler admits the client receives
        # nothing with a receive HWM of 1 (the handshake's own message takes the one slot)
        sock.rcvhwm = max(hwm, MIN_CURVE_RCVHWM)
        sock.ipv6 = ":" in self.address
        curve.serve_curve(sock, self.keys)
        sock.bind(ep)
        got = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        parsed = parse_endpoint(got)
        assert parsed is not None
        return sock, endpoint(self.address, parsed[1])

    def connect_push(self, ep: str, server_key: bytes, hwm: int,
                     immediate: bool = True) -> zmq.Socket[bytes]:  # fmt: skip
        """A CURVE-client PUSH to ``ep``, whose server must present ``server_key``
        (``immediate`` as ``conf.sockets.connect_push``)."""
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH)
        sockets.base(sock, hwm, sockets.MAX_SEND_ONLY_BYTES)
        # as conf.sockets.connect_push: no queue for the absent
        sock.setsockopt(zmq.IMMEDIATE, int(immediate))
        sock.ipv6 = ":" in ep
        curve.connect_curve(sock, self.keys, server_key)
        # from our own address: a multi-homed host reaches its peers from the address they
        # know it by, and the ZAP handler there logs that address (ZeroMQ's source;dest form)
        sock.connect(endpoint(self.address, 0) + ";" + ep.removeprefix("tcp://"))
        return sock

    def close(self) -> None:
        if self.zap is not None:
            self.zap.close()

