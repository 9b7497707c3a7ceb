"""What the section dataclasses share: the numeric range of a field, kept in its metadata
(``min``/``max``), where the loader (``conf/checks/schema.py``) and the docs generator both
read it."""

from __future__ import annotations


def _range(lo: float, hi: float) -> dict[str, float]:
    return {"min": lo, "max": hi}
