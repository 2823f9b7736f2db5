"""The composition root: every long-lived part of a process, built once and handed down typed.

The API (`app.main`) and the command line (`app.cli`) both open a `Container` and reach the
use cases through it; no use case imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from app.config import Settings
from app.db import create_engine
from app.migrate import run_migrations
from app.services.backmarket import BackMarketClient
from app.services.context import ServiceContext
from app.services.locks import NamedLocks
from app.services.orders import OrdersWatcher
from app.services.sync import BulkSyncRunner, SyncScheduler, close_stale_runs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Container:
    """What a process shares: the use cases' context, the bulk sync runner, the schedule and
    the orders watcher."""

    ctx: ServiceContext
    runner: BulkSyncRunner
    scheduler: SyncScheduler
    watcher: OrdersWatcher

    @property
    def settings(self) -> Settings:
        return self.ctx.settings


@asynccontextmanager
async def open_container(
    settings: Settings,
    *,
    backmarket_http: httpx.AsyncClient | None = None,
    migrate: bool | None = None,
) -> AsyncIterator[Container]:
    """Engine (migrated unless told not to), Back Market client, locks, runner and schedule.

    Nothing runs in the background yet: `start_background` does that (the API's lifespan),
    the command line does not. Everything is closed on exit.
    """
    engine = create_engine(settings)
    try:
        if settings.run_migrations_on_startup if migrate is None else migrate:
            await run_migrations(engine)
        backmarket = BackMarketClient(settings, http=backmarket_http)
        try:
            ctx = ServiceContext(
                settings=settings, engine=engine, backmarket=backmarket, locks=NamedLocks(engine)
            )
            runner = BulkSyncRunner(ctx)
            scheduler = SyncScheduler(
                runner=runner, interval_minutes=settings.sync_interval_minutes
            )
            yield Container(ctx=ctx, runner=runner, scheduler=scheduler, watcher=OrdersWatcher(ctx))
        finally:
            await backmarket.aclose()
    finally:
        await engine.dispose()


async def start_background(container: Container) -> None:
    """Runs left `running` by a dead process are closed, then the schedule and the orders
    watcher start (on the same in-process scheduler)."""
    try:
        await close_stale_runs(container.ctx)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        # Start anyway so /readyz can say what is wrong; the next run closes dead runs of its
        # marketplace when it takes the lock.
        log.warning("could not close stale bulk sync runs at start-up: %s", exc)
    container.watcher.schedule(container.scheduler.scheduler)
    container.scheduler.start()


async def stop_background(container: Container) -> None:
    """No new scheduled run, then the runs still going end as `failed`."""
    container.scheduler.shutdown()
    await container.watcher.shutdown()
    await container.runner.shutdown()
