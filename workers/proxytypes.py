"""What the stateless proxy (``workers/proxy.py``) is handed and what it decides: where a
message came from (``Inbound``), what leaves (``Out``), and where a request goes next
(``Plan``). Compiled with it (``conf/compiled.py``); ``workers.proxy`` re-exports them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingress.sip.message import NameAddr, Uri
from ingress.sip.serialize import Edit
from workers.routing.prefix_route import PrefixChoice
from workers.routing.table import Destination, Route


@dataclass(slots=True)
class Inbound:
    """Where a message came from, as the ingress saw it.

    The ``__init__`` is written out (the dataclass keeps it, and its eq and repr): compiled,
    it is native code, where the one ``dataclasses`` generates is interpreted, ~0.25 µs per
    message (#16)."""

    ingress: str
    transport: str
    src_ip: str
    src_port: int
    conn: int
    local_ip: str
    local_port: int

    def __init__(self, ingress: str, transport: str, src_ip: str, src_port: int, conn: int,
                 local_ip: str, local_port: int) -> None:  # fmt: skip
        self.ingress, self.transport, self.src_ip, self.src_port = ingress, transport, src_ip, src_port
        self.conn, self.local_ip, self.local_port = conn, local_ip, local_port


#: (ingress id, out meta as in conf.envelope, bytes)
Out = tuple[str, list[Any], bytes]


@dataclass(slots=True)
class Plan:
    """Where a request goes next, as §16.4-16.5 decided (``StatelessProxy.plan``)."""

    routes: list[NameAddr]  # the Route set left once our own entries are popped
    changed: bool  # the Route set differs from the received one
    uri: Uri  # the Request-URI to send
    uri_changed: bool
    hop: Uri | None  # the next hop the request names (top Route, remote target), if any
    route: Route | None  # else the routing rule that matched it
    target: Destination | None  # and the destination its set picked
    local: tuple[bytes, ...] | None  # an OPTIONS for us: answer 200 with these headers
    #: removes the credentials we checked (``[auth] consume_credentials``), else None
    strip: Edit | None = None
    #: the routing rules' header edits (docs/routing.md), made once, spliced into each copy
    edits: Sequence[Edit] = ()
    #: a prefix table's choice: ``target`` first, then its failover list (docs/prefix_tables.md)
    choice: PrefixChoice | None = None

    # written out for the reason Inbound's is (``dataclasses.replace`` still works: the
    # parameters are the fields)
    def __init__(self, routes: list[NameAddr], changed: bool, uri: Uri, uri_changed: bool,
                 hop: Uri | None, route: Route | None, target: Destination | None,
                 local: tuple[bytes, ...] | None, strip: Edit | None = None,
                 edits: Sequence[Edit] = (), choice: PrefixChoice | None = None) -> None:  # fmt: skip
        self.routes, self.changed, self.uri, self.uri_changed = routes, changed, uri, uri_changed
        self.hop, self.route, self.target, self.local = hop, route, target, local
        self.strip, self.edits, self.choice = strip, edits, choice
