"""``sipline``: one console script, a subcommand per process role plus operator verbs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from conf.load import config_path, load_or_report

#: ``prefix-push``'s deadline for each cacheDB call (seconds)
PUSH_CALL_S = 10.0


def _check_config(args: argparse.Namespace) -> int:
    path = config_path(args.conf)
    settings = load_or_report(path)
    if settings is None:
        return 2
    from workers.routing.prefix_csv import PrefixFileError
    from workers.routing.prefix_route import load_tables

    try:  # the tables' lines are checked where they are built (docs/prefix_tables.md)
        load_tables(settings, files_only=True)
    except PrefixFileError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: ok ({len(settings.listen)} listeners, {len(settings.route)} routes)")
    return 0


def _prefix_push(args: argparse.Namespace) -> int:
    """Check a CSV file and store it as the cacheDB table of ``[[prefix_table]] NAME``."""
    import asyncio

    from workers.cachedb import CacheError, open_cachedb
    from workers.routing import prefix_cachedb
    from workers.routing.prefix_csv import PrefixFileError

    settings = load_or_report(config_path(args.conf))
    if settings is None:
        return 2
    table = next((t for t in settings.prefix_table if t.name == args.table), None)
    if table is None or not table.cachedb_key:
        print(f"no [[prefix_table]] {args.table!r} with a cachedb_key", file=sys.stderr)
        return 2
    groups = [ds.name for ds in settings.destination_set]

    async def push(data: bytes) -> str:
        # an operator's one-off command, not a call's lookup: the cacheDB client's 0.25 s per
        # call (a worker's) failed it on a loaded box ("redis get: no answer in 0.25 s")
        db = open_cachedb(settings.registrar.cachedb_url, run_dir=settings.node.run_dir,
                          timeout_s=PUSH_CALL_S)
        try:
            return await prefix_cachedb.push(db, table.cachedb_key, data, groups,
                                             table.max_prefixes)  # fmt: skip
        finally:
            await db.close()

    try:
        with open(args.file, "rb") as fh:
            version = asyncio.run(push(fh.read()))
    except (PrefixFileError, CacheError, OSError) as exc:
        print(f"prefix-push: {exc}", file=sys.stderr)
        return 2
    print(f"{args.table}: version {version} stored under {table.cachedb_key}")
    return 0


def _ingress(args: argparse.Namespace) -> int:
    from conf.process import hold_early_signals

    hold_early_signals()
    from ingress.main import main

    return main(args.conf)


def _worker(args: argparse.Namespace) -> int:
    from conf.process import hold_early_signals

    hold_early_signals()
    from workers.main import main

    return main(args.conf)


def _stateplane(args: argparse.Namespace) -> int:
    from conf.process import hold_early_signals

    hold_early_signals()
    from stateplane.main import main

    return main(args.conf)


def _timers(args: argparse.Namespace) -> int:
    from conf.process import hold_early_signals

    hold_early_signals()
    from timers.main import main

    return main(args.conf)


def _keygen(args: argparse.Namespace) -> int:
    """``sipline keygen PATH``: a CURVE key pair at PATH.key_secret (0600) and PATH.key
    (``conf/curve.py`` rule 1); it never overwrites a file."""
    from conf.curve import keygen

    try:
        secret, public, key = keygen(args.path)
    except OSError as exc:
        print(f"keygen: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"secret key: {secret} (this node's [curve] secret_key_file; keep it here)")
    print(f"public key: {public} (the other nodes' [[peer]] public_key_file)")
    print(f'public_key = "{key.decode()}"')
    return 0


def _auth_ha1(args: argparse.Namespace) -> int:
    """``sipline auth-ha1 USER REALM``: the credentials file lines of USER (docs/auth.md),
    one per algorithm, from a password read on stdin (never argv: ps and shell history)."""
    from conf.credfile import HEX_LEN
    from workers.auth.digest import ha1

    if any(c.isspace() for c in args.user) or not args.user:
        print("auth-ha1: a username without whitespace", file=sys.stderr)
        return 2
    password = sys.stdin.readline().removesuffix("\n")
    if not password:
        print("auth-ha1: no password on stdin", file=sys.stderr)
        return 2
    for algorithm in HEX_LEN:
        print(f"{args.user} {algorithm} {ha1(algorithm, args.user, args.realm, password)}")
    return 0


def _ctl(args: argparse.Namespace) -> int:
    from sipline.ctl import main

    return main(args)


def _logs(args: argparse.Namespace) -> int:
    from sipline.logs import main

    return main(args)


def _top(args: argparse.Namespace) -> int:
    from sipline.top import main

    return main(args)


def _metrics(args: argparse.Namespace) -> int:
    from sipline.metrics import main

    return main(args)


def _add_monitoring(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``logs``, ``top`` and ``metrics`` (docs/monitoring.md). prometheus_client is imported
    only when ``metrics`` runs, so it costs the process roles nothing at start-up."""
    from sipline import logs, top

    for name, fn, add, text in (
        ("logs", _logs, logs.add_arguments,
         "filter and summarise JSON log lines (honcho output or files)"),
        ("top", _top, top.add_arguments, "load per stage of a running node, refreshed in place"),
        ("metrics", _metrics, _metrics_arguments,
         "serve the node's statistics on a Prometheus /metrics endpoint"),
    ):  # fmt: skip
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add(sp)
        sp.set_defaults(fn=fn)


def _metrics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=9101, help="HTTP port of /metrics")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (loopback)")
    p.add_argument("--cluster", action="store_true",
                   help="every node of the cluster, labelled by node (docs/monitoring.md)")


class _Version(argparse.Action):
    """``--version``: the release and which build of the hot modules runs (conf/compiled.py)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and whether the compiled build is loaded")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from importlib.metadata import version

        from conf import compiled

        print(f"sipline {version('sipline')} ({compiled.describe()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipline", description=__doc__)
    p.add_argument("--version", action=_Version)
    p.add_argument("--conf", help="configuration file (default $SIPLINE_CONF or conf/sipline.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("ingress", _ingress, "run an ingress process (SIP sockets)"),
        ("worker", _worker, "run a routing worker process"),
        ("stateplane", _stateplane, "run the node's state plane (local:// cacheDB store, dialog replication)"),
        ("timers", _timers, "run a timer service process (dialog lifetimes, expiries, TTLs)"),
        ("check-config", _check_config, "validate a configuration file and exit"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.set_defaults(fn=fn)
    keygen = sub.add_parser("keygen", help="write a CURVE key pair for this node (docs/security.md)")
    keygen.add_argument("path", help="PATH.key_secret (mode 0600) and PATH.key are written")
    keygen.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    keygen.set_defaults(fn=_keygen)
    ha1 = sub.add_parser("auth-ha1", help="print credentials file lines, password on stdin")
    ha1.add_argument("user")
    ha1.add_argument("realm")
    ha1.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ha1.set_defaults(fn=_auth_ha1)
    push = sub.add_parser("prefix-push",
                          help="check a CSV file and store it as a cacheDB prefix table")  # fmt: skip
    push.add_argument("table", help="name of a [[prefix_table]] with a cachedb_key")
    push.add_argument("file", help="the CSV file (docs/prefix_tables.md)")
    push.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    push.set_defaults(fn=_prefix_push)
    ctl = sub.add_parser("ctl", help="ask a running node (stats, destinations, dialogs, pike)")
    ctl.add_argument("--conf", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ctl.add_argument("what", choices=["stats", "destinations", "dialogs", "pike", "ratelimit",
                                      "sync", "failback", "reload"])  # fmt: skip
    ctl.add_argument("words", nargs="*", metavar="set SET URI inactive|active",
                     help="destinations: mark one destination in every worker")
    ctl.add_argument("--json", action="store_true", help="JSON output instead of a table")
    ctl.add_argument("--list", type=int, default=0, metavar="N",
                     help="dialogs: also list up to N live dialogs per worker, oldest first")
    ctl.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for answers")
    ctl.add_argument("--cluster", action="store_true",
                     help="ask every node: this one and each [stateplane] peers entry")
    ctl.set_defaults(fn=_ctl)
    _add_monitoring(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
