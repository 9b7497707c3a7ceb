"""The SIP codec: bytes in, messages out, no networking code at all.

workers and stateplane import this package and nothing else from ingress.
"""

from ingress.sip.errors import SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.sip.message import Message, NameAddr, Request, Response, Uri, Via
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response, splice

__all__ = [
    "KEEPALIVE",
    "NEED_DATA",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipError",
    "StreamFramer",
    "Uri",
    "Via",
    "build_response",
    "parse_message",
    "splice",
]
