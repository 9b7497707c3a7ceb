"""Who hands dialogs over, as named in ``HANDED`` frames (``docs/dialogs.md`` "Dialogs follow
their Call-ID"): shared by the workers that wait for a source and the state plane that is one.
"""

from __future__ import annotations

#: the state plane's name as a source
STATEPLANE = "stateplane"


def vanished_source(worker: str) -> str:
    """The source a vanished worker's dialogs come from: the state plane, for that worker."""
    return f"{STATEPLANE}:{worker}"
