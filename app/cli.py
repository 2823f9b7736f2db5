"""`stock-sync`: serve, sync, runs, refresh, add-quantity, set-quantity, migrate, simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

import httpx
import sqlalchemy as sa

from app import cli_display
from app.config import ConfigurationError, Settings, load_settings
from app.errors import DomainError
from app.logs import configure_logging
from app.models import RunTrigger
from app.services.sync import ProgressCallback, Run, SyncOptions, run_bulk_sync
from app.wiring import open_container

log = logging.getLogger("stock_sync")

# Each simulator's own default port, so both can run side by side without --port.
SIMULATOR_PORTS = {"backmarket": 9000, "refurbed": 9100}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stock-sync", description=__doc__)
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING… (default: LOG_LEVEL, else INFO)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="start a local Back Market simulator, point the client at it and seed demo variations",
    )

    sync = commands.add_parser("sync", help="run one bulk sync now and print its report")
    sync.add_argument("--marketplace", type=int, default=1)
    sync.add_argument("--dry-run", action="store_true")
    sync.add_argument("--import-unknown", action="store_true")
    sync.add_argument(
        "--json",
        action="store_true",
        help="print the finished run as JSON on stdout (the default when stdout is not a terminal)",
    )

    runs = commands.add_parser("runs", help="list recent bulk sync runs, newest first")
    runs.add_argument("--marketplace", type=int, default=None, help="only this marketplace's")
    runs.add_argument("--limit", type=_positive_limit, default=20, help="at most this many (500)")
    runs.add_argument("--json", action="store_true", help='print {"runs": [...]} as JSON')

    refresh = commands.add_parser("refresh", help="read one variation's listing live and store it")
    refresh.add_argument("variation_id", type=int)
    refresh.add_argument("--marketplace", type=int, default=1)

    add = commands.add_parser("add-quantity", help="add (or remove) stock on Back Market")
    add.add_argument("variation_id", type=int)
    add.add_argument("quantity", type=int)
    add.add_argument("--idempotency-key")
    add.add_argument("--marketplace", type=int, default=1)

    set_ = commands.add_parser(
        "set-quantity", help="set a listing's quantity, only while it is --expected if given"
    )
    set_.add_argument("variation_id", type=int)
    set_.add_argument("quantity", type=int)
    set_.add_argument("--marketplace", type=int, default=1)
    set_.add_argument(
        "--expected",
        type=int,
        default=None,
        help="the quantity you saw: when the live one differs nothing is sent (exit 1)",
    )
    set_.add_argument("--idempotency-key")

    commands.add_parser("migrate", help="bring the database schema up to date")

    simulator = commands.add_parser(
        "simulator", help="run a local marketplace simulator (Back Market or Refurbed)"
    )
    simulator.add_argument(
        "--kind",
        choices=tuple(SIMULATOR_PORTS),
        default="backmarket",
        help="which marketplace to stand in for (default backmarket)",
    )
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument(
        "--port", type=int, default=None, help="default 9000 (backmarket), 9100 (refurbed)"
    )
    simulator.add_argument("--listings", type=int, default=5000)
    simulator.add_argument("--latency-ms", type=float, default=0.0)
    simulator.add_argument("--requests-per-10s", type=int, default=None)
    simulator.add_argument("--fault-rate", type=float, default=0.0)
    simulator.add_argument("--seed", type=int, default=42)
    simulator.add_argument("--token", default="sim-token")
    return parser


def _positive_limit(text: str) -> int:
    limit = int(text)
    if not 1 <= limit <= 500:
        raise argparse.ArgumentTypeError("must be between 1 and 500")
    return limit


@dataclass(frozen=True, slots=True)
class Streams:
    """Where a command writes: its result on `out`, progress, logs and errors on `err`."""

    out: TextIO
    err: TextIO


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`out` and `err` default to stdout and stderr; whether each is a terminal decides between
    the bar and plain lines, a table and aligned text."""
    streams = Streams(out=out or sys.stdout, err=err or sys.stderr)
    args = build_parser().parse_args(argv)
    overrides = {"log_level": args.log_level} if args.log_level else {}
    try:
        settings = load_settings(**overrides)
    except ConfigurationError as exc:
        print(f"stock-sync: {exc}", file=streams.err)
        return 2
    configure_logging(settings, stream=streams.err)
    if args.command == "simulator":
        return _run_simulator(args)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command in NEEDS_SCHEMA and (problem := asyncio.run(_schema_problem(settings))):
        print(f"stock-sync: {problem}", file=streams.err)
        return 1
    handlers = {
        "sync": _sync,
        "runs": _runs,
        "refresh": _refresh,
        "add-quantity": _add_quantity,
        "set-quantity": _set_quantity,
        "migrate": _migrate,
    }
    return asyncio.run(handlers[args.command](settings, args, streams))


# The commands that read or write the service's tables (`serve` migrates in its lifespan).
NEEDS_SCHEMA = frozenset({"sync", "runs", "refresh", "add-quantity", "set-quantity"})


async def _schema_problem(settings: Settings) -> str | None:
    """Migrate first when RUN_MIGRATIONS_ON_STARTUP is on, as `serve` does; otherwise check.
    A state a person can fix is one line saying how, not a traceback; None when ready."""
    from app.db import create_engine, describe_error
    from app.migrate import run_migrations, schema_is_current

    engine = create_engine(settings)
    try:
        if settings.run_migrations_on_startup:
            await run_migrations(engine)
        elif not await schema_is_current(engine):
            return (
                "the database is not migrated to this version (RUN_MIGRATIONS_ON_STARTUP is "
                "off): run `stock-sync migrate` first"
            )
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        return f"cannot prepare the database: {describe_error(exc)}"
    finally:
        await engine.dispose()
    return None


def _print_json(payload: Any, streams: Streams) -> None:
    print(json.dumps(payload, indent=2, default=str), file=streams.out)


def _run_simulator(args: argparse.Namespace) -> int:
    from simulator.__main__ import main as backmarket_main
    from simulator.refurbed.__main__ import main as refurbed_main

    port = SIMULATOR_PORTS[args.kind] if args.port is None else args.port
    argv = [
        "--host", args.host,
        "--port", str(port),
        "--listings", str(args.listings),
        "--latency-ms", str(args.latency_ms),
        "--fault-rate", str(args.fault_rate),
        "--seed", str(args.seed),
        "--token", args.token,
    ]  # fmt: skip
    if args.requests_per_10s is not None:
        argv += ["--requests-per-10s", str(args.requests_per_10s)]
    # Both simulators take the same options; Refurbed's `--listings` is its offers.
    simulator_main = refurbed_main if args.kind == "refurbed" else backmarket_main
    simulator_main(argv)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    if not args.demo:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
        return 0
    from simulator.demo import running_demo_marketplaces, seed_demo_database

    with running_demo_marketplaces(settings) as demo:
        settings = demo.settings
        # The simulators' uvicorn has just set uvicorn's loggers its own way: take them back,
        # and keep their access lines (the marketplaces' side, from their threads) out of the
        # service's.
        configure_logging(settings)
        logging.getLogger("uvicorn.access").addFilter(_OnlyMainThread())
        asyncio.run(
            _prepare_demo(settings, seed=partial(seed_demo_database, simulator=demo.backmarket))
        )
        print(
            "demo: " + "\n      ".join(demo.where) + "\n"
            f"  status page: http://{args.host}:{args.port}/\n"
            f"  curl -X POST 'http://{args.host}:{args.port}/sync/bulk?wait=true' "
            "-H 'Content-Type: application/json' -d '{\"marketplace_id\": 4}'\n"
            f"  curl 'http://{args.host}:{args.port}/variations/1/quantity?marketplace_id=4'",
            flush=True,
        )
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
    return 0


async def _prepare_demo(settings: Settings, *, seed: Callable[[Settings], Awaitable[int]]) -> None:
    """Seed the demo database, then sync every marketplace once, so the status page opens on
    synced stock."""
    await seed(settings)
    for config in settings.marketplace_settings():
        run = await sync_once(
            settings, SyncOptions(marketplace_id=config.id, trigger=RunTrigger.CLI)
        )
        log.info("demo: marketplace %d synced: %s", config.id, run.summary)


class _OnlyMainThread(logging.Filter):
    """Passes the lines of the service's server, which serves on the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == threading.main_thread().ident


async def _migrate(settings: Settings, _args: argparse.Namespace, streams: Streams) -> int:
    from app.db import create_engine
    from app.migrate import run_migrations

    engine = create_engine(settings)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()
    print("database is up to date", file=streams.out)
    return 0


async def _sync(settings: Settings, args: argparse.Namespace, streams: Streams) -> int:
    """Progress on stderr (a bar on a terminal, lines otherwise); the run on stdout: JSON with
    `--json` or when stdout is not a terminal (scripts), a summary for a person otherwise."""
    options = SyncOptions(
        marketplace_id=args.marketplace,
        trigger=RunTrigger.CLI,
        dry_run=args.dry_run,
        import_unknown=args.import_unknown,
    )
    display = (
        cli_display.ProgressBar(cli_display.terminal_console(streams.err))
        if cli_display.is_terminal(streams.err)
        else cli_display.PlainProgress(streams.err)
    )
    try:
        with display:
            run = await sync_once(settings, options, progress=display)
    except DomainError as exc:
        return _report_error(exc, streams)
    if args.json or not cli_display.is_terminal(streams.out):
        _print_json({"run": run.model_dump(mode="json")}, streams)
    else:
        cli_display.print_run_summary(streams.out, run)
    # A partial or failed run must fail the cron job that started it.
    return 0 if run.status == "completed" else 1


async def _runs(settings: Settings, args: argparse.Namespace, streams: Streams) -> int:
    """Recent runs from the database (no Back Market call): a table, or JSON with `--json`."""
    from app.db import create_engine
    from app.services.sync import runs

    engine = create_engine(settings)
    try:
        found = await runs.list_runs(engine, marketplace_id=args.marketplace, limit=args.limit)
    finally:
        await engine.dispose()
    if args.json:
        _print_json({"runs": [run.model_dump(mode="json") for run in found]}, streams)
    else:
        cli_display.print_runs_table(streams.out, found)
    return 0


async def sync_once(
    settings: Settings,
    options: SyncOptions,
    *,
    progress: ProgressCallback | None = None,
    backmarket_http: httpx.AsyncClient | None = None,
) -> Run:
    """`stock-sync sync`: one run on a container of its own (the database is not migrated here:
    the command line does that first, see `_schema_problem`).

    Returns the finished run (its status says completed/partial/failed). Raises Conflict when
    a run of the marketplace is going on in any process (`exc.extra["run_id"]`), InvalidRequest
    for a marketplace other than Back Market. `backmarket_http` points the client elsewhere
    (tests, the demo).
    """
    async with open_container(
        settings, backmarket_http=backmarket_http, migrate=False
    ) as container:
        return await run_bulk_sync(container.ctx, options, progress=progress)


async def _refresh(settings: Settings, args: argparse.Namespace, streams: Streams) -> int:
    from app.services.quantity import refresh_quantity

    async with open_container(settings, migrate=False) as container:
        try:
            quantity = await refresh_quantity(
                container.ctx, variation_id=args.variation_id, marketplace_id=args.marketplace
            )
        except DomainError as exc:
            return _report_error(exc, streams)
    _print_json(quantity.model_dump(mode="json"), streams)
    return 1 if quantity.stale else 0


async def _add_quantity(settings: Settings, args: argparse.Namespace, streams: Streams) -> int:
    from app.services.quantity import add_quantity, check_added_quantity

    async with open_container(settings, migrate=False) as container:
        try:
            result = await add_quantity(
                container.ctx,
                variation_id=args.variation_id,
                quantity=check_added_quantity(args.quantity, limit=settings.add_quantity_limit),
                marketplace_id=args.marketplace,
                idempotency_key=args.idempotency_key,
            )
        except DomainError as exc:
            return _report_error(exc, streams)
    _print_json(result.model_dump(mode="json"), streams)
    return 0


async def _set_quantity(settings: Settings, args: argparse.Namespace, streams: Streams) -> int:
    from app.services.quantity import set_quantity

    async with open_container(settings, migrate=False) as container:
        try:
            result = await set_quantity(
                container.ctx,
                variation_id=args.variation_id,
                quantity=args.quantity,
                expected_quantity=args.expected,
                marketplace_id=args.marketplace,
                idempotency_key=args.idempotency_key,
            )
        except DomainError as exc:
            return _report_error(exc, streams)
    _print_json(result.model_dump(mode="json"), streams)
    return 0


def _report_error(exc: DomainError, streams: Streams) -> int:
    """The same body the HTTP API would answer, on stderr; exit 1."""
    print(
        json.dumps({"status": exc.status_code, "detail": exc.detail, **exc.extra}, default=str),
        file=streams.err,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
