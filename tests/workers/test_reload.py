"""The validate-then-swap core of reloads (workers/routing/reload.py) and the worker's verbs
over it (workers/reloading.py): real files in tmp_path, the stateful core in memory (as
test_stateful.py), time as numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from conf.load import ConfigError, load
from conf.settings import Settings
from workers.auth.store import CredentialStore
from workers.proxy import StatelessProxy
from workers.reloading import Reloader
from workers.routing.dispatcher import Dispatcher
from workers.routing.health import State
from workers.routing.reload import (
    PREPARED_TTL_S,
    Candidate,
    ReloadRefused,
    Routing,
    changed_keys,
    check_restart_keys,
    commit,
    initial,
    prepare,
)
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import PORT, US, request
from .test_stateful import INVITE, UAS1, UAS2, Link, answer

UAS3 = "127.0.0.1:7003"
MD5 = "0" * 32


def conf_text(to: str = "a", *, mode: str = "stateful", a: str = f'"sip:{UAS1}", "sip:{UAS2}"',
              port: int = PORT, extra: str = "") -> str:  # fmt: skip
    return f"""
[node]
name = "n1"
run_dir = "/tmp/sipline-reload-test"

[[listen]]
transport = "udp"
address = "{US}"
port = {port}

[proxy]
mode = "{mode}"

[[destination_set]]
name = "a"
destinations = [{a}]

[[destination_set]]
name = "c"
destinations = ["sip:{UAS3}"]

[[route]]
name = "r"
to = "{to}"
{extra}
"""


class Files:
    """A configuration file the test rewrites, and the routing a worker started with."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.path = tmp_path / "sipline.toml"
        self.path.write_text(text)
        self.settings = load(self.path)
        self.dispatcher = new_dispatcher(self.settings)
        self.routing = initial(self.settings, RoutingTable(self.settings, self.dispatcher))

    def prepare(self, text: str, stateful: bool = True) -> Routing:
        self.path.write_text(text)
        return prepare(str(self.path), self.routing, stateful, new_dispatcher)


def new_dispatcher(s: Settings) -> Dispatcher:
    return Dispatcher(s.destination_set, s.listen, instance="t")


class TestPrepare:
    def test_a_good_file_builds_a_new_routing_and_leaves_the_current_one(self, tmp_path: Path) -> None:
        """The new routing sends to set c; the current one still sends to a, untouched."""
        f = Files(tmp_path, conf_text())
        new = f.prepare(conf_text(to="c"))
        assert new.table.routes[0].to is not None and new.table.routes[0].to.name == "c"
        assert f.routing.table.routes[0].to is not None and f.routing.table.routes[0].to.name == "a"
        assert new.digest != f.routing.digest
        assert new.table.dispatcher is not f.routing.table.dispatcher

    def test_the_same_bytes_give_the_same_digest(self, tmp_path: Path) -> None:
        """Two workers reading the same files agree (the ctl's commit condition)."""
        f = Files(tmp_path, conf_text())
        assert f.prepare(conf_text()).digest == f.prepare(conf_text()).digest == f.routing.digest

    @pytest.mark.parametrize(("text", "key"), [
        (conf_text(to="nosuch"), "route[0].to"),
        (conf_text() + "\n[[route]]\nname = \"x\"\nto = \n", "(syntax)"),
        (conf_text(port=PORT + 1), "listen[0].port"),
        (conf_text().replace('name = "n1"', 'name = "n2"'), "node.name"),
        (conf_text(mode="stateless"), "proxy.mode"),
        (conf_text() + "\n[transactions]\nt1_ms = 100\n", "transactions.t1_ms"),
    ], ids=["unknown-set", "syntax", "listener", "node-name", "proxy-mode", "timer"])  # fmt: skip
    def test_a_bad_or_restart_only_change_is_refused_naming_file_and_key(
            self, tmp_path: Path, text: str, key: str) -> None:  # fmt: skip
        """The message names the file and the key; the current routing is not touched."""
        f = Files(tmp_path, conf_text())
        before = f.routing.table.routes[0].to
        with pytest.raises(ReloadRefused) as err:
            f.prepare(text)
        assert str(f.path) in str(err.value) and key in str(err.value)
        assert f.routing.table.routes[0].to is before

    def test_restart_only_keys_say_restart(self, tmp_path: Path) -> None:
        """A key outside the reloadable sections is named with its running value."""
        old = load_text(conf_text(), tmp_path)
        new = dataclasses.replace(old, bus=dataclasses.replace(old.bus, hwm=old.bus.hwm + 1))
        assert list(changed_keys(old, new)) == ["bus.hwm"]
        with pytest.raises(ConfigError, match="needs a restart"):
            check_restart_keys(old, new, stateful=True)

    def test_reloadable_sections_are_not_restart_keys(self, tmp_path: Path) -> None:
        """Routes, sets, trusted sources and prefix tables may all change."""
        old = load_text(conf_text(), tmp_path)
        new = load_text(conf_text(to="c", a=f'"sip:{UAS2}"', extra=(
            '\n[[trusted]]\ncidr = "10.0.0.0/8"\n')), tmp_path)  # fmt: skip
        assert list(changed_keys(old, new)) == []

    def test_a_stateless_worker_refuses_a_stateful_route_and_probing(self, tmp_path: Path) -> None:
        """They need the stateful core, which a stateless worker does not run."""
        f = Files(tmp_path, conf_text(mode="stateless"))
        with pytest.raises(ReloadRefused, match=r"route\[0\]\.mode"):
            f.prepare(conf_text(mode="stateless", extra='mode = "stateful"'), stateful=False)
        probing = conf_text(mode="stateless").replace(
            'name = "c"', 'name = "c"\nprobe_interval_s = 5')  # fmt: skip
        with pytest.raises(ReloadRefused, match=r"destination_set\[1\]\.probe_interval_s"):
            f.prepare(probing, stateful=False)

    def test_a_bad_prefix_table_is_refused_with_its_line(self, tmp_path: Path) -> None:
        csv = tmp_path / "p.csv"
        csv.write_text("prefix,group\n44,a\n")
        table = f'\n[[prefix_table]]\nname = "p"\nfile = "{csv}"\n'
        f = Files(tmp_path, conf_text() + table)
        csv.write_text("prefix,group\n44,a\n33,nosuch\n")
        with pytest.raises(ReloadRefused) as err:
            f.prepare(conf_text() + table)
        assert f"{csv}:3: group" in str(err.value)
        csv.write_text("prefix,group\n44,c\n")
        new = f.prepare(conf_text() + table)
        assert new.digest != f.routing.digest  # the table's bytes count, not only the file's
        choice = new.table.prefixes.choose("p", "4412", "call-1", new.table.sets)
        assert choice is not None and choice.dset.name == "c"

    def test_credentials_files_are_read_again(self, tmp_path: Path) -> None:
        """A bad line refuses the reload; a good file's table goes to the store at the swap."""
        users, secret = tmp_path / "users", tmp_path / "secret"
        users.write_text(f"alice MD5 {MD5}\n")
        secret.write_text("s" * 32)
        auth = (f'\n[auth]\nenabled = true\nnonce_secret_file = "{secret}"\n'
                f'\n[[auth_realm]]\nrealm = "example.com"\ncredentials_file = "{users}"\n')  # fmt: skip
        f = Files(tmp_path, conf_text() + auth)
        store = CredentialStore(f.settings.auth_realm, 0)
        users.write_text("bob SHA-999 nothex\n")
        with pytest.raises(ReloadRefused, match=str(users)):
            f.prepare(conf_text() + auth)
        users.write_text(f"bob MD5 {'1' * 32}\n")
        new = f.prepare(conf_text() + auth)
        assert store.lookup_known("example.com", "MD5", "alice") == MD5
        store.replace_files(new.credentials)
        assert store.lookup_known("example.com", "MD5", "alice") is None
        assert store.lookup_known("example.com", "MD5", "bob") == "1" * 32


def load_text(text: str, tmp_path: Path) -> Settings:
    """``text`` as loaded settings, all with the same ``source`` (it is not a key)."""
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(text)
    return dataclasses.replace(load(path), source="x.toml")


class TestSwap:
    def test_destination_state_carries_over_by_set_and_uri(self, tmp_path: Path) -> None:
        """The operator's mark and the health of a URI still listed survive; a set whose
        table is unchanged keeps its sticky choices; a new URI starts fresh."""
        f = Files(tmp_path, conf_text())
        old = f.routing.table.dispatcher
        old.disable("a", f"sip:{UAS2}")
        old.sets["c"]._sticky["call-1"] = old.sets["c"].destinations[0]
        new = commit(f.prepare(conf_text(a=f'"sip:{UAS2}", "sip:{UAS1}", "sip:127.0.0.1:7009"')),
                     f.routing, 7)  # fmt: skip
        sets = new.table.dispatcher.sets
        assert new.generation == 7
        states = {d.uri: h.state for d, h in zip(sets["a"].destinations, sets["a"].health)}
        assert states == {f"sip:{UAS2}": State.DISABLED, f"sip:{UAS1}": State.UP,
                          "sip:127.0.0.1:7009": State.UP}  # fmt: skip
        assert "call-1" in sets["c"]._sticky
        # the old set, held by calls in progress, shares the health objects
        assert old.sets["a"].health[1] is sets["a"].health[0]

    def test_a_report_for_a_destination_of_a_changed_set_is_ignored(self, tmp_path: Path) -> None:
        """A call in progress reports on a destination the new routing no longer lists at
        that place: nothing breaks, nothing is counted against another destination."""
        f = Files(tmp_path, conf_text())
        gone = f.routing.table.sets["a"].destinations[1]
        new = commit(f.prepare(conf_text(a=f'"sip:{UAS1}"')), f.routing, 1)
        assert new.table.dispatcher.report(gone, None, 1.0) == []
        removed = dataclasses.replace(gone, set_name="nosuch")
        assert new.table.dispatcher.report(removed, None, 1.0) == []

    def test_a_transaction_in_progress_keeps_its_set(self, tmp_path: Path) -> None:
        """An INVITE sent to set a before the swap fails over inside set a after it (to UAS2),
        while a new INVITE goes to set c."""
        f = Files(tmp_path, conf_text())
        sl = StatelessProxy(f.settings, f.routing.table)
        link = Link(StatefulProxy(f.settings, sl))
        link.from_uac(INVITE)
        first = link.down[-1][0]
        new = commit(f.prepare(conf_text(to="c")), f.routing, 1)
        sl.routing, sl.trusted = new.table, new.table.trusted
        link.p.use_routing(new.table.dispatcher, new.route_modes)
        link.from_uas(answer(link.down[-1][1], 503), first)
        assert link.down[-1][0] == (UAS2 if first == UAS1 else UAS1)
        link.from_uac(request("INVITE", "sip:bob@127.0.0.1:5999", call_id="second@10.0.0.1",
                              via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKsecond"))  # fmt: skip
        assert link.down[-1][0] == UAS3

    def test_a_candidate_commits_only_with_its_digest_while_fresh(self, tmp_path: Path) -> None:
        f = Files(tmp_path, conf_text())
        c = Candidate(f.prepare(conf_text(to="c")), 100.0)
        assert c.committable(c.routing.digest, 101.0) is None
        assert "files changed" in str(c.committable("0" * 16, 101.0))
        assert "ago" in str(c.committable(c.routing.digest, 100.0 + PREPARED_TTL_S + 1))


class TestReloader:
    """The worker's verbs: what the control channel and SIGHUP call."""

    def make(self, tmp_path: Path, text: str) -> tuple[Files, Reloader, list[Routing]]:
        f = Files(tmp_path, text)
        applied: list[Routing] = []
        r = Reloader(f.routing, True, new_dispatcher, applied.append, lambda: 5.0)
        return f, r, applied

    def test_prepare_then_commit_swaps_once(self, tmp_path: Path) -> None:
        f, r, applied = self.make(tmp_path, conf_text())
        h = r.handlers()
        f.path.write_text(conf_text(to="c"))
        with capture_logs() as logs:
            p = h["reload_prepare"]({})
            assert p["reload"] == "prepared" and p["generation"] == 0 and applied == []
            done = h["reload_commit"]({"digest": p["digest"], "generation": 3})
        assert done["reload"] == "committed" and done["generation"] == 3
        assert [a.generation for a in applied] == [3] and r.current is applied[0]
        assert [e["event"] for e in logs] == ["routing_reloaded"]
        again = h["reload_commit"]({"digest": p["digest"], "generation": 4})
        assert again["reload"] == "refused" and again["error"] == "nothing prepared"

    def test_a_refused_prepare_answers_and_logs_why(self, tmp_path: Path) -> None:
        f, r, applied = self.make(tmp_path, conf_text())
        f.path.write_text(conf_text(to="nosuch"))
        with capture_logs() as logs:
            p = r.handlers()["reload_prepare"]({})
        assert p["reload"] == "refused" and "route[0].to" in p["error"] and str(f.path) in p["error"]
        assert [e["event"] for e in logs] == ["reload_refused"] and applied == []
        assert r.candidate is None

    @pytest.mark.parametrize("args", [{}, {"digest": 5, "generation": 1},
                                      {"digest": "x", "generation": "1"},
                                      {"digest": "x", "generation": -1},
                                      {"digest": "x" * 5000, "generation": 1}])  # fmt: skip
    def test_forged_commit_arguments_change_nothing(self, tmp_path: Path,
                                                    args: dict[str, Any]) -> None:  # fmt: skip
        _f, r, applied = self.make(tmp_path, conf_text())
        r.handlers()["reload_prepare"]({})
        assert r.handlers()["reload_commit"](args)["reload"] == "refused"
        assert applied == []

    def test_abort_drops_the_candidate(self, tmp_path: Path) -> None:
        _f, r, applied = self.make(tmp_path, conf_text())
        p = r.handlers()["reload_prepare"]({})
        assert r.handlers()["reload_abort"]({})["dropped"] is True
        assert r.handlers()["reload_commit"]({"digest": p["digest"], "generation": 1})[
            "reload"] == "refused"  # fmt: skip
        assert applied == []

    def test_sighup_reloads_as_the_next_generation_or_not_at_all(self, tmp_path: Path) -> None:
        f, r, applied = self.make(tmp_path, conf_text())
        f.path.write_text(conf_text(to="nosuch"))
        with capture_logs() as logs:
            r.reload_now()
        assert applied == [] and [e["event"] for e in logs] == ["reload_refused"]
        f.path.write_text(conf_text(to="c"))
        r.reload_now()
        assert [a.generation for a in applied] == [1] and not r.reading

    def test_one_read_at_a_time(self, tmp_path: Path) -> None:
        """While a read runs off the loop, a second prepare or SIGHUP is refused; when it
        ends, its candidate commits."""
        f = Files(tmp_path, conf_text())
        pending: list[Any] = []
        applied: list[Routing] = []
        r = Reloader(f.routing, True, new_dispatcher, applied.append, lambda: 5.0,
                     lambda work, then: pending.append((work, then)) or {"later": True})  # fmt: skip
        f.path.write_text(conf_text(to="c"))
        assert r.handlers()["reload_prepare"]({}) == {"later": True}
        assert "already" in r.handlers()["reload_prepare"]({})["error"]
        r.reload_now()
        assert len(pending) == 1 and applied == []
        work, then = pending.pop()
        p = then(work())
        assert p["reload"] == "prepared" and not r.reading
        assert r.handlers()["reload_commit"]({"digest": p["digest"], "generation": 1})[
            "reload"] == "committed"  # fmt: skip

    def test_destinations_are_marked_and_unmarked(self, tmp_path: Path) -> None:
        _f, r, _ = self.make(tmp_path, conf_text())
        mark = r.handlers()["destination_state"]
        out = mark({"set": "a", "uri": f"sip:{UAS1}", "state": "inactive"})
        assert out == {"changed": True, "set": "a", "uri": f"sip:{UAS1}", "state": "disabled"}
        assert all(r.table.sets["a"].select(f"c{i}").uri == f"sip:{UAS2}" for i in range(20))
        assert mark({"set": "a", "uri": f"sip:{UAS1}", "state": "active"})["state"] == "up"
        assert "no destination" in mark({"set": "a", "uri": "sip:x", "state": "active"})["error"]
        assert "expected" in mark({"set": "a", "uri": f"sip:{UAS1}", "state": "down"})["error"]


def test_an_unexpected_error_while_reading_is_a_refusal(tmp_path: Path) -> None:
    """A check that raises something unforeseen refuses the reload and frees the reader."""
    f = Files(tmp_path, conf_text())

    def broken(_: Settings) -> Dispatcher:
        raise RuntimeError("bug")

    r = Reloader(f.routing, True, broken, lambda _: None, lambda: 5.0)
    out = r.handlers()["reload_prepare"]({})
    assert out["reload"] == "refused" and "RuntimeError('bug')" in out["error"]
    assert not r.reading and r.candidate is None
