"""`stock-sync`: serve, sync, refresh, add-quantity, migrate, simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from app.config import ConfigurationError, Settings, load_settings
from app.errors import DomainError
from app.logs import configure_logging
from app.models import RunTrigger
from app.services.sync import ProgressCallback, Run, SyncOptions, run_bulk_sync
from app.wiring import open_container

log = logging.getLogger("stock_sync")


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

    refresh = commands.add_parser("refresh", help="read one variation's listing live and store it")
    refresh.add_argument("variation_id", type=int)
    refresh.add_argument("--marketplace", type=int, default=1)

    add = commands.add_parser("add-quantity", help="add (or remove) stock on Back Market")
    add.add_argument("variation_id", type=int)
    add.add_argument("quantity", type=int)
    add.add_argument("--idempotency-key")
    add.add_argument("--marketplace", type=int, default=1)

    commands.add_parser("migrate", help="bring the database schema up to date")

    simulator = commands.add_parser("simulator", help="run the local Back Market simulator")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=9000)
    simulator.add_argument("--listings", type=int, default=5000)
    simulator.add_argument("--latency-ms", type=float, default=0.0)
    simulator.add_argument("--requests-per-10s", type=int, default=None)
    simulator.add_argument("--fault-rate", type=float, default=0.0)
    simulator.add_argument("--seed", type=int, default=42)
    simulator.add_argument("--token", default="sim-token")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"log_level": args.log_level} if args.log_level else {}
    try:
        settings = load_settings(**overrides)
    except ConfigurationError as exc:
        print(f"stock-sync: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "simulator":
        return _run_simulator(args)
    if args.command == "serve":
        return _serve(settings, args)
    handlers = {
        "sync": _sync,
        "refresh": _refresh,
        "add-quantity": _add_quantity,
        "migrate": _migrate,
    }
    return asyncio.run(handlers[args.command](settings, args))


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _run_simulator(args: argparse.Namespace) -> int:
    from simulator.__main__ import main as simulator_main

    argv = [
        "--host", args.host,
        "--port", str(args.port),
        "--listings", str(args.listings),
        "--latency-ms", str(args.latency_ms),
        "--fault-rate", str(args.fault_rate),
        "--seed", str(args.seed),
        "--token", args.token,
    ]  # fmt: skip
    if args.requests_per_10s is not None:
        argv += ["--requests-per-10s", str(args.requests_per_10s)]
    simulator_main(argv)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    if not args.demo:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
        return 0
    from simulator.demo import demo_settings, running_demo_simulator, seed_demo_database

    with running_demo_simulator() as simulator:
        settings = demo_settings(settings, simulator)
        asyncio.run(seed_demo_database(settings, simulator))
        print(
            f"demo: Back Market simulator at {simulator.base_url}; try\n"
            f"  curl -X POST 'http://{args.host}:{args.port}/sync/bulk?wait=true'\n"
            f"  curl 'http://{args.host}:{args.port}/variations/1/quantity'",
            flush=True,
        )
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
    return 0


async def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from app.db import create_engine
    from app.migrate import run_migrations

    engine = create_engine(settings)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()
    print("database is up to date")
    return 0


async def _sync(settings: Settings, args: argparse.Namespace) -> int:
    def progress(run: Run) -> None:
        expected = run.pages_expected or "?"
        print(
            f"run {run.id}: pages {run.pages_fetched}/{expected}, listings {run.listings_seen}, "
            f"updated {run.updated}, unchanged {run.unchanged}, skipped_newer {run.skipped_newer}",
            file=sys.stderr,
            flush=True,
        )

    options = SyncOptions(
        marketplace_id=args.marketplace,
        trigger=RunTrigger.CLI,
        dry_run=args.dry_run,
        import_unknown=args.import_unknown,
    )
    try:
        run = await sync_once(settings, options, progress=progress)
    except DomainError as exc:
        return _report_error(exc)
    _print_json({"run": run.model_dump(mode="json")})
    # A partial or failed run must fail the cron job that started it.
    return 0 if run.status == "completed" else 1


async def sync_once(
    settings: Settings,
    options: SyncOptions,
    *,
    progress: ProgressCallback | None = None,
    backmarket_http: httpx.AsyncClient | None = None,
) -> Run:
    """`stock-sync sync`: one run on a container of its own (the database is not migrated).

    Returns the finished run (its status says completed/partial/failed). Raises Conflict when
    a run of the marketplace is going on in any process (`exc.extra["run_id"]`), InvalidRequest
    for a marketplace other than Back Market. `backmarket_http` points the client elsewhere
    (tests, the demo).
    """
    async with open_container(
        settings, backmarket_http=backmarket_http, migrate=False
    ) as container:
        return await run_bulk_sync(container.ctx, options, progress=progress)


async def _refresh(settings: Settings, args: argparse.Namespace) -> int:
    from app.services.quantity import refresh_quantity

    async with open_container(settings) as container:
        try:
            quantity = await refresh_quantity(
                container.ctx, variation_id=args.variation_id, marketplace_id=args.marketplace
            )
        except DomainError as exc:
            return _report_error(exc)
    _print_json(quantity.model_dump(mode="json"))
    return 1 if quantity.stale else 0


async def _add_quantity(settings: Settings, args: argparse.Namespace) -> int:
    from app.services.quantity import add_quantity, check_added_quantity

    async with open_container(settings) as container:
        try:
            result = await add_quantity(
                container.ctx,
                variation_id=args.variation_id,
                quantity=check_added_quantity(args.quantity, limit=settings.add_quantity_limit),
                marketplace_id=args.marketplace,
                idempotency_key=args.idempotency_key,
            )
        except DomainError as exc:
            return _report_error(exc)
    _print_json(result.model_dump(mode="json"))
    return 0


def _report_error(exc: DomainError) -> int:
    """The same body the HTTP API would answer, on stderr; exit 1."""
    print(
        json.dumps({"status": exc.status_code, "detail": exc.detail, **exc.extra}, default=str),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
