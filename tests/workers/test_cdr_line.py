"""The CDR's fast paths give the text the plain ones give (issue #16: CPU per call)."""

from __future__ import annotations

import datetime
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dialogstate.msgs import iso, iso_datetime
from workers.dialogs.cdr import _ENCODE

#: 1970 to the last second of year 9999, and a little past both ends
WALLS = st.floats(min_value=-1e6, max_value=253_402_300_799.999, allow_nan=False)


class TestIso:
    @settings(max_examples=2000, deadline=None)
    @given(WALLS)
    def test_same_text_as_datetime(self, wall: float) -> None:
        """Any wall time formats as datetime formats it, rounding included."""
        assert iso(wall) == iso_datetime(wall)

    @given(st.integers(min_value=0, max_value=4_000_000_000), st.integers(0, 999_999))
    def test_microsecond_edges(self, sec: int, us: int) -> None:
        """Fractions at the edge of a millisecond or a second round as datetime rounds them."""
        for wall in (sec + us / 1e6, sec + 0.9999995, sec + 0.0005, float(sec) - 1e-7):
            assert iso(wall) == iso_datetime(wall)

    def test_calls_in_one_second_share_the_cached_prefix(self) -> None:
        """The per-second cache never leaks one second's text into the next."""
        base = datetime.datetime(2026, 12, 7, 13, 4, 59, tzinfo=datetime.UTC).timestamp()
        assert iso(base + 0.25) == "2026-12-07T13:04:59.250Z"
        assert iso(base + 0.999) == "2026-12-07T13:04:59.999Z"
        assert iso(base + 1.001) == "2026-12-07T13:05:00.001Z"
        assert iso(base + 0.5) == "2026-12-07T13:04:59.500Z"


CDR_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text()


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), CDR_VALUES | st.lists(CDR_VALUES, max_size=3), max_size=12))
def test_file_line_as_json_dumps_writes_it(cdr: dict[str, object]) -> None:
    """The CDR file's encoder, built once, writes ``json.dumps``' compact non-ASCII text."""
    assert _ENCODE(cdr) == json.dumps(cdr, separators=(",", ":"), ensure_ascii=False)
