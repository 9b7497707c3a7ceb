"""conf/logging.py's own timestamp and JSON serializer write the text structlog's
``TimeStamper(fmt="iso", utc=True)`` and ``JSONRenderer()`` write (issue #16: they are
cheaper, and a worker logs a CDR line per call)."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.processors import _json_fallback_handler

from conf.logging import dumps, iso_utc

#: 0001-01-01 to 9999-12-31, as epoch nanoseconds: every instant datetime can hold
NS = st.integers(-62_135_596_800 * 10**9, 253_402_300_799 * 10**9 + 999_999_999)


def reference(ns: int) -> str:
    """What ``datetime.now(UTC).isoformat()`` writes for the instant ``ns`` (``now`` floors
    the clock to microseconds), "+00:00" as "Z", as structlog's stamper does."""
    sec, rest = divmod(ns, 10**9)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    when = epoch + datetime.timedelta(seconds=sec, microseconds=rest // 1000)
    return when.isoformat().replace("+00:00", "Z")


@settings(max_examples=2000, deadline=None)
@given(NS)
def test_timestamp_as_datetime_writes_it(ns: int) -> None:
    """Any instant, the fast path (one second's text kept) and the slow path alike."""
    assert iso_utc(ns) == reference(ns)
    assert iso_utc(ns) == reference(ns)  # the second call takes the kept second


def test_timestamp_edges() -> None:
    """A whole second has no fraction (isoformat leaves it out), the microsecond is floored,
    and the kept second is not reused for the next one."""
    base = 1_765_000_000 * 10**9
    assert iso_utc(base) == reference(base) and "." not in iso_utc(base)
    assert iso_utc(base + 999) == reference(base)  # under a microsecond: floored away
    assert iso_utc(base + 1_999).endswith(".000001Z")
    assert iso_utc(base + 10**9 - 1) == reference(base + 10**9 - 1)
    assert iso_utc(base + 10**9) == reference(base + 10**9)


class Custom:
    def __structlog__(self) -> str:
        return "custom!"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.sampled_from([Custom(), Opaque(), math.nan, math.inf, -math.inf]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), JSONISH, max_size=8))
def test_json_as_json_dumps_writes_it(event_dict: dict[str, Any]) -> None:
    """Every value, non-ASCII text, NaN, objects with ``__structlog__`` or only a repr:
    the text ``JSONRenderer()``'s ``json.dumps(..., default=...)`` writes."""
    assert dumps(event_dict) == json.dumps(event_dict, default=_json_fallback_handler)
