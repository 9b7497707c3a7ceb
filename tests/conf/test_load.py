"""conf.load: a bad configuration names the file, the key, what was expected and what was found."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conf import load as loader
from conf.load import ConfigError, config_path, from_dict, load
from conf.rundir import default_run_dir
from conf.settings import Bus, Listener, Log, Node, Proxy, Settings, Tcp
from stateplane.main import runs_replication

REPO = Path(__file__).resolve().parents[2]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "conf" / "sipline.toml"

#: the smallest valid routing section, to which tests add one mistake
DSET = {"name": "uas", "destinations": ["sip:127.0.0.1:5080"]}
ROUTE = {"name": "default", "to": "uas"}


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "conf/test.toml")
    return info.value


def write(tmp_path: Path, text: str, name: str = "sipline.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


class TestShippedConfig:
    def test_loads(self) -> None:
        """conf/sipline.toml is valid and records where it came from."""
        s = load(SHIPPED)
        assert s.source == str(SHIPPED)
        assert [(x.transport, x.address, x.port) for x in s.listen] == [
            ("udp", "127.0.0.1", 5060),
            ("tcp", "127.0.0.1", 5060),
        ]
        assert s.destination_set[0].destinations == ["sip:127.0.0.1:5080"]
        assert s.route[0].to == s.destination_set[0].name

    def test_equals_defaults_where_it_sets_nothing(self) -> None:
        """Every section the shipped file leaves out, or restates, is exactly the default."""
        s = load(SHIPPED)
        defaults = _resolved(Settings())
        for section in ("node", "listen", "tcp", "bus", "proxy", "log"):
            assert getattr(s, section) == getattr(defaults, section), section

    def test_sets_only_known_keys_with_default_values(self) -> None:
        """Each key the shipped file sets outside routing restates its default (no hidden tuning)."""
        data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
        defaults = Settings()
        for section, table in data.items():
            if section in ("destination_set", "route", "listen"):
                continue
            for key, value in table.items():
                assert getattr(getattr(defaults, section), key) == value, f"{section}.{key}"

    def test_empty_file_is_the_defaults(self, tmp_path: Path) -> None:
        """An empty file gives the dataclass defaults: no routes, two listeners."""
        s = load(write(tmp_path, ""))
        assert dataclasses.replace(s, source="<defaults>") == _resolved(Settings())

    def test_unset_run_dir_is_the_private_default(self, tmp_path: Path) -> None:
        """No run_dir: the node's private default (conf/rundir.py rule 1), never /tmp/sipline."""
        s = load(write(tmp_path, '[node]\nname = "edge"\n'))
        assert s.node.run_dir == default_run_dir("edge")
        assert s.node.run_dir != "/tmp/sipline"

    def test_run_dir_is_normalised(self, tmp_path: Path) -> None:
        """A trailing or doubled slash is dropped: announced endpoints must compare equal."""
        s = load(write(tmp_path, '[node]\nrun_dir = "/tmp//x/run/"\n'))
        assert s.node.run_dir == "/tmp/x/run"

    def test_unknown_run_group_is_refused(self, tmp_path: Path) -> None:
        """run_group must name a group that exists."""
        e = error({"node": {"run_group": "no-such-group-here"}})
        assert e.key == "node.run_group"
        assert "existing group" in e.expected


def _resolved(s: Settings) -> Settings:
    """``s`` with the run directory the loader fills in when none is set."""
    return dataclasses.replace(s, node=dataclasses.replace(
        s.node, run_dir=default_run_dir(s.node.name)))


class TestMessage:
    def test_format(self) -> None:
        """str() is 'file: key: expected X, found Y', as an operator reads it."""
        e = error({"listen": [{"transport": "udp", "port": 70000}]})
        assert (
            str(e)
            == "conf/test.toml: listen[0].port: expected a number from 1 to 65535, found 70000"
        )
        assert (e.file, e.key, e.expected, e.found) == (
            "conf/test.toml",
            "listen[0].port",
            "a number from 1 to 65535",
            70000,
        )

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            ('a"b', '"a\\"b"'),
            (True, "true"),
            (False, "false"),
            ([1, "x"], '[1, "x"]'),
            ({"a": 1}, "{a = 1}"),
            (1.5, "1.5"),
            ("x" * 200, '"' + "x" * 56 + "..."),
        ],
    )
    def test_values_shown_as_toml(self, value: object, shown: str) -> None:
        """Found values are written the way TOML writes them, and long ones are cut."""
        assert loader.show(value) == shown

    def test_large_ranges_are_not_scientific(self) -> None:
        """Range bounds print as plain numbers (1000000, not 1e+06)."""
        e = error({"tcp": {"max_connections": 0}})
        assert e.expected == "a number from 1 to 1000000"


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("data", "key", "section"),
        [
            ({"nodes": {}}, "nodes", "a section (node, listen, tcp"),
            ({"node": {"nmae": "x"}}, "node.nmae", "a key of [node] (name, run_dir, run_group)"),
            (
                {"listen": [{"transport": "udp", "prot": 1}]},
                "listen[0].prot",
                "a key of [[listen]]",
            ),
            ({"tcp": {"max_header": 1}}, "tcp.max_header", "a key of [tcp]"),
            ({"bus": {"hwm_msgs": 1}}, "bus.hwm_msgs", "a key of [bus]"),
            ({"proxy": {"recordroute": True}}, "proxy.recordroute", "a key of [proxy]"),
            ({"log": {"format": "json"}}, "log.format", "a key of [log]"),
            (
                {"destination_set": [{**DSET, "algo": "x"}], "route": [ROUTE]},
                "destination_set[0].algo",
                "a key of [[destination_set]]",
            ),
            (
                {"destination_set": [DSET], "route": [ROUTE, {**ROUTE, "name": "b", "method": []}]},
                "route[1].method",
                "a key of [[route]]",
            ),
        ],
    )
    def test_refused_at_every_level(self, data: dict[str, Any], key: str, section: str) -> None:
        """An unknown key anywhere names its full path and the keys that table accepts."""
        e = error(data)
        assert e.key == key
        assert e.expected.startswith(section)
        assert str(e.found).startswith("an unknown key")

    def test_suggests_the_closest_key(self) -> None:
        """A misspelt key gets a 'did you mean' hint."""
        e = error({"node": {"nmae": "x"}})
        assert str(e).endswith("found an unknown key (did you mean name?)")

    def test_quoted_key_is_shown_quoted(self) -> None:
        """A quoted TOML key with dots or spaces is quoted in the key path."""
        e = error({"node": {"run dir": "/x"}})
        assert e.key == 'node."run dir"'
        assert error({"a.b": 1}).key == '"a.b"'

    def test_source_is_not_a_key(self) -> None:
        """Settings.source records the file; a TOML 'source' key cannot set it."""
        e = error({"source": "elsewhere.toml"})
        assert e.key == "source" and str(e.found).startswith("an unknown key")


class TestTypes:
    @pytest.mark.parametrize(
        ("data", "key", "expected", "found"),
        [
            ({"listen": [{"transport": "udp", "port": "5060"}]}, "listen[0].port", "an integer", '"5060" (a string)'),
            ({"listen": [{"transport": "udp", "port": 5060.0}]}, "listen[0].port", "an integer", "5060.0 (a float)"),
            ({"listen": [{"transport": "udp", "port": True}]}, "listen[0].port", "an integer", "true (a boolean)"),
            ({"tcp": {"max_body_bytes": False}}, "tcp.max_body_bytes", "an integer", "false (a boolean)"),
            ({"proxy": {"record_route": 1}}, "proxy.record_route", "true or false", "1 (an integer)"),
            ({"proxy": {"record_route": "yes"}}, "proxy.record_route", "true or false", '"yes" (a string)'),
            ({"node": {"name": 7}}, "node.name", "a string", "7 (an integer)"),
            ({"log": {"stats_interval_s": "5"}}, "log.stats_interval_s", "a number", '"5" (a string)'),
            ({"log": {"stats_interval_s": True}}, "log.stats_interval_s", "a number", "true (a boolean)"),
            ({"tcp": 5}, "tcp", "a table ([tcp])", "5 (an integer)"),
            ({"tcp": [{}]}, "tcp", "a table ([tcp])", "an array of tables"),
            ({"listen": {"transport": "udp"}}, "listen", "an array of tables ([[listen]])", "a single table ([listen])"),
            ({"listen": ["udp"]}, "listen[0]", "a table ([[listen]])", '"udp" (a string)'),
            ({"listen": "udp"}, "listen", "an array of tables ([[listen]])", '"udp" (a string)'),
            ({"proxy": {"proxy_require_supported": "100rel"}}, "proxy.proxy_require_supported", "an array of strings", '"100rel" (a string)'),
            ({"proxy": {"proxy_require_supported": [1]}}, "proxy.proxy_require_supported[0]", "a string", "1 (an integer)"),
            ({"proxy": {"proxy_require_supported": {"a": 1}}}, "proxy.proxy_require_supported", "an array of strings", "a table"),
            ({"log": {"level": 3}}, "log.level", 'one of "debug", "info", "warning", "error"', "3 (an integer)"),
        ],
    )  # fmt: skip
    def test_wrong_type(self, data: dict[str, Any], key: str, expected: str, found: str) -> None:
        """TOML is typed: a value of the wrong type is refused with both types named."""
        e = error(data)
        assert (e.key, e.expected, str(e.found)) == (key, expected, found)

    def test_int_widens_to_float(self) -> None:
        """An integer where seconds are a float is accepted as that float."""
        s = from_dict({"log": {"stats_interval_s": 2}, "tcp": {"idle_timeout_s": 30}})
        assert s.log.stats_interval_s == 2.0 and isinstance(s.log.stats_interval_s, float)
        assert isinstance(s.tcp.idle_timeout_s, float)

    def test_datetime_is_named(self, tmp_path: Path) -> None:
        """A TOML date where a string belongs is named as a date/time."""
        with pytest.raises(ConfigError) as info:
            load(write(tmp_path, "[node]\nname = 2024-01-01\n"))
        assert info.value.found == "2024-01-01 (a date/time)"


class TestRanges:
    @pytest.mark.parametrize(
        ("data", "key", "expected"),
        [
            ({"listen": [{"transport": "udp", "port": 0}]}, "listen[0].port", "a number from 1 to 65535"),
            ({"listen": [{"transport": "udp", "port": 65536}]}, "listen[0].port", "a number from 1 to 65535"),
            ({"listen": [{"transport": "udp", "port": -1}]}, "listen[0].port", "a number from 1 to 65535"),
            ({"tcp": {"max_header_bytes": 100}}, "tcp.max_header_bytes", "a number from 512 to 1048576"),
            ({"tcp": {"max_body_bytes": -1}}, "tcp.max_body_bytes", "a number from 0 to 16777216"),
            ({"tcp": {"message_deadline_ms": 1}}, "tcp.message_deadline_ms", "a number from 10 to 600000"),
            ({"tcp": {"max_reads_per_message": 0}}, "tcp.max_reads_per_message", "a number from 1 to 1000000"),
            ({"tcp": {"idle_timeout_s": 0.5}}, "tcp.idle_timeout_s", "a number from 1 to 86400"),
            ({"tcp": {"write_queue_bytes": 1}}, "tcp.write_queue_bytes", "a number from 4096 to 67108864"),
            ({"tcp": {"connect_timeout_ms": 0}}, "tcp.connect_timeout_ms", "a number from 10 to 120000"),
            ({"bus": {"heartbeat_ms": 5}}, "bus.heartbeat_ms", "a number from 10 to 10000"),
            ({"bus": {"liveness": 1}}, "bus.liveness", "a number from 2 to 100"),
            ({"bus": {"hwm": 0}}, "bus.hwm", "a number from 1 to 1000000"),
            ({"bus": {"max_batch": 100_000}}, "bus.max_batch", "a number from 1 to 65536"),
            ({"bus": {"max_pending": 0}}, "bus.max_pending", "a number from 1 to 1000000"),
            ({"bus": {"retry_after_s": 0}}, "bus.retry_after_s", "a number from 1 to 3600"),
            ({"proxy": {"default_max_forwards": 256}}, "proxy.default_max_forwards", "a number from 1 to 255"),
            ({"log": {"stats_interval_s": 0.01}}, "log.stats_interval_s", "a number from 0.1 to 3600"),
            ({"log": {"stats_interval_s": float("nan")}}, "log.stats_interval_s", "a number from 0.1 to 3600"),
            ({"log": {"stats_interval_s": float("inf")}}, "log.stats_interval_s", "a number from 0.1 to 3600"),
        ],
    )  # fmt: skip
    def test_out_of_range(self, data: dict[str, Any], key: str, expected: str) -> None:
        """A number outside its range is refused with the range."""
        e = error(data)
        assert (e.key, e.expected) == (key, expected)

    @pytest.mark.parametrize("port", [1, 65535])
    def test_bounds_are_inclusive(self, port: int) -> None:
        """The ends of a range are valid values."""
        assert from_dict({"listen": [{"transport": "udp", "port": port}]}).listen[0].port == port

    def test_connections_per_ip_within_total(self) -> None:
        """A per-source cap above the process cap is a mistake, not a setting."""
        e = error({"tcp": {"max_connections": 10, "max_connections_per_ip": 11}})
        assert (e.key, e.expected) == (
            "tcp.max_connections_per_ip",
            "at most tcp.max_connections (10)",
        )


class TestChoices:
    @pytest.mark.parametrize(
        ("data", "key", "found"),
        [
            ({"log": {"level": "verbose"}}, "log.level", "verbose"),
            ({"log": {"level": "INFO"}}, "log.level", "INFO"),
            ({"listen": [{"transport": "sctp"}]}, "listen[0].transport", "sctp"),
            (
                {"destination_set": [{**DSET, "algorithm": "random"}]},
                "destination_set[0].algorithm",
                "random",
            ),
        ],
    )
    def test_bad_literal(self, data: dict[str, Any], key: str, found: str) -> None:
        """A value outside its fixed set is refused with the set listed."""
        e = error(data)
        assert (e.key, e.found) == (key, found)
        assert e.expected.startswith("one of ")

    def test_literal_lists_choices(self) -> None:
        """The message lists every allowed value."""
        assert error({"listen": [{"transport": "sctp"}]}).expected == 'one of "udp", "tcp", "tls"'


class TestListeners:
    @pytest.mark.parametrize(
        "address", ["localhost", "127.0.0.256", "1.2.3", "::g", "", "127.0.0.1/8"]
    )
    def test_bad_address(self, address: str) -> None:
        """A listener binds an IP address, not a name or a network."""
        e = error({"listen": [{"transport": "udp", "address": address}]})
        assert (e.key, e.expected, e.found) == (
            "listen[0].address",
            "an IPv4 or IPv6 address",
            address,
        )

    def test_zoned_address(self) -> None:
        """An IPv6 zone cannot go into a Via header, so it is refused."""
        e = error({"listen": [{"transport": "udp", "address": "fe80::1%eth0"}]})
        assert (e.key, e.found) == ("listen[0].address", "fe80::1%eth0")

    @pytest.mark.parametrize("address", ["0.0.0.0", "::"])
    def test_wildcard_address(self, address: str) -> None:
        """A wildcard bind would be written into Via and Record-Route, so it is refused."""
        e = error({"listen": [{"transport": "udp", "address": address}]})
        assert (e.key, e.found) == ("listen[0].address", address)
        assert "Via" in e.expected

    def test_ipv6_address(self) -> None:
        """IPv6 listeners are accepted."""
        assert (
            from_dict({"listen": [{"transport": "tcp", "address": "::1"}]}).listen[0].address
            == "::1"
        )

    def test_duplicate(self) -> None:
        """The same transport, address and port twice is refused, naming the first."""
        e = error({"listen": [{"transport": "udp"}, {"transport": "tcp"}, {"transport": "udp"}]})
        assert e.key == "listen[2]"
        assert (
            str(e)
            == "conf/test.toml: listen[2]: expected each listener once, found udp 127.0.0.1:5060 again (listen[0])"
        )

    def test_duplicate_spelt_differently(self) -> None:
        """Two spellings of one IPv6 address are one listener."""
        e = error(
            {
                "listen": [
                    {"transport": "udp", "address": "::1"},
                    {"transport": "udp", "address": "0::1"},
                ]
            }
        )
        assert e.key == "listen[1]"

    def test_same_port_other_transport(self) -> None:
        """UDP and TCP on one port are two listeners."""
        assert len(from_dict({"listen": [{"transport": "udp"}, {"transport": "tcp"}]}).listen) == 2

    def test_none(self) -> None:
        """A node must listen somewhere."""
        e = error({"listen": []})
        assert (e.key, str(e.found)) == ("listen", "none")

    def test_missing_transport(self) -> None:
        """transport has no default: leaving it out names the key and the choices."""
        e = error({"listen": [{"port": 5070}]})
        assert str(e) == (
            'conf/test.toml: listen[0].transport: expected one of "udp", "tcp", "tls" (this key is required), found nothing'
        )


class TestNode:
    @pytest.mark.parametrize("name", ["", "two words", "-x", "a/b", "é"])
    def test_bad_name(self, name: str) -> None:
        """Node names are plain identifiers (they end up in logs and state keys)."""
        assert error({"node": {"name": name}}).key == "node.name"

    def test_control_characters_in_run_dir(self) -> None:
        """A NUL or newline in run_dir is refused, and shown escaped on one line."""
        e = error({"node": {"run_dir": "/tmp/a\nb"}})
        assert str(e).endswith('found "/tmp/a\\nb"')

    def test_relative_run_dir(self) -> None:
        """run_dir must be absolute so every process finds the same sockets."""
        e = error({"node": {"run_dir": "run/sipline"}})
        assert (e.key, e.expected) == ("node.run_dir", "an absolute directory path")

    def test_run_dir_too_long_for_ipc(self) -> None:
        """A run_dir too long for a Unix socket path is refused before zmq fails at bind."""
        e = error({"node": {"run_dir": "/" + "d" * 80}})
        assert e.key == "node.run_dir" and "bytes" in e.expected
        assert from_dict({"node": {"run_dir": "/" + "d" * (loader.MAX_RUN_DIR_BYTES - 1)}})


class TestRouting:
    def test_minimal(self) -> None:
        """One destination set and one route referring to it load."""
        s = from_dict({"destination_set": [DSET], "route": [ROUTE]})
        assert s.route[0].to == "uas" and s.destination_set[0].algorithm == "hash_call_id"

    def test_unknown_destination_set(self) -> None:
        """A route to an undefined set names the sets that exist."""
        e = error({"destination_set": [DSET], "route": [{"name": "r", "to": "usa"}]})
        assert str(e) == (
            'conf/test.toml: route[0].to: expected the name of a [[destination_set]] (uas), found "usa"'
        )

    def test_route_without_any_set(self) -> None:
        """With no destination set at all, the message says so."""
        assert "none is defined" in error({"route": [ROUTE]}).expected

    def test_missing_name(self) -> None:
        """A route's name is required, and named when missing."""
        e = error({"destination_set": [DSET], "route": [{"to": "uas"}]})
        assert (e.key, e.expected, str(e.found)) == (
            "route[0].name",
            "a string (this key is required)",
            "nothing",
        )

    @pytest.mark.parametrize(
        ("dset", "key"),
        [
            ({"name": "x"}, "destination_set[0].destinations"),
            ({"destinations": []}, "destination_set[0].name"),
        ],
    )
    def test_missing_required_in_set(self, dset: dict[str, Any], key: str) -> None:
        """Required destination_set keys are named when missing."""
        assert error({"destination_set": [dset]}).key == key

    @pytest.mark.parametrize("field", ["ruri_user", "ruri_host"])
    @pytest.mark.parametrize("pattern", ["(", "[a-", "*x", "a{2,1}"])
    def test_bad_regex(self, field: str, pattern: str) -> None:
        """A regex that does not compile is refused with the reason."""
        e = error({"destination_set": [DSET], "route": [{**ROUTE, field: pattern}]})
        assert (e.key, e.expected) == (f"route[0].{field}", "a regular expression")
        assert str(e.found).startswith(loader.show(pattern) + " (")

    @pytest.mark.parametrize(
        "source", ["10.0.0.0/33", "10.0.0", "any", "2001:db8::/129", "10.0.0.0/8/8"]
    )
    def test_bad_cidr(self, source: str) -> None:
        """A source that is not an address or network is refused."""
        e = error({"destination_set": [DSET], "route": [{**ROUTE, "source": source}]})
        assert (e.key, e.found) == ("route[0].source", source)

    @pytest.mark.parametrize(
        "source", ["10.0.0.0/8", "10.1.2.3/8", "192.0.2.7", "2001:db8::/32", "::1"]
    )
    def test_good_cidr(self, source: str) -> None:
        """Networks, host bits set or not, single addresses and IPv6 are accepted."""
        assert from_dict({"destination_set": [DSET], "route": [{**ROUTE, "source": source}]})

    @pytest.mark.parametrize("method", ["invite", "IN VITE", ""])
    def test_bad_method(self, method: str) -> None:
        """Methods are upper-case SIP tokens."""
        e = error({"destination_set": [DSET], "route": [{**ROUTE, "methods": ["INVITE", method]}]})
        assert e.key == "route[0].methods[1]"

    def test_duplicate_route_name(self) -> None:
        """Route names identify routes in logs, so they are unique."""
        e = error({"destination_set": [DSET], "route": [ROUTE, ROUTE]})
        assert (e.key, str(e.found)) == ("route[1].name", '"default" again (route[0])')

    def test_duplicate_set_name(self) -> None:
        """Destination set names are unique."""
        e = error({"destination_set": [DSET, DSET]})
        assert (e.key, e.expected) == ("destination_set[1].name", "a unique name")

    def test_empty_set(self) -> None:
        """A set with no destination cannot route."""
        assert (
            error({"destination_set": [{"name": "x", "destinations": []}]}).key
            == "destination_set[0].destinations"
        )

    def test_bad_option_tag(self) -> None:
        """proxy_require_supported holds SIP option tags."""
        assert error({"proxy": {"proxy_require_supported": ["100rel", "a b"]}}).key == (
            "proxy.proxy_require_supported[1]"
        )


class TestDestinations:
    @pytest.mark.parametrize(
        "uri",
        [
            "sip:127.0.0.1",
            "sip:127.0.0.1:5080",
            "SIP:127.0.0.1:5080",
            "sip:127.0.0.1:5080;transport=tcp",
            "sip:127.0.0.1;transport=UDP;lr",
            "sip:10.0.0.1:1;x-custom=1",
        ],
    )
    def test_good(self, uri: str) -> None:
        """IPv4 destinations with port and parameters are accepted."""
        assert from_dict({"destination_set": [{"name": "d", "destinations": [uri]}]})

    def test_ipv6_with_ipv6_listener(self) -> None:
        """A bracketed IPv6 destination is fine when an IPv6 listener can send to it."""
        data = {
            "listen": [{"transport": "udp", "address": "::1"}],
            "destination_set": [{"name": "d", "destinations": ["sip:[::1]:5080"]}],
        }
        assert from_dict(data).destination_set[0].destinations == ["sip:[::1]:5080"]

    @pytest.mark.parametrize(
        ("uri", "why"),
        [
            ("127.0.0.1:5080", "SIP URI"),
            ("sip:", "SIP URI"),
            ("sip:127.0.0.1:0", "port from 1 to 65535"),
            ("sip:127.0.0.1:70000", "port from 1 to 65535"),
            ("sip:127.0.0.1:50a", "SIP URI"),
            ("sip:300.0.0.1", "an IP address"),
            ("sip:-uas.example.com:5080", "host name"),
            ("sip:[1::2::3]", "an IP address"),
            ("sip:[::g]", "SIP URI"),
            ("sip:::1", "SIP URI"),
            ("sip:[127.0.0.1]", "IPv6 in brackets"),
            ("sip:[::1", "SIP URI"),
            ("sip:user@127.0.0.1", "SIP URI"),
            ("sip:127.0.0.1;transport=tls", "there is no tls IPv4 listener"),
            ("sip:127.0.0.1;transport=sctp", "transport=udp, transport=tcp or transport=tls"),
            ("sips:127.0.0.1", "there is no tls IPv4 listener"),
            ("tel:+15551234", "SIP URI"),
            ("sip:127.0.0.1 ", "SIP URI"),
        ],
    )
    def test_bad(self, uri: str, why: str) -> None:
        """A destination that a worker could not send to is refused with the reason."""
        e = error({"destination_set": [{"name": "d", "destinations": ["sip:127.0.0.1", uri]}]})
        assert (e.key, e.found) == ("destination_set[0].destinations[1]", uri)
        assert why in e.expected

    def test_host_names_need_stateful_routes(self) -> None:
        """A set naming hosts is resolved by the stateful proxy only: a stateless route to it,
        or probing it, is refused; a stateful route is fine."""
        sets = [{"name": "d", "destinations": ["sip:uas.example.com;transport=tcp"]}]
        e = error({"destination_set": sets, "route": [{"name": "r", "to": "d"}]})
        assert (e.key, e.found) == ("route[0].mode", "stateless")
        ok = from_dict({"destination_set": sets, "route": [{"name": "r", "to": "d",
                                                            "mode": "stateful"}]})  # fmt: skip
        assert ok.destination_set[0].destinations == ["sip:uas.example.com;transport=tcp"]
        probed = [{**sets[0], "probe_interval_s": 1.0, "probe_timeout_s": 0.5}]
        assert error({"destination_set": probed}).key == "destination_set[0].probe_interval_s"

    @pytest.mark.parametrize(
        ("listen", "uri", "missing"),
        [
            ([{"transport": "udp"}], "sip:127.0.0.1;transport=tcp", "tcp IPv4"),
            ([{"transport": "udp"}, {"transport": "tcp"}], "sip:[::1]", "IPv6"),
            ([{"transport": "tcp", "address": "::1"}], "sip:127.0.0.1", "IPv4"),
        ],
    )
    def test_unreachable_from_listeners(self, listen: list[Any], uri: str, missing: str) -> None:
        """A destination no listener can send to (transport, address family) is refused."""
        e = error({"listen": listen, "destination_set": [{"name": "d", "destinations": [uri]}]})
        assert e.expected.endswith(f"(there is no {missing} listener)")

    def test_weighted(self) -> None:
        """One positive weight per destination, for the weighted algorithm."""
        two = ["sip:127.0.0.1:5080", "sip:127.0.0.1:5081"]
        ok = {"name": "d", "destinations": two, "algorithm": "weighted", "weights": [3, 1]}
        assert from_dict({"destination_set": [ok]}).destination_set[0].weights == [3, 1]
        for weights, key in (([1], "weights"), ([1, 0], "weights[1]"), ([1, -2], "weights[1]")):
            e = error({"destination_set": [{**ok, "weights": weights}]})
            assert e.key == f"destination_set[0].{key}"

    def test_weights_need_weighted(self) -> None:
        """Weights on another algorithm would be silently ignored, so they are refused."""
        e = error({"destination_set": [{**DSET, "weights": [1]}]})
        assert e.key == "destination_set[0].weights"
        assert "weighted" in e.expected


class TestFailoverPair:
    """[stateplane] role and [[listen]] virtual: what a pair needs is named at start-up."""

    DLG: ClassVar[dict[str, Any]] = {"dialogs": {"enabled": True}, "proxy": {"mode": "stateful"}}
    VIRTUAL: ClassVar[list[dict[str, Any]]] = [{"transport": "udp", "address": "127.0.0.10", "virtual": True},
               {"transport": "udp", "address": "127.0.0.1", "port": 5070}]  # fmt: skip

    def pair(self, **sp: Any) -> dict[str, Any]:
        base = {"replicate": True, "role": "primary", "peers": ["/tmp/sipline-b"]}
        return {**self.DLG, "listen": self.VIRTUAL, "stateplane": {**base, **sp}}

    def test_a_valid_pair(self) -> None:
        s = from_dict(self.pair())
        assert s.stateplane.role == "primary" and s.listen[0].virtual

    @pytest.mark.parametrize(
        ("change", "key", "expected"),
        [
            ({"peers": []}, "stateplane.peers", "exactly one entry"),
            ({"peers": ["/a", "/b"]}, "stateplane.peers", "exactly one entry"),
            ({"peers": ["relative"]}, "stateplane.peers[0]", "absolute directory path"),
            ({"peers": [default_run_dir("sipline")]}, "stateplane.peers[0]", "not this node's own"),
            ({"role": "active"}, "stateplane.role", '"primary"'),
        ],
    )
    def test_refused(self, change: dict[str, Any], key: str, expected: str) -> None:
        e = error(self.pair(**change))
        assert e.key == key and expected in e.expected, e

    def test_virtual_needs_a_role_and_a_role_needs_a_virtual(self) -> None:
        e = error({**self.DLG, "listen": self.VIRTUAL})
        assert e.key == "listen[0].virtual" and "role" in e.expected
        e = error({**self.pair(), "listen": [{"transport": "udp"}]})
        assert e.key == "listen" and "virtual = true" in e.expected

    def test_tcp_peers_and_bind(self) -> None:
        s = from_dict(self.pair(peers=["tcp://192.0.2.2:7400"], bind="192.0.2.1:7400"))
        assert s.stateplane.bind == "192.0.2.1:7400"
        assert from_dict(self.pair(peers=["tcp://[2001:db8::2]:7400"])).stateplane.peers
        for bad in ("host:7400", "192.0.2.1", "192.0.2.1:65535", "2001:db8::1:7400"):
            assert error(self.pair(bind=bad)).key == "stateplane.bind", bad
        assert error(self.pair(peers=["tcp://x:1"])).key == "stateplane.peers[0]"
        e = error({**self.pair(peers=["tcp://192.0.2.2:7400"]),
                   "dialogs": {"enabled": True, "profiles_cluster": True}})  # fmt: skip
        assert e.key == "dialogs.profiles_cluster" and "[curve] secret_key_file" in e.expected

    def test_replicate_needs_dialogs(self) -> None:
        e = error({"stateplane": {"replicate": True}})
        assert e.key == "stateplane.replicate" and "[dialogs] enabled" in e.expected

    def test_a_role_needs_dialogs(self) -> None:
        """A pair serves each other's calls: without dialogs there is nothing to take over."""
        e = error({**self.pair(replicate=False), "dialogs": {"enabled": False}})
        assert (e.key, e.expected) == ("dialogs.enabled", 'true when [stateplane] role = "primary"')
        assert from_dict(self.pair(replicate=False)).stateplane.role == "primary"


class TestDialogMirror:
    """The state plane mirrors the workers' dialogs whenever ``[dialogs] enabled``, whatever
    ``[stateplane] replicate`` says (docs/dialogs.md "Dialogs follow their Call-ID")."""

    DLG: ClassVar[dict[str, Any]] = {"dialogs": {"enabled": True}, "proxy": {"mode": "stateful"}}

    @pytest.mark.parametrize("stateplane", [None, {}, {"replicate": False}, {"replicate": True}],
                             ids=["no_section", "empty_section", "older_false", "older_true"])
    def test_dialogs_alone_run_the_mirror(self, stateplane: dict[str, Any] | None) -> None:
        """A node with dialogs and no [stateplane] section, or an older file's ``replicate``
        either way, loads and runs the state plane's replication (mirror and hand-over)."""
        data = {**self.DLG} if stateplane is None else {**self.DLG, "stateplane": stateplane}
        assert runs_replication(from_dict(data))

    def test_nothing_to_mirror_without_dialogs(self) -> None:
        assert not runs_replication(from_dict({}))
        assert not runs_replication(from_dict({"proxy": {"mode": "stateful"}}))


class TestClusterMembers:
    """role = "member": the cluster's names, peers and whose standby address is whose."""

    DLG: ClassVar[dict[str, Any]] = {"dialogs": {"enabled": True}, "proxy": {"mode": "stateful"}}
    LISTEN: ClassVar[list[dict[str, Any]]] = [
        {"transport": "udp", "address": "127.0.0.20", "virtual": True},
        {"transport": "udp", "address": "127.0.0.21", "virtual": True, "standby": True},
        {"transport": "udp", "address": "127.0.0.1", "port": 5070}]  # fmt: skip

    def cluster(self, peer: list[dict[str, Any]] | None = None, **sp: Any) -> dict[str, Any]:
        base = {"replicate": True, "role": "member", "members": ["sipline", "b", "c"],
                "peers": ["/tmp/sipline-b", "/tmp/sipline-c"]}  # fmt: skip
        peers = [{"name": "b", "stateplane": "/tmp/sipline-b", "virtual": ["127.0.0.21"]},
                 {"name": "c", "stateplane": "/tmp/sipline-c"}]  # fmt: skip
        return {**self.DLG, "listen": self.LISTEN, "stateplane": {**base, **sp},
                "peer": peers if peer is None else peer}  # fmt: skip

    def test_a_valid_member(self) -> None:
        s = from_dict(self.cluster())
        assert s.stateplane.members == ["sipline", "b", "c"] and s.peer[0].virtual

    @pytest.mark.parametrize(
        ("change", "key", "expected"),
        [
            ({"members": ["sipline", "b"]}, "stateplane.members", "3 to 32 distinct"),
            ({"members": ["sipline", "b", "b"]}, "stateplane.members", "3 to 32 distinct"),
            ({"members": ["a", "b", "c"]}, "stateplane.members", "naming this node"),
            ({"members": ["sipline", "b", "d"]}, "peer", "named d"),
            ({"peers": ["/tmp/sipline-b", "/tmp/sipline-c", "/tmp/sipline-d"]}, "stateplane.peers",
             "one entry per other member"),
        ],
    )
    def test_refused(self, change: dict[str, Any], key: str, expected: str) -> None:
        e = error(self.cluster(**change))
        assert e.key == key and expected in e.expected, e

    def test_standby_needs_an_owner(self) -> None:
        """A standby listener no member's ``virtual`` names would never be bound."""
        peers = [{"name": "b", "stateplane": "/tmp/sipline-b"},
                 {"name": "c", "stateplane": "/tmp/sipline-c"}]  # fmt: skip
        e = error(self.cluster(peers))
        assert e.key == "listen[1].address" and "virtual list" in e.expected
        both = [{**peers[0], "virtual": ["127.0.0.21"]}, {**peers[1], "virtual": ["127.0.0.21"]}]
        assert error(self.cluster(both)).key == "peer.c.virtual"

    def test_members_need_the_role(self) -> None:
        e = error({**self.cluster(), "listen": self.LISTEN[2:],
                   "stateplane": {"replicate": True, "members": ["a"],
                                  "peers": ["/tmp/sipline-b", "/tmp/sipline-c"]}})  # fmt: skip
        assert e.key == "stateplane.members"


class TestFiles:
    def test_syntax_error_has_line(self, tmp_path: Path) -> None:
        """A TOML syntax error is key '(syntax)' with the line and column."""
        p = write(tmp_path, "[node]\nname = 'a'\nrun_dir = /tmp\n")
        with pytest.raises(ConfigError) as info:
            load(p)
        e = info.value
        assert (e.file, e.key, e.expected) == (str(p), "(syntax)", "valid TOML")
        assert "line 3" in str(e)
        assert str(e).startswith(f"{p}: (syntax): expected valid TOML, found ")

    def test_duplicate_key_is_syntax(self, tmp_path: Path) -> None:
        """TOML forbids a key twice; that is a syntax error too."""
        with pytest.raises(ConfigError) as info:
            load(write(tmp_path, "[node]\nname = 'a'\nname = 'b'\n"))
        assert info.value.key == "(syntax)" and "line 3" in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is named, with key '(file)'."""
        p = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load(p)
        assert str(info.value) == f"{p}: (file): expected an existing TOML file, found no such file"

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is not a config file."""
        with pytest.raises(ConfigError) as info:
            load(tmp_path)
        assert info.value.key == "(file)" and str(info.value.found) == "a directory"

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a syntax error, with the offset."""
        p = tmp_path / "latin1.toml"
        p.write_bytes(b"[node]\nname = '\xe9'\n")
        with pytest.raises(ConfigError) as info:
            load(p)
        assert info.value.key == "(syntax)" and "byte 15" in str(info.value)

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        """Value errors from a file carry that file's path."""
        p = write(tmp_path, "[[listen]]\ntransport = 'udp'\nport = 70000\n")
        with pytest.raises(ConfigError) as info:
            load(p)
        assert (
            str(info.value)
            == f"{p}: listen[0].port: expected a number from 1 to 65535, found 70000"
        )

    def test_full_file(self, tmp_path: Path) -> None:
        """A file setting every section loads into the matching dataclasses."""
        p = write(
            tmp_path,
            """
            [node]
            name = "edge-1"
            run_dir = "/tmp/sipline-edge"
            [[listen]]
            transport = "udp"
            address = "10.0.0.5"
            port = 5070
            [tcp]
            max_connections = 100
            max_connections_per_ip = 10
            idle_timeout_s = 60
            [bus]
            max_batch = 64
            [proxy]
            record_route = false
            proxy_require_supported = ["100rel"]
            [[destination_set]]
            name = "core"
            destinations = ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060"]
            algorithm = "weighted"
            weights = [2, 1]
            [[route]]
            name = "from-core"
            to = "core"
            methods = ["INVITE", "BYE"]
            ruri_user = "\\\\+?[0-9]+"
            source = "10.0.0.0/8"
            [log]
            level = "debug"
            """.replace("\n            ", "\n"),
        )
        s = load(p)
        assert s.node == Node(name="edge-1", run_dir="/tmp/sipline-edge")
        assert s.listen == [Listener(transport="udp", address="10.0.0.5", port=5070)]
        assert s.tcp == Tcp(max_connections=100, max_connections_per_ip=10, idle_timeout_s=60.0)
        assert s.bus == Bus(max_batch=64)
        assert s.proxy == Proxy(record_route=False, proxy_require_supported=["100rel"])
        assert s.route[0].ruri_user == "\\+?[0-9]+"
        assert s.log == Log(level="debug")


class TestConfigPath:
    def test_default(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """With neither --conf nor SIPLINE_CONF, the shipped conf/sipline.toml, found from the
        installation rather than the working directory."""
        monkeypatch.delenv("SIPLINE_CONF", raising=False)
        monkeypatch.chdir(tmp_path)
        assert config_path(None) == str(REPO / "conf" / "sipline.toml")
        assert load(config_path(None)).listen  # it is there and loads

    def test_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """SIPLINE_CONF names another file."""
        monkeypatch.setenv("SIPLINE_CONF", "/etc/sipline.toml")
        assert config_path(None) == "/etc/sipline.toml"

    def test_flag_beats_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--conf wins over SIPLINE_CONF."""
        monkeypatch.setenv("SIPLINE_CONF", "/etc/sipline.toml")
        assert config_path("mine.toml") == "mine.toml"

    def test_empty_env_is_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An empty SIPLINE_CONF means the default, not a file named ''."""
        monkeypatch.setenv("SIPLINE_CONF", "")
        assert config_path(None) == str(REPO / "conf" / "sipline.toml")


class TestClusterSharing:
    """``[stateplane] peers`` and what shares through them (pike blocks, ratelimit counts)."""

    PEER = "/tmp/sipline-peer"

    def test_peers_are_other_nodes_absolute_run_dirs(self) -> None:
        """A peer is another node's run directory: absolute, not ours, each once."""
        e = error({"stateplane": {"peers": ["run/b"]}})
        assert e.key == "stateplane.peers[0]" and "absolute" in e.expected
        e = error({"node": {"run_dir": "/tmp/a"}, "stateplane": {"peers": ["/tmp/a/"]}})
        assert e.key == "stateplane.peers[0]" and "not this node's own" in e.expected
        e = error({"stateplane": {"peers": [self.PEER, self.PEER + "/"]}})
        assert (e.key, e.expected) == ("stateplane.peers[1]", "each peer once")
        e = error({"stateplane": {"peers": ["/" + "d" * 80]}})
        assert "bytes" in e.expected

    def test_pike_cluster_needs_pike_and_peers(self) -> None:
        """``[pike] cluster`` says what it needs: pike on, and peers ([dialogs] is not)."""
        e = error({"pike": {"cluster": True}, "stateplane": {"peers": [self.PEER]}})
        assert (e.key, e.expected) == ("pike.cluster", "false unless [pike] enabled = true")
        e = error({"pike": {"enabled": True, "cluster": True}})
        assert e.key == "pike.cluster" and "[stateplane] peers is empty" in e.expected
        assert "[dialogs] is not needed" in str(e)
        s = from_dict({"pike": {"enabled": True, "cluster": True},
                       "stateplane": {"peers": [self.PEER]}})  # fmt: skip
        assert s.pike.cluster and not s.stateplane.replicate


class TestSharingAcrossHosts:
    """Pike blocks, call limits, shared pipes and ``ctl --cluster`` with ``tcp://`` peers: over
    CURVE only, through the state plane's ``bind`` port + 2 and + 3 (stateplane/meshcross.py)."""

    PEER = "tcp://192.0.2.2:7400"

    @pytest.fixture
    def keys(self, tmp_path: Path) -> dict[str, Any]:
        """[curve] and the peer's [[peer]], with real key files."""
        from conf import curve

        secret, _, _ = curve.keygen(str(tmp_path / "a"))
        _, public, _ = curve.keygen(str(tmp_path / "b"))
        return {"curve": {"secret_key_file": str(secret)},
                "peer": [{"name": "b", "stateplane": self.PEER, "public_key_file": str(public)}]}  # fmt: skip

    def conf(self, feature: str, bind: str = "192.0.2.1:7400", **more: Any) -> dict[str, Any]:
        """A node sharing ``feature`` with the tcp:// peer."""
        data: dict[str, Any] = {"stateplane": {"peers": [self.PEER], "bind": bind}, **more}
        if feature == "pike":
            data["pike"] = {"enabled": True, "cluster": True}
        elif feature == "profiles":
            data["dialogs"] = {"enabled": True, "profiles_cluster": True}
        elif feature == "ratelimit":
            data["ratelimit"] = [{"name": "in", "shared": True}]
        else:
            data["stateplane"]["cluster_ctl"] = True
        return data

    @pytest.mark.parametrize(("feature", "key", "found"), [
        ("pike", "pike.cluster", "True"),
        ("profiles", "dialogs.profiles_cluster", "True"),
        ("ratelimit", "ratelimit", "a shared pipe"),
    ])  # fmt: skip
    def test_sharing_with_a_tcp_peer_needs_curve(self, feature: str, key: str, found: str) -> None:
        """Without [curve] a peer on another host would be reached unauthenticated: refused."""
        e = error(self.conf(feature))
        assert (e.key, str(e.found)) == (key, found), e
        assert e.expected == "false unless [curve] secret_key_file is set (shared with a tcp:// peer)"
        assert str(e).startswith(f"conf/test.toml: {key}: expected false unless [curve]")

    def test_cluster_ctl_needs_curve(self) -> None:
        e = error(self.conf("ctl"))
        assert (e.key, e.expected) == ("stateplane.cluster_ctl",
                                       "false unless [curve] secret_key_file is set")  # fmt: skip

    @pytest.mark.parametrize(("feature", "bind", "expected"), [
        ("pike", "", "host:port where the peers reach this node (port + 2 serves pike.cluster)"),
        ("ctl", "", "host:port where the peers reach this node (port + 3 serves stateplane.cluster_ctl)"),
        ("ratelimit", "192.0.2.1:65534", "a port of at most 65533 (port + 2 serves ratelimit)"),
        ("ctl", "192.0.2.1:65533", "a port of at most 65532 (port + 3 serves stateplane.cluster_ctl)"),
    ])  # fmt: skip
    def test_bind_serves_the_relay_and_control(self, keys: dict[str, Any], feature: str,
                                               bind: str, expected: str) -> None:  # fmt: skip
        """The peers reach the relay at ``bind`` port + 2 and the control at + 3."""
        e = error(self.conf(feature, bind, **keys))
        assert (e.key, e.expected) == ("stateplane.bind", expected), e

    def test_every_tcp_peer_needs_its_key(self, keys: dict[str, Any]) -> None:
        """A tcp:// peer without a [[peer]] key is refused: its frames could not be verified."""
        e = error(self.conf("pike", peer=[], curve=keys["curve"]))
        assert (e.key, e.found) == ("stateplane.peers[0]", self.PEER)
        assert e.expected == "a [[peer]] with this stateplane and its public key (CURVE is on)"

    def test_everything_shared_over_curve_loads(self, keys: dict[str, Any]) -> None:
        data = self.conf("ctl", **keys)
        for feature in ("pike", "profiles", "ratelimit"):
            for k, v in self.conf(feature).items():
                if k != "stateplane":
                    data[k] = v
        s = from_dict(data)
        assert (s.pike.cluster, s.dialogs.profiles_cluster, s.ratelimit[0].shared,
                s.stateplane.cluster_ctl) == (True, True, True, True)  # fmt: skip


class TestRelay:
    """[[trusted]] and the route actions that decide relaying (docs/security.md "Relaying")."""

    def test_actions_and_trusted_load(self) -> None:
        """A reject route, a relaying route for a trusted tag and a set route load together."""
        s = from_dict({
            "destination_set": [DSET],
            "trusted": [{"cidr": "10.0.0.0/8", "transport": "udp", "port": 5060, "tag": "pbx"}],
            "route": [{"name": "block", "source": "192.0.2.0/24", "reject": 403,
                       "reason": "Blocked"},
                      {"name": "pbx", "trusted": "pbx", "to_request_uri": True},
                      {"name": "any-trusted", "trusted": True, "to": "uas"}, ROUTE],
        })  # fmt: skip
        assert [r.reject for r in s.route] == [403, 0, 0, 0]
        assert [r.trusted for r in s.route] == [False, "pbx", True, False]
        assert s.trusted[0].tag == "pbx"

    def test_route_without_action(self) -> None:
        """A route that neither sends, relays nor rejects says what it lacks."""
        e = error({"destination_set": [DSET], "route": [{"name": "r"}]})
        assert (e.key, str(e.found)) == ("route[0].to", "nothing")
        assert e.expected == ("an action: the name of a [[destination_set]] (uas), "
                              "to_request_uri = true or reject (a status)")  # fmt: skip

    @pytest.mark.parametrize(("extra", "key"), [
        ({"to_request_uri": True}, "route[0].to_request_uri"),
        ({"reject": 403}, "route[0].reject"),
    ])  # fmt: skip
    def test_two_actions(self, extra: dict[str, Any], key: str) -> None:
        """A route with two actions is refused at the second."""
        e = error({"destination_set": [DSET], "route": [{**ROUTE, **extra}]})
        assert (e.key, e.expected) == (key, "one action per route (this one has to already)")

    @pytest.mark.parametrize("status", [1, 200, 399, 700])
    def test_reject_status(self, status: int) -> None:
        """reject is a final failure status, 400 to 699."""
        e = error({"route": [{"name": "r", "reject": status}]})
        assert e.key == "route[0].reject" and e.found == status

    @pytest.mark.parametrize(("route", "key"), [
        ({"name": "r", "to": "uas", "reason": "x"}, "route[0].reason"),
        ({"name": "r", "reject": 403, "reason": "a\r\nVia: x"}, "route[0].reason"),
    ])  # fmt: skip
    def test_reason(self, route: dict[str, Any], key: str) -> None:
        """reason goes with reject only, and cannot smuggle a line into the answer."""
        assert error({"destination_set": [DSET], "route": [route]}).key == key

    @pytest.mark.parametrize(("trusted", "route_trusted", "key", "expected"), [
        ([], True, "route[0].trusted",
         "false when no [[trusted]] table is defined (it would never match)"),
        ([{"cidr": "10.0.0.1", "tag": "pbx"}], "pdx", "route[0].trusted",
         "true, false or the tag of a [[trusted]] table (pbx)"),
        ([{"cidr": "10.0.0.1"}], "", "route[0].trusted",
         "true, false or the tag of a [[trusted]] table (no [[trusted]] table has one)"),
        ([{"cidr": "10.0.0.0/33"}], False, "trusted[0].cidr",
         "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32"),
        ([{"cidr": "10.0.0.1", "tag": "a b"}], False, "trusted[0].tag",
         "a tag of letters, digits, '.', '_' or '-'"),
        ([{"transport": "udp"}], False, "trusted[0].cidr",
         "a string (this key is required)"),
    ])  # fmt: skip
    def test_trusted(self, trusted: list[dict[str, Any]], route_trusted: bool | str, key: str,
                     expected: str) -> None:  # fmt: skip
        """Each [[trusted]] key is checked, and a route's tag must be one a table has."""
        e = error({"destination_set": [DSET], "trusted": trusted,
                   "route": [{**ROUTE, "trusted": route_trusted}]})  # fmt: skip
        assert (e.key, e.expected) == (key, expected)

    def test_trusted_transport_needs_a_listener(self) -> None:
        """A [[trusted]] transport no listener uses could never match."""
        e = error({"listen": [{"transport": "udp"}], "trusted": [{"cidr": "10.0.0.1",
                                                                  "transport": "tcp"}]})  # fmt: skip
        assert (e.key, e.expected) == ("trusted[0].transport", "a transport some [[listen]] uses (udp)")

    @pytest.mark.parametrize("value", [1, 1.0, ["pbx"]])
    def test_trusted_type(self, value: object) -> None:
        """A route's trusted is true, false or a string; nothing else."""
        e = error({"destination_set": [DSET], "route": [{**ROUTE, "trusted": value}]})
        assert (e.key, e.expected) == ("route[0].trusted", "true or false, or a string")

    def test_shipped_config_relays_for_nobody(self) -> None:
        """The shipped file has one route, to its static destination: no relaying route and
        no trusted source."""
        s = load(SHIPPED)
        assert s.trusted == []
        assert [(r.to, r.to_request_uri, r.reject) for r in s.route] == [("uas", False, 0)]
