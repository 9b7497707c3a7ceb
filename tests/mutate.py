"""Mutation testing of the sans-IO cores with mutmut (``./dev mutate [package ...]``).

Each package below is mutated on its own, against the fast unit tests that own it and nothing
else: mutmut's config is read from ``pyproject.toml`` in the directory it runs in, so every
package gets a work directory ``.mutmut/<package>/`` whose ``pyproject.toml`` is the project's
plus a generated ``[tool.mutmut]`` section, and whose source and test folders are links to the
checkout's. mutmut keeps its verdicts in ``.mutmut/<package>/mutants/``, so a run that is cut
(``--budget`` seconds, default 1500) resumes where it stopped; after testing new mutants the
survivors are tried again, so tests added since the last run are counted.

Score = (killed + timed out) / (mutants - those listed in ``EQUIVALENT``), per package; a
mutant no test reaches counts as a survivor. ``docs/testing.md`` records the scores.

    ./dev mutate                 # every package in turn
    ./dev mutate bstar txn       # some of them
    ./dev mutate --report sip    # print the score and the survivors, run nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutmut"
#: top-level folders the tests import from; each work directory links to them all, because
#: mutmut puts its ``mutants/`` copy first on sys.path and removes the checkout from it
TREE = ("conf", "ingress", "dialogstate", "workers", "stateplane", "timers", "sipline", "tests", "docs")


@dataclass(frozen=True, slots=True)
class Package:
    """One sans-IO core and the unit tests that answer for it."""

    sources: tuple[str, ...]
    tests: tuple[str, ...]


PACKAGES: dict[str, Package] = {
    "sip": Package(("ingress/sip",), ("tests/ingress/sip",)),
    "txn": Package(
        ("workers/txn",),
        (
            "tests/workers/test_transactions.py",
            "tests/workers/test_transactions_fsm.py",
            "tests/workers/test_transactions_msgs.py",
            "tests/workers/test_transactions_pair.py",
            "tests/workers/test_transactions_sans_io.py",
            "tests/workers/test_transactions_table.py",
        ),
    ),
    "proxy": Package(
        ("workers/proxy.py", "workers/listeners.py", "workers/refusals.py"),
        (
            "tests/workers/test_proxy.py",
            "tests/workers/test_relay.py",
            "tests/workers/test_malformed.py",
            "tests/workers/test_conntag.py",
        ),
    ),
    "bstar": Package(("stateplane/bstar.py",), ("tests/stateplane/test_bstar.py",)),
    "schedule": Package(("timers/schedule.py",), ("tests/timers/test_schedule.py",)),
    "auth": Package(
        ("workers/auth/header.py", "workers/auth/digest.py", "workers/auth/nonce.py",
         "workers/auth/gate.py"),
        (
            "tests/workers/test_auth_header.py",
            "tests/workers/test_auth_nonce.py",
            "tests/workers/test_auth_gate.py",
        ),
    ),
}

#: Mutants that no test can kill because the program behaves the same with them, each with
#: the reason. Keys are mutmut's names (``mutmut show NAME`` prints the change); a listed
#: mutant that is killed, or no longer exists, is reported as stale.
EQUIVALENT: dict[str, str] = {
    # the arming sequence only orders entries and tells a live one from a dead one: any
    # start and any positive step give the same order and the same matches
    "timers.schedule.xǁScheduleǁ__init____mutmut_4": "_seq starts at 1 instead of 0",
    "timers.schedule.xǁScheduleǁarm__mutmut_8": "_seq steps by 2 instead of 1",
    # rule 4's fallback rank for an unknown peer is unreachable: SPLIT_BRAIN and DUAL_PASSIVE
    # come only from receive_heartbeat, which records the peer first
    "stateplane.bstar.xǁBinaryStarǁ_step__mutmut_12": "fallback rank (+1, '')",
    "stateplane.bstar.xǁBinaryStarǁ_step__mutmut_13": "fallback rank (-2, '')",
    "stateplane.bstar.xǁBinaryStarǁ_step__mutmut_14": "fallback rank (-1, 'XXXX')",
    "stateplane.bstar.xǁBinaryStarǁnext_timer__mutmut_5": 'float("INF") is float("inf")',
    # `not expired or due` also calls handle_timer when not due or already expired, where it
    # returns None and changes nothing
    "stateplane.bstar.xǁBinaryStarǁclient_request__mutmut_1": "and -> or before handle_timer",
    # the parser admits only ASCII in the URIs, Vias, tags and Call-IDs these encode, so the
    # codec name's case and the error handler never matter
    **{f"workers.proxy.x__hash__mutmut_{n}": "encoding of ASCII text" for n in (8, 10, 11, 12)},
    **{f"workers.proxy.x__name_addr__mutmut_{n}": "encoding of ASCII text" for n in (5, 7, 8, 9)},
    **{f"workers.proxy.x__via_text__mutmut_{n}": "encoding of ASCII text"
       for n in (15, 17, 18, 19)},
    # branch hash widths are free: every comparison is between two values this code made
    "workers.proxy.x__hash__mutmut_4": "the default 64-byte digest instead of the given size",
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_22": "loop part 5 bytes instead of 4",
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_42": "key part 9 bytes instead of 8",
    # what goes into the loop hash only needs to be the same each time this code computes it
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_14": "route text None for the loop hash",
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_16": "routes joined by 'XX,XX'",
    # a placeholder for a missing branch that can never match either way
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_6": "'XXXX' lacks the cookie as '' does",
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_32": "'XXXX' never ends with .<loop>",
    "workers.proxy.xǁStatelessProxyǁ_forward_response__mutmut_13": "'XXXX' lacks our prefix",
    "workers.proxy.xǁStatelessProxyǁ_forward_response__mutmut_64": "an empty or 'XXXX' tag: "
    "both forged",
    "workers.listeners.xǁListenersǁuri_is_us__mutmut_12": "transport 'XXXX' defaults like ''",
    # every caller passes attempt
    "workers.proxy.xǁStatelessProxyǁ_branch__mutmut_1": "default attempt 1 instead of 0",
    # no route-bound pipe matches a request that takes no route, whichever non-name it has
    "workers.proxy.xǁStatelessProxyǁ_check_rate__mutmut_2": "route None for a pre-routed one",
    "workers.proxy.xǁStatelessProxyǁ_check_rate__mutmut_7": "route None when none matches",
    # ... and "XXXX" likewise, unless a route were named so
    "workers.proxy.xǁStatelessProxyǁ_check_rate__mutmut_3": "route 'XXXX' for a pre-routed one",
    "workers.proxy.xǁStatelessProxyǁ_check_rate__mutmut_18": "route 'XXXX' when none matches",
    "workers.proxy.xǁStatelessProxyǁplan__mutmut_57": "_check_rate never reads the uri",
    # defaults no caller relies on: every call passes the argument
    "workers.listeners.xǁListenersǁis_us__mutmut_1": "transport default 'XXudpXX' (not tls)",
    "workers.listeners.xǁListenersǁis_us__mutmut_2": "transport default 'UDP' (not tls)",
    "workers.proxy.xǁStatelessProxyǁ_forward_request__mutmut_1": "known default True",
    "workers.proxy.xǁStatelessProxyǁforward__mutmut_1": "stateless branch hashes attempt 1: "
    "as stable, as distinct",
    # ASCII text (the parser refuses a non-ASCII Request-URI) encoded either way
    **{f"workers.proxy.xǁStatelessProxyǁforward__mutmut_{n}": "encoding of ASCII text"
       for n in (86, 88, 89, 90)},
    "workers.proxy.xǁStatelessProxyǁ_check_proxy_require__mutmut_9": "'LATIN-1' is 'latin-1'",
    # the parser guarantees a Via on every response and a number in Max-Forwards
    **{f"workers.proxy.xǁStatelessProxyǁ_pop_via__mutmut_{n}": "unreachable: no Via"
       for n in (16, 17, 18)},
    "workers.proxy.xǁStatelessProxyǁ_max_forwards_edit__mutmut_10": "unreachable: Max-Forwards "
    "0 is refused before, a non-number by the parser",
    # the Record-Route cache only saves rebuilding the same bytes
    "workers.proxy.xǁStatelessProxyǁ_record_route__mutmut_2": "no cache hit",
    "workers.proxy.xǁStatelessProxyǁ_record_route__mutmut_3": "no cache hit",
    # where the rewritten Route line goes: §7.3.1, the order of fields of different names is
    # not significant; after the old line's deletion its start and end are one position, and
    # a rewrite only happens when there were Route lines
    "workers.proxy.xǁStatelessProxyǁ_route_edits__mutmut_8": "Route after the request line",
    "workers.proxy.xǁStatelessProxyǁ_route_edits__mutmut_9": "lines always non-empty here",
    "workers.proxy.xǁStatelessProxyǁ_route_edits__mutmut_11": "end of the deleted line",
    # the top Via never starts the message (the request line does)
    "workers.proxy.xǁStatelessProxyǁ_received_edit__mutmut_36": "pos > 0",
    "workers.proxy.xǁStatelessProxyǁ_received_edit__mutmut_37": "pos >= 1",
    # a node key's length: token_bytes(None) is 32 bytes, 33 is as secret
    "workers.proxy.xǁStatelessProxyǁ__init____mutmut_24": "token_bytes(None)",
    "workers.proxy.xǁStatelessProxyǁ__init____mutmut_25": "token_bytes(33)",
    # no pipes configured: an empty RateLimiter admits everything, as None does
    "workers.proxy.xǁStatelessProxyǁ__init____mutmut_11": "RateLimiter([]) instead of None",
    # with hop set, _route returned no route or a to_request_uri one, which has no `to`
    "workers.proxy.xǁStatelessProxyǁplan__mutmut_86": "hop is None or ...",
    # searching for the top Via's text to the end of the message instead of the end of its
    # line: it is found first in its own line either way
    "workers.proxy.xǁStatelessProxyǁ_received_edit__mutmut_31": "find(..., start, None)",
    "workers.proxy.xǁStatelessProxyǁ_received_edit__mutmut_34": "find(..., start)",
    # the worker sets `now` before every batch it hands the proxy
    "workers.proxy.xǁStatelessProxyǁ__init____mutmut_14": "now starts at 1.0",
    # ingress/sip/scan.py's fast path for "\nCall-ID: ": a mutant that makes it miss, or
    # slice something CALL_ID_RE refuses, falls through to the regex, which finds the same
    **{f"ingress.sip.scan.x__scan__mutmut_{n}": "fast path misses, the regex answers alike"
       for n in (106, 112, 113, 114, 115, 116, 119, 121, 123, 124, 125, 126, 127, 129)},
    # the start line precedes every header, so the fast path never finds it at offset 0, and
    # the header section never ends at offset 0 once leading CRLFs are skipped
    "ingress.sip.scan.x__scan__mutmut_117": "i > 0",
    "ingress.sip.scan.x__scan__mutmut_118": "i >= 1",
    "ingress.sip.scan.x__scan__mutmut_18": "end <= 0",
    "ingress.sip.scan.x__scan__mutmut_19": "end < 1",
    "ingress.sip.scan.x__scan__mutmut_48": "lines >= cap: _over_cap decides",
    # the framer's sentinels and search starts: only their sign, or the cost, matters
    "ingress.sip.framer.xǁStreamFramerǁ__init____mutmut_3": "_scanned starts at 1",
    "ingress.sip.framer.xǁStreamFramerǁ__init____mutmut_6": "_body_end starts at -2",
    "ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_57": "_scanned reset to 1",
    "ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_60": "_body_end reset to -2",
    **{f"ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_{n}": "the terminator search "
       "starts earlier: same answer, more work" for n in (8, 10, 17, 19)},
    **{f"ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_{n}": "body_end and the "
       "terminator are never 0 (CRLFs are skipped first)" for n in (2, 3, 20, 21)},
    # codec names are case-insensitive, and the grammar admits only ASCII where these decode
    **{f"ingress.sip.grammar.x__parse_via__mutmut_{n}": "decoding ASCII text"
       for n in (22, 25, 33, 35, 36, 37)},
    # STALE (issue #16, third sitting): the parser's entries below were numbered before
    # _read_head's body moved to _split_head, the start line checks of _request/_response to
    # _request_line/_status_line and _number's to _read_number; a new ``./dev mutate sip`` run
    # must renumber them (the reasons still hold for the moved code)
    **{f"ingress.sip.parser.x__response__mutmut_{n}": "codec name case" for n in (49, 89, 102)},
    # the literal "SIP/2.0" (and a CSeq method of KNOWN_METHODS) only skip a check that
    # accepts them anyway: _version passes SIP/2.0, TOKEN_B_RE and decode give the same name
    **{f"ingress.sip.parser.x__response__mutmut_{n}": "fast path skipped, same answer"
       for n in (24, 25, 38, 39)},
    **{f"ingress.sip.scan.x__scan__mutmut_{n}": "fast path skipped, same answer"
       for n in (80, 81, 98, 99)},
    **{f"ingress.sip.parser.x__request__mutmut_{n}": "fast path skipped, same answer"
       for n in (10, 11, 24, 25)},
    **{f"ingress.sip.parser.x__request__mutmut_{n}": "codec name case" for n in (19, 36, 105)},
    # eleven digits are either a leading zero (int() reads it as the stripped path does) or
    # at least 10**10, over CSEQ_MAX either way
    "ingress.sip.parser.x__number__mutmut_2": "len(value) <= 11",
    "ingress.sip.grammar.x__parse_name_addr__mutmut_7": "codec name case",
    # NAME_ADDR_RE's display group starts and ends with a token or a quote: the LWS
    # around it is outside the group, so stripping white space of either kind finds none
    "ingress.sip.grammar.x__parse_name_addr__mutmut_21": "rstrip(None)",
    "ingress.sip.grammar.x__parse_name_addr__mutmut_22": "lstrip instead of rstrip",
    # split_commas of a value without a comma is [value.strip()], and values come stripped
    "ingress.sip.parser.x__fields__mutmut_29": "split_commas for every value",
    # the first piece of a split is the same however many splits follow
    "ingress.sip.parser.x__salvage__mutmut_7": "split(b' ')[0]",
    "ingress.sip.parser.x__salvage__mutmut_10": "split(b' ', 2)[0]",
    # the header-name memos: a miss, or a None stored, recomputes the same name
    **{f"ingress.sip.headers.x_canonical_name__mutmut_{n}": "memo skipped" for n in (1, 2, 15)},
    **{f"ingress.sip.headers.x_field_name__mutmut_{n}": "memo skipped" for n in (1, 2, 12)},
    "ingress.sip.headers.x_canonical_name__mutmut_8": "codec name case",
    # leading CRLFs are skipped first, so the head's end is past them, never at 0, and
    # they hold no "\n\n"
    "ingress.sip.parser.x__read_head__mutmut_20": "hdr_end <= 0",
    "ingress.sip.parser.x__read_head__mutmut_21": "hdr_end < 1",
    "ingress.sip.parser.x__read_head__mutmut_24": "bare-LF search from 0, not start",
    "ingress.sip.parser.x_parse_message__mutmut_24": "trusted None, as falsy as False",
    "ingress.sip.parser.x__read_head__mutmut_26": "bare-LF search from 0, not start",
    # the split's limit only bounds the work: over MAX_HEADER_LINES either way the count says
    # so, and the salvage takes the first MAX_HEADER_FIELDS + 1 elements either way
    "ingress.sip.parser.x__read_head__mutmut_45": "head split without a limit",
    "ingress.sip.parser.x__read_head__mutmut_48": "split limit one higher",
    # the literal "SIP/" test is the fast path of the upper() one after it
    **{f"ingress.sip.parser.x__read_head__mutmut_{n}": "fast path skipped, same answer"
       for n in (58, 60, 61)},
    # the line count is a pre-filter: _over_cap decides (as for the scan's mutant 48)
    "ingress.sip.parser.x__read_head__mutmut_67": "len(lines) >= cap + 1: _over_cap decides",
    "ingress.sip.parser.x__read_head__mutmut_68": "len(lines) > cap - 1: _over_cap decides",
    # _scan_headers' fast path: a miss (no cached name before the first colon) goes to the
    # slow path, which reads the line alike; only token names are cached, so the text before
    # the last colon, or a colon never found, is a miss
    **{f"ingress.sip.parser.x__scan_headers__mutmut_{n}": "fast path missed, same answer"
       for n in (8, 9, 10, 11)},
    **{f"ingress.sip.parser.x__scan_headers_slow__mutmut_{n}": "memo skipped, field_name "
       "answers alike" for n in (35, 36, 38)},
    # fold_end is read only after a fold set it
    "ingress.sip.parser.x__scan_headers_slow__mutmut_6": "fold_end starts at None",
    "ingress.sip.parser.x__scan_headers_slow__mutmut_7": "fold_end starts at 1",
    # digits only reach this strip: "X" is never there
    "ingress.sip.parser.x__number__mutmut_15": "lstrip(b'XX0XX')",
    # a validated gen-value (token, host or quoted-string) holds no white space but SP and
    # HTAB at its edges
    "ingress.sip.message.x_parse_params__mutmut_22": "value strip(None)",
    # `bad or scan_bad` reads "" as it reads None
    "ingress.sip.parser.x__read_head__mutmut_98": "bad starts as ''",
    # an empty value is dropped by the join's filter either way
    "ingress.sip.parser.x__unfold__mutmut_6": "[value, *folds] even when value is empty",
    # every error _read_head raises carries a salvage (_salvage_cut or _salvage), so the
    # fallback after `or` never runs
    **{f"ingress.sip.parser.x_salvage__mutmut_{n}": "unreachable fallback"
       for n in (4, 5, 6, 7, 8, 9, 10)},
    "ingress.sip.parser.x__response__mutmut_31": "trusted None, as falsy as False",
    # lstrip(b"\r\n") leaves no CR or LF first, so the last CRLF is never at offset 0
    "ingress.sip.parser.x__salvage_cut__mutmut_16": "cut < 0",
    # the CRLFs skipped before the start line hold no "\n\n"
    "ingress.sip.scan.x__scan__mutmut_22": "bare-LF search from None (0), not start",
    "ingress.sip.scan.x__scan__mutmut_24": "bare-LF search from 0, not start",
    # one octet past the blank line cannot complete a Call-ID or Content-Length line (each
    # needs its name and a colon after a line break), and salvage reads the head alone
    "ingress.sip.scan.x__scan__mutmut_148": "Call-ID search to end + 3",
    "ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_42": "salvage of head + 1 octet",
    "ingress.sip.framer.xǁStreamFramerǁnext_message__mutmut_50": "Content-Length read in "
    "head + 1 octet",
    # four octets that start "\r\n\r\n" are the ping, returned just before
    "ingress.sip.framer.xǁStreamFramerǁ_skip_crlf__mutmut_10": "len <= 4",
    "ingress.sip.framer.xǁStreamFramerǁ_skip_crlf__mutmut_11": "len < 5",
    # a buffer under 4 octets that is no ping's start keeps its CRLF until the next read,
    # which skips it before looking for the message: the same message comes out (only a
    # max_header_bytes under 2 could tell, and no configuration allows one)
    "ingress.sip.framer.xǁStreamFramerǁ_skip_crlf__mutmut_9": "short buffer: wait first",
    # None for 0 as a slice start or end, None for False where only truth is read
    **{f"ingress.sip.headers.x_split_commas__mutmut_{n}": "None for 0 or False"
       for n in (11, 13, 15, 29, 41)},
    **{f"ingress.sip.message.x__split_quoted__mutmut_{n}": "None for 0 or False"
       for n in (2, 4, 18)},
    "ingress.sip.serialize.x_splice__mutmut_2": "end None slices to the end",
    "ingress.sip.serialize.x_splice__mutmut_5": "pos None slices from 0",
    # the piece before the first ";" is never read (parse_params drops pieces[0])
    "ingress.sip.message.x__split_quoted__mutmut_3": "first piece from 1",
    # a text without '"' splits on ";" alike either way; validated names hold no white
    # space but SP and HTAB (continuations are unfolded before)
    "ingress.sip.message.x_parse_params__mutmut_4": "_split_quoted for every text",
    "ingress.sip.message.x_parse_params__mutmut_17": "strip(None)",
    # rfind(">") + 1 is 0 without a ">": the slice is the whole value
    "ingress.sip.serialize.x__is_to_without_tag__mutmut_14": "slice when no '>'",
    # the derived To-tag only needs to be stable for one request and differ between two
    "ingress.sip.serialize.x_build_response__mutmut_34": "lines joined by XX\nXX for the tag",
    "ingress.sip.parser.x__salvage__mutmut_13": "codec name case",
    "ingress.sip.parser.x__version__mutmut_14": "codec name case",
    # None for False where only the truth value is read: Transmit.retransmission (nothing in
    # the program reads it, tests read its truth) and _arm_retx's rearm
    **{f"workers.txn.{name}": "None for False, read for its truth only" for name in (
        "client.xǁNonInviteClientTransactionǁ_send_request__mutmut_2",
        "client.xǁNonInviteClientTransactionǁ_send_request__mutmut_16",
        "client.xǁNonInviteClientTransactionǁ_timer_e_proceeding__mutmut_9",
        "client.xǁNonInviteClientTransactionǁ_timer_e_trying__mutmut_9",
        "server.xǁInviteServerTransactionǁ_accept__mutmut_3",
        "server.xǁInviteServerTransactionǁ_complete__mutmut_3",
        "server.xǁInviteServerTransactionǁ_complete__mutmut_17",
        "server.xǁInviteServerTransactionǁ_send_2xx__mutmut_2",
        "server.xǁInviteServerTransactionǁ_start__mutmut_13",
        "server.xǁInviteServerTransactionǁ_timer_g__mutmut_9",
        "server.xǁNonInviteServerTransactionǁ_complete__mutmut_3",
        "server.xǁServerTransactionǁ_send_provisional__mutmut_3",
    )},
}

#: pytest options for every mutmut run: a derandomised hypothesis profile without deadlines
#: (tests/conftest.py), so a kill is reproducible and never a slow machine's timing
PYTEST_ARGS = ["--hypothesis-profile=mutation", "-p", "no:cacheprovider", "-q"]

KILLED = {1, 3, 24, -24, 36, 152, 255}  # test failure, pytest internal error, timeouts
NOT_RUN = {None, 2}  # not yet tried, or interrupted


def status(code: int | None) -> str:
    if code is None or code in NOT_RUN:
        return "not run"
    if code in KILLED:
        return "killed"
    return {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}.get(code, f"exit {code}")


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str) -> Path:
    """Lay out ``.mutmut/<name>/``: links to the tree and a pyproject.toml for this package."""
    pkg = PACKAGES[name]
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for top in TREE:
        link = work / top
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", top))
    config = (
        (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        + "\n[tool.mutmut]  # generated by tests/mutate.py\n"
        + f"source_paths = {toml_list(list(pkg.sources))}\n"
        + f"also_copy = {toml_list([t for t in TREE if t != 'tests'])}\n"
        + f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}\n"
        + f"pytest_add_cli_args_test_selection = {toml_list(list(pkg.tests))}\n"
        + 'on_dependency_change = "ignore"\n'
    )
    target = work / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != config:
        target.write_text(config, encoding="utf-8")
    return work


def verdicts(work: Path) -> dict[str, int | None]:
    """Every mutant of the package and its exit code, from mutmut's ``*.meta`` files."""
    out: dict[str, int | None] = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        out.update(data.get("exit_code_by_key", {}))
    return out


def mutmut(work: Path, args: list[str], deadline: float) -> int:
    """Run ``mutmut ARGS`` in ``work``; past ``deadline`` interrupt it (it saves and stops)."""
    exe = Path(sys.executable).with_name("mutmut")
    env = dict(os.environ, SIPLINE_MUTATION="1")  # tests/conftest.py: fresh caches per test
    proc = subprocess.Popen([str(exe), *args], cwd=work, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print(f"mutate: time budget spent, stopping mutmut in {work.name}", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGINT)  # mutmut catches it, stops its workers, saves
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()


def run(name: str, deadline: float, children: int, *, fresh: bool, recheck: bool) -> None:
    work = prepare(name)
    if fresh:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    if not recheck:
        mutmut(work, ["run", f"--max-children={children}"], deadline)
    survivors = [k for k, v in verdicts(work).items() if v is not None and v not in KILLED
                 and k not in EQUIVALENT]  # fmt: skip
    if survivors and time.monotonic() < deadline:
        # named mutants are run again whatever their verdict, so tests added or changed since
        # count; mutmut maps tests to functions once and re-maps only new tests, so drop the
        # map (one clean run of the package's tests rebuilds it)
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        mutmut(work, ["run", f"--max-children={children}", *survivors], deadline)


def report(name: str, *, show: bool) -> tuple[int, int, int]:
    """Print the package's score line (and its survivors); return (killed, counted, not run)."""
    work = WORK / name
    codes = verdicts(work)
    if not codes:
        print(f"{name}: no results yet (./dev mutate {name})")
        return 0, 0, 0
    equivalent = [k for k in codes if k in EQUIVALENT]
    counts = Counter(status(c) for k, c in codes.items() if k not in EQUIVALENT)
    stale = [k for k in EQUIVALENT if k.startswith(tuple(s.replace("/", ".").removesuffix(".py")
             for s in PACKAGES[name].sources)) and (k not in codes or codes[k] in KILLED)]  # fmt: skip
    counted = sum(counts.values()) - counts["not run"] - counts["skipped"]
    killed = counts["killed"]
    score = 100.0 * killed / counted if counted else 0.0
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{name}: {score:.1f}% killed ({killed}/{counted}; {detail}; "
          f"{len(equivalent)} equivalent)")  # fmt: skip
    for k in stale:
        print(f"  stale EQUIVALENT entry: {k}")
    if show:
        for k, c in sorted(codes.items()):
            if status(c) not in ("killed", "not run") and k not in EQUIVALENT:
                print(f"  {status(c)}: {k}")
    return killed, counted, counts["not run"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev mutate", description=__doc__.split("\n\n")[0])
    ap.add_argument("packages", nargs="*", metavar="package",
                    help=f"any of {', '.join(PACKAGES)} (default: all)")  # fmt: skip
    ap.add_argument("--budget", type=float, default=1500.0,
                    help="seconds for the whole run; a cut run resumes next time")  # fmt: skip
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    ap.add_argument("--report", action="store_true", help="only print scores and survivors")
    ap.add_argument("--table", action="store_true",
                    help="print the scores as the markdown table of docs/testing.md")  # fmt: skip
    ap.add_argument("--recheck", action="store_true",
                    help="only try the survivors again (after adding tests), no new mutants")  # fmt: skip
    ap.add_argument("--fresh", action="store_true",
                    help="forget earlier verdicts (a killed mutant is otherwise not retried)")  # fmt: skip
    args = ap.parse_args(argv)
    unknown = [p for p in args.packages if p not in PACKAGES]
    if unknown:
        ap.error(f"unknown package {', '.join(unknown)}: choose from {', '.join(PACKAGES)}")
    names = args.packages or list(PACKAGES)
    deadline = time.monotonic() + args.budget
    if not args.report:
        for name in names:
            if time.monotonic() >= deadline:
                print(f"mutate: no time left for {name}", file=sys.stderr)
                continue
            run(name, deadline, args.max_children, fresh=args.fresh, recheck=args.recheck)
    if args.table:
        print("| package | mutants | equivalent | killed | not killed | not run | score |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in names:
            codes = verdicts(WORK / name)
            eq = sum(k in EQUIVALENT for k in codes)
            counts = Counter(status(c) for k, c in codes.items() if k not in EQUIVALENT)
            counted = sum(counts.values()) - counts["not run"] - counts["skipped"]
            left = counted - counts["killed"]
            score = f"{100.0 * counts['killed'] / counted:.1f} %" if counted else "-"
            print(f"| {name} | {len(codes)} | {eq} | {counts['killed']} | {left} | "
                  f"{counts['not run']} | {score} |")  # fmt: skip
        return 0
    print()
    incomplete = False
    for name in names:
        incomplete |= report(name, show=True)[2] > 0
    return 1 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
