"""Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).

Rules:
1. Client side (§17.1.3): a response matches the client transaction whose request carried the
   branch of the response's top Via and whose method is the response's CSeq method. We only
   create branches with the magic cookie, so there is no RFC 2543 case on this side.
2. Server side, RFC 3261 peers (branch starts with ``z9hG4bK``, §17.2.3): branch, sent-by (host
   lower-cased, port as written: a missing port is not 5060, as Via comparison in §20.42) and
   method, with ACK looked up as INVITE. A CANCEL has its own key (method CANCEL), and finds the
   INVITE it cancels with the same branch and sent-by and method INVITE (§9.2).
3. Server side, RFC 2543 peers (no cookie): Request-URI, From tag, Call-ID, CSeq number, the
   whole top Via, and method (ACK as INVITE). §17.2.3 also compares the To tag; we leave it out
   because an ACK carries the tag of our response while the INVITE carried none, and the other
   fields already identify the transaction (the same choice as Kamailio's tm ``t_lookup``). A
   CANCEL from such a peer repeats all of these, so it finds its INVITE the same way.
4. Branches are compared as written (case-sensitive): a retransmission repeats its bytes.
"""

from __future__ import annotations

import sys
from typing import Any

from ingress.sip.message import Request, Response

MAGIC = "z9hG4bK"

ClientKey = tuple[str, str]
ServerKey = tuple[Any, ...]


def response_key(response: Response) -> ClientKey | None:
    """The client transaction key a response names, or None if its top Via has no branch."""
    branch = response.vias[0].branch
    if not branch:
        return None
    return (branch, response.cseq_method)


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """The server transaction key of ``request`` (rules 2 and 3).

    Args:
        method: look up as this method instead of the request's own (``"INVITE"`` to find the
            transaction a CANCEL cancels). ACK always looks up as INVITE.
    """
    m = method or request.method
    if m == "ACK":
        m = "INVITE"
    via = request.vias[0]
    branch = via.branch
    if branch and branch.startswith(MAGIC):
        # interned: a key lives as long as its transaction (32 s after a 2xx, RFC 6026), and
        # every transaction from one peer then holds one host string, not one each (~58 B)
        return (branch, sys.intern(via.host.lower()), via.port, m)
    return ("", request.uri.raw, request.from_.tag, request.call_id, request.cseq, via.raw, m)
