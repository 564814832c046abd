"""``steer`` command line: serve, chat, policy check, bench, eval, profiles fit, db migrate/copy.

The benchmarks and evaluations are imported only when their command runs: their sub-commands are
:class:`LazyParser` s, whose arguments the module adds when the sub-command is parsed or its help
shown. ``steer serve`` imports no benchmark, evaluation or their data loaders.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from steer.settings import ConfigError, Settings, load_settings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(
            getattr(args, "config", None),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            policies=getattr(args, "policies", None),
            database=getattr(args, "database", None),
        )
    except ConfigError as exc:
        print(f"steer: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


class LazyParser(argparse.ArgumentParser):
    """A sub-command whose arguments a module adds (its ``add_arguments(parser)``), imported only when the
    sub-command is parsed or its help is shown."""

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def _load(self) -> None:
        if self._module is not None:
            module, self._module = self._module, None
            importlib.import_module(module).add_arguments(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from steer.pipeline.policy import shipped_policies
    from steer.server.app import create_app
    from steer.server.uvicorn import server_config

    settings = _settings(args)
    if not settings.auth_required and not is_loopback(settings.host):
        print(
            f"steer: refusing to listen on {settings.host} with no API keys configured; "
            "add `keys:` to the config, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = check_database(settings) or check_index_device(settings)
    if problem is not None:
        print(f"steer: {problem}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, owns_process=True)
    except ConfigError as exc:
        print(f"steer: {exc}", file=sys.stderr)
        return 2
    if args.listen_fd is not None:  # a worker of `steer serve --workers N` (steer.server.workers)
        from steer.server.workers import inherited, watch_parent

        watch_parent()
        server = uvicorn.Server(server_config(settings, app))
        server.run(sockets=[inherited(args.listen_fd)])
        return 0 if server.started else 1
    auth = "API keys required" if settings.auth_required else "no API keys: loopback only"
    models = ", ".join(m.name for m in settings.models)
    folder = app.state.services.policies.directory.resolve()
    shipped = " (the defaults shipped with steer)" if folder == shipped_policies() else ""
    workers = f"  ({args.workers} workers)" if args.workers > 1 else ""
    print(
        f"steer: serving http://{settings.host}:{settings.port}/v1  models: {models}  ({auth})  "
        f"policies: {folder}{shipped}{workers}",
        flush=True,
    )
    if args.workers > 1:
        return _serve_workers(args, settings)
    server = uvicorn.Server(server_config(settings, app))
    server.run()  # SIGINT and SIGTERM: uvicorn's handlers stop it gracefully
    return 0 if server.started else 1


def check_database(settings: Settings, target: str | None = None) -> str | None:
    """Open (and migrate) the configured database once: None when it works, else one line saying why not
    (an unknown scheme, an unreachable server, a schema newer than this steer)."""
    from steer.errors import SteerError
    from steer.storage import open_configured
    from steer.storage.database import SchemaTooNew

    try:
        open_configured(settings, target).close()
    except (ValueError, SchemaTooNew, SteerError, OSError) as exc:
        return f"database: {getattr(exc, 'message', None) or exc}"
    return None


def check_index_device(settings: Settings) -> str | None:
    """None when ``memory.index_device`` can be honoured here, else one line saying why not."""
    if settings.memory.index_device != "gpu":
        return None
    from steer.methods.memory.service import index_on_gpu

    try:
        index_on_gpu("gpu")
    except ValueError as exc:
        return str(exc)
    return None


def cmd_db(args: argparse.Namespace) -> int:
    """``steer db migrate``: bring the database's schema up to date; ``steer db copy``: copy every row of one
    database into another (idempotent), printing the rows per table."""
    from steer.storage import open_configured
    from steer.storage.copy import copy_rows

    settings = _settings(args)
    if args.db_command == "migrate":
        problem = check_database(settings)
        if problem is not None:
            print(f"steer: {problem}", file=sys.stderr)
            return 2
        from steer.storage.migrations import MIGRATIONS, latest

        print(f"steer: {_where(settings.database)} is at schema version {latest(MIGRATIONS)}")
        return 0
    from steer.settings import resolve_database

    try:
        args.source, args.target = resolve_database(args.source), resolve_database(args.target)
    except ValueError as exc:
        print(f"steer: database: {exc}", file=sys.stderr)
        return 2
    for name in (args.source, args.target):
        problem = check_database(settings, name)
        if problem is not None:
            print(f"steer: {problem}", file=sys.stderr)
            return 2
    source, target = open_configured(settings, args.source), open_configured(settings, args.target)
    try:
        report = copy_rows(source, target)
    finally:
        source.close()
        target.close()
    print(f"{'table':<20} {'source rows':>12} {'copied':>8}")
    for row in report:
        print(f"{row.table:<20} {row.source:>12} {row.added:>8}")
    print(f"steer: copied {sum(r.added for r in report)} rows from {_where(args.source)} to {_where(args.target)}")
    return 0


def _where(target: str) -> str:
    """A database named for messages: a path as is, a server URL without its user or password."""
    from steer.storage import is_postgres

    if is_postgres(target):
        from steer.storage.postgres import describe

        return describe(target)
    return target


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """``--workers N``: bind the port here, then supervise N
    workers (``steer.server.workers``)."""
    from steer.server.workers import Supervisor, bind

    try:  # the database was checked (and migrated) once already, by cmd_serve
        socks = bind(settings.host, settings.port, args.workers)
    except (OSError, RuntimeError) as exc:
        print(f"steer: {exc}", file=sys.stderr)
        return 1
    repeat = [f"--{name}={value}" for name in ("config", "policies", "database", "host", "port")
              if (value := getattr(args, name, None)) is not None]  # fmt: skip
    return Supervisor(socks, args.workers, repeat).run()


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy folder under the server's tenant rule; with --tenant/--user, explain a match."""
    from steer.identity import USER_ID
    from steer.pipeline.policy import EVERY_TENANT, PolicySet, load_policies

    multi = args.multi_tenant or _settings(args).auth_required  # the server's rule: keys configured
    if args.user is not None and not USER_ID.fullmatch(args.user):
        print(f"steer: invalid user id {args.user!r}", file=sys.stderr)
        return 2
    if args.user is not None and args.tenant is None and multi:
        print(
            "steer: --user needs --tenant: with API keys, the same user id can exist in several tenants",
            file=sys.stderr,
        )
        return 2
    try:
        policies = PolicySet(load_policies(args.directory, multi_tenant=multi), multi_tenant=multi)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    mode = "API keys configured: several tenants" if multi else "no API keys: one tenant, 'default'"
    print(f"tenants: {mode}")
    for name, policy in sorted(policies.policies.items()):
        on = ", ".join(n for n, _ in policy.stage_configs()) or "no stages (passthrough)"
        users, tenants = policy.match.users, policy.match.tenants
        scope = "every tenant" if EVERY_TENANT in tenants else "tenants " + ", ".join(tenants)
        if users:
            match = "users " + ", ".join(users) + (f" in {scope}" if tenants else "")
        else:
            match = f"every user of {scope}" if tenants else "-"
        print(f"ok  {name:<20} match: {match:<40} stages: {on}")
    if args.tenant is not None or args.user is not None:
        tenant = args.tenant or "default"
        policy, why = policies.explain(tenant, args.user)
        on = ", ".join(n for n, _ in policy.stage_configs()) or "no stages (passthrough)"
        who = f"user {args.user!r}" if args.user is not None else "no user"
        print(f"\ntenant {tenant!r}, {who}: policy {policy.name}\n  why: {why}\n  stages: {on}")
        if not multi and tenant != "default":
            print("  note: with no API keys configured every request's tenant is 'default'")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from steer.terminal import run_chat

    return asyncio.run(run_chat(args, None if args.server else _settings(args)))


BENCH_MODULES = {"load": "load_soak"}  # bench names whose module is named otherwise (load.py is a driver)


def cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"steer.bench.{BENCH_MODULES.get(args.bench, args.bench)}")
    return int(module.run(args) or 0)


def cmd_profiles_fit(args: argparse.Namespace) -> int:
    from steer.methods.profiles.fit import run_fit

    return run_fit(args, _settings(args))


def cmd_eval(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"steer.evals.{args.eval}")
    return int(module.run(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steer", description="Inference-time personalization proxy for LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    def server_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="steer.yaml (default: $STEER_CONFIG, else built-in defaults)")
        sp.add_argument(
            "--policies", help="policy directory (default: ./policies when there is one, else the shipped defaults)"
        )
        sp.add_argument(
            "--database", help="SQLite file (default: ./steer.db), postgresql://... URL or os.environ/NAME"
        )

    s = sub.add_parser("serve", help="run the OpenAI-compatible server")
    server_opts(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port and the database (default 1; see docs/deployment.md)",
    )
    s.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    s.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("chat", help="chat in the terminal as a given user")
    server_opts(c)
    c.add_argument("--user", default=os.environ.get("USER", "me"))
    c.add_argument("--model")
    c.add_argument("--server", help="a running steer, e.g. http://127.0.0.1:8400/v1 (default: in-process)")
    c.add_argument("--api-key", default=os.environ.get("STEER_API_KEY"))
    c.add_argument("--debug", action="store_true", help="print the steer trace of each answer")
    c.add_argument("-m", "--message", action="append", help="send this message and exit (repeatable)")
    c.set_defaults(func=cmd_chat)

    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser(
        "check", help="validate a policy directory; with --tenant/--user, say which policy applies and why"
    )
    chk.add_argument("directory")
    chk.add_argument("--config", help="steer.yaml: its `keys:` decide the tenant rule, as in `steer serve`")
    chk.add_argument(
        "--multi-tenant", action="store_true", help="apply the rule for configured API keys (several tenants)"
    )
    chk.add_argument("--tenant", help="explain the policy of a request of this tenant (default: 'default')")
    chk.add_argument("--user", help="... for this end user (none: the anonymous policy)")
    chk.set_defaults(func=cmd_policy_check)

    b = sub.add_parser("bench", help="benchmarks")
    b_sub = b.add_subparsers(dest="bench", required=True, parser_class=LazyParser)
    for name in ("overhead", "memory", "remember", "rps", "rerank", "load", "replicas"):
        bp = b_sub.add_parser(name, module=f"steer.bench.{BENCH_MODULES.get(name, name)}")
        bp.set_defaults(func=cmd_bench)

    e = sub.add_parser("eval", help="quality evaluations")
    e_sub = e.add_subparsers(dest="eval", required=True, parser_class=LazyParser)
    for name in ("prefeval", "align", "rps", "profiles"):
        ep = e_sub.add_parser(name, module=f"steer.evals.{name}")
        ep.set_defaults(func=cmd_eval)
    db = sub.add_parser("db", help="the database: migrate its schema, copy it into another")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    mig = db_sub.add_parser("migrate", help="apply the migrations the database lacks (steer serve does it too)")
    server_opts(mig)
    mig.set_defaults(func=cmd_db)
    cp = db_sub.add_parser(
        "copy", help="copy every row into another database, e.g. steer.db into postgresql://... (idempotent)"
    )
    cp.add_argument("--config", help="steer.yaml: its database_* pool and timeout settings apply")
    cp.add_argument("--from", dest="source", required=True, help="the database to read (a SQLite path or URL)")
    cp.add_argument("--to", dest="target", required=True, help="the database to write (a SQLite path or URL)")
    cp.set_defaults(func=cmd_db)
    prof = sub.add_parser("profiles", help="latent preference profiles")
    prof_sub = prof.add_subparsers(dest="profiles_command", required=True, parser_class=LazyParser)
    fit = prof_sub.add_parser(
        "fit",
        help="refit the shared prototypes from every user's feedback (torch)",
        module="steer.methods.profiles.fit",
    )
    server_opts(fit)
    fit.set_defaults(func=cmd_profiles_fit)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
