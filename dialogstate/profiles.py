"""Dialog profiles and call limits (OpenSIPS ``create_dialog_profiles`` / ``set_dlg_profile`` /
``get_profile_size``), sans-IO.

Rules:
1. A profile counts live dialogs, as one group (``with_value = false``) or per value
   (``with_value = true``: one count per caller, per trunk ...). What gives the value is one of
   ``VALUE_FROM``, read from the initial INVITE; a dialog whose value would be empty is not a
   member of that profile.
2. A dialog's membership is decided once, from its initial INVITE (``members``), checked
   against the limits before the INVITE is forwarded (``check``), counted when the dialog is
   created (``add``) and released exactly once when it ends (``remove``). Counts never go
   below zero and a value whose count reaches zero is forgotten, so the table of values
   holds only values with live dialogs.
3. A limit applies to the profile as a whole, or to each value of a profile with values: a
   new call is refused when its dialog would take a count above the limit.
4. Memberships are tuples of ``(profile name, value)``. Those of profiles without values are
   shared (a bounded intern table), so 100 000 calls of one trunk hold one tuple between them;
   those with values are not (a value per caller would fill the table for no sharing), but
   their ``(name, "")`` pairs are.
5. A limit counts the node's dialogs (the cluster's, with ``[dialogs] profiles_cluster``),
   not only this worker's: ``remote`` holds the other workers' counts and ``check`` adds
   them (``workers/dialogs/profileshare.py`` keeps it); ``changed`` collects the keys of the
   ``track``ed (limited) profiles whose count moved, for the worker to tell the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from conf.settings import DialogProfile
from ingress.sip.message import Request

#: a dialog's memberships: ``((profile name, value), ...)``; value "" for profiles without
Members = tuple[tuple[str, str], ...]

#: equal membership tuples kept shared at most (rule 4): beyond it new ones are not shared
INTERN_MAX = 65_536

_VALUE: dict[str, Callable[[Request, str, str], str]] = {
    "ruri_user": lambda req, ip, route: req.uri.user or "",
    "from_user": lambda req, ip, route: req.from_.uri.user or "",
    "to_user": lambda req, ip, route: req.to.uri.user or "",
    "source_ip": lambda req, ip, route: ip,
    "route": lambda req, ip, route: route,
}
#: what may fill a profile's value (``[[dialog_profile]] value_from``)
VALUE_FROM = frozenset(_VALUE)

_REASONS = {486: "Busy Here", 503: "Service Unavailable"}


class Profiles:
    """The profiles of one worker and their live counts."""

    def __init__(self, defs: Iterable[DialogProfile]) -> None:
        self.defs = {p.name: p for p in defs}
        #: without value: name -> count; with value: name -> {value: count}
        self._flat: dict[str, int] = {n: 0 for n, p in self.defs.items() if not p.with_value}
        self._valued: dict[str, dict[str, int]] = {
            n: {} for n, p in self.defs.items() if p.with_value
        }
        self._intern: dict[Members, Members] = {}
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}  # (name, "") pairs, one each
        #: calls refused per profile since start
        self.refused: dict[str, int] = {n: 0 for n in self.defs}
        #: other workers' counts by (name, value), kept by ``workers.dialogs.profileshare`` (rule 5)
        self.remote: dict[tuple[str, str], int] = {}
        #: profiles whose changed keys are collected in ``changed`` for sharing
        self.track: frozenset[str] = frozenset()
        self.changed: set[tuple[str, str]] = set()

    def members(self, req: Request, source_ip: str, route: str) -> Members:
        """The profiles (and values) a dialog created by ``req`` joins (rules 1 and 2)."""
        out: list[tuple[str, str]] = []
        for name, p in self.defs.items():
            if p.routes and route not in p.routes:
                continue
            value = _VALUE[p.value_from](req, source_ip, route) if p.with_value else ""
            if p.with_value and not value:
                continue
            out.append((name, value))
        return self.intern(tuple(out))

    def intern(self, members: Members) -> Members:
        """``members``, shared with an equal tuple already held (rule 4)."""
        if not members:
            return ()
        if any(value for _, value in members):
            pairs = self._pairs
            return tuple(m if m[1] else pairs.setdefault(m, m) for m in members)
        held = self._intern.get(members)
        if held is not None:
            return held
        if len(self._intern) < INTERN_MAX:
            self._intern[members] = members
        return members

    def check(self, members: Members) -> tuple[int, str] | None:
        """None when a new dialog with ``members`` fits every limit, else the status and
        reason to refuse it with (rule 3). The first profile over its limit counts the
        refusal."""
        remote = self.remote
        for name, value in members:
            p = self.defs[name]
            if p.limit and (self.size(name, value if p.with_value else None)
                            + remote.get((name, value), 0)) >= p.limit:  # fmt: skip
                self.refused[name] += 1
                status = p.over_limit_status
                return status, _REASONS.get(status, "Busy Here")
        return None

    def add(self, members: Members) -> None:
        for name, value in members:
            if name in self.track:
                self.changed.add((name, value))
            values = self._valued.get(name)
            if values is None:
                self._flat[name] += 1
            else:
                values[value] = values.get(value, 0) + 1

    def remove(self, members: Members) -> None:
        for name, value in members:
            if name in self.track:
                self.changed.add((name, value))
            values = self._valued.get(name)
            if values is None:
                if self._flat.get(name, 0) > 0:
                    self._flat[name] -= 1
                continue
            n = values.get(value, 0)
            if n > 1:
                values[value] = n - 1
            else:
                values.pop(value, None)

    def size(self, name: str, value: str | None = None) -> int:
        """Live dialogs in profile ``name`` (OpenSIPS ``get_profile_size``): with a value,
        those of that value; without, all of them."""
        values = self._valued.get(name)
        if values is None:
            return self._flat.get(name, 0)
        if value is None:
            return sum(values.values())
        return values.get(value, 0)

    def limit_view(self) -> dict[str, int]:
        """What this worker counts against each limit it holds: its own dialogs plus the
        other workers' (and nodes') as last heard, by ``name`` or ``name/value``; keys at 0
        are left out. A refusal is explained by this, not by ``view``."""
        out: dict[str, int] = {}
        for name, p in self.defs.items():
            if not p.limit:
                continue
            if p.with_value:
                values = set(self._valued[name])
                values.update(v for (n, v), c in self.remote.items() if n == name and c)
                for value in values:
                    if n := self._valued[name].get(value, 0) + self.remote.get((name, value), 0):
                        out[f"{name}/{value}"] = n
            elif n := self._flat[name] + self.remote.get((name, ""), 0):
                out[name] = n
        return out

    def view(self) -> dict[str, int | dict[str, int]]:
        """Every profile's size: a count, or ``{value: count}`` for a profile with values."""
        out: dict[str, int | dict[str, int]] = dict(self._flat)
        for name, values in self._valued.items():
            out[name] = dict(values)
        return out

    def clear(self) -> None:
        """Forget every count (before a ``restore`` of the whole dialog table)."""
        for name in self._flat:
            self._flat[name] = 0
            if name in self.track:
                self.changed.add((name, ""))
        for name, values in self._valued.items():
            if name in self.track:
                self.changed.update((name, v) for v in values)
            values.clear()
