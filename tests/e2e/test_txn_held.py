"""Held transactions on the wire (docs/transactions.md, "Held"): what a finished transaction
still does once the table keeps only its key and the bytes it may send again."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import Proc, sipp_uac
from .test_stateful import uas_done, uas_stats

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

STATEFUL = """
[proxy]
mode = "stateful"
"""


def received_responses(trace: Path) -> list[str]:
    """The responses a sipp ``-trace_msg`` file shows as received, as text."""
    blocks = re.split(r"\n-{10,}[^\n]*\n", trace.read_text(errors="replace"))
    out = []
    for block in blocks:
        head, _, msg = block.partition("\n\n")
        if "message received" in head and msg.lstrip().startswith("SIP/2.0 "):
            out.append(msg.strip())
    return out


def test_a_retransmitted_bye_gets_the_same_200_and_is_not_forwarded(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """Each call's BYE is sent twice by the UAC, the second after its 200 (a retransmission
    as when that 200 is lost): the held BYE transaction answers it with the same 200, and
    only one BYE per call reaches the UAS."""
    calls = 10
    dport, proc, stf, msgs = uas_stats(uas, "uas", calls, tmp_path)
    node = start_node(dport, "worker=2", STATEFUL)
    trace = tmp_path / "uac-msgs.log"
    res = sipp_uac(node.port, "u1", calls, 10, tmp_path, scenario="uac_bye_twice",
                   extra=("-trace_msg", "-message_file", str(trace)))  # fmt: skip
    assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(proc, stf) == (calls, 0)
    byes = msgs.read_text(errors="replace").count("BYE sip:")
    assert byes == calls, f"{byes} BYEs reached the UAS for {calls} calls"
    per_call: dict[str, list[str]] = {}
    for msg in received_responses(trace):
        if re.search(r"^CSeq:\s*2 BYE", msg, re.MULTILINE | re.IGNORECASE):
            call_id = re.search(r"^Call-ID:\s*(\S+)", msg, re.MULTILINE | re.IGNORECASE)
            assert call_id is not None
            per_call.setdefault(call_id[1], []).append(msg)
    assert len(per_call) == calls
    for answers in per_call.values():  # sipp re-sends the BYE for each 200 it takes for a
        assert len(answers) >= 2 and len(set(answers)) == 1, answers[:3]  # retransmission
