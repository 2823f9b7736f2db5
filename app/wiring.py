"""The composition root: every long-lived part of a process, built once and handed down typed.

The API (`app.main`) and the command line (`app.cli`) both open a `Container` and reach the
use cases through it; no use case imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import FIRST_MARKETPLACE_ID, MarketplaceSettings, Settings
from app.db import create_engine, transaction
from app.migrate import run_migrations
from app.models import Marketplace as MarketplaceRow
from app.models import table_of
from app.services.backmarket.adapter import BackMarketMarketplace
from app.services.context import ServiceContext
from app.services.locks import NamedLocks
from app.services.marketplace import Marketplace, MarketplaceRegistry
from app.services.orders import OrdersWatcher
from app.services.refurbed import build_refurbed_marketplace
from app.services.sync import BulkSyncRunner, SyncScheduler, close_stale_runs

log = logging.getLogger(__name__)


marketplace_table = table_of(MarketplaceRow)


@dataclass(frozen=True, slots=True)
class Container:
    """What a process shares: the use cases' context, the bulk sync runner, and per configured
    marketplace its schedule slot and its orders watcher."""

    ctx: ServiceContext
    runner: BulkSyncRunner
    schedulers: Mapping[int, SyncScheduler]
    watchers: Mapping[int, OrdersWatcher]

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def scheduler(self) -> SyncScheduler:
        """Marketplace 1's schedule (`GET /sync/schedule`, `/readyz`)."""
        return self.schedulers[FIRST_MARKETPLACE_ID]

    @property
    def watcher(self) -> OrdersWatcher:
        """Marketplace 1's orders watcher (the top level of `GET /sync/orders`)."""
        return self.watchers[FIRST_MARKETPLACE_ID]


def build_marketplace(
    config: MarketplaceSettings, *, http: httpx.AsyncClient | None = None
) -> Marketplace:
    """The adapter of one configured marketplace, by its kind; each has its own HTTP client
    (unless handed one), request budget and update budget."""
    if config.kind == "backmarket":
        return BackMarketMarketplace.build(config, http=http)
    return build_refurbed_marketplace(
        marketplace_id=config.id,
        name=config.name,
        token=None if config.token is None else config.token.get_secret_value(),
        base_url=config.base_url,
        requests_per_10s=config.requests_per_10s,
        updates_per_hour=config.updates_per_hour,
        http=http,
    )


async def ensure_marketplace_rows(engine: AsyncEngine, registry: MarketplaceRegistry) -> None:
    """Create the `marketplace` row of each configured marketplace that has none, named by
    `MARKETPLACE_<ID>_NAME` (existing rows are left as they are)."""
    async with transaction(engine) as conn:
        existing = set(
            (
                await conn.execute(
                    sa.select(marketplace_table.c.id).where(
                        marketplace_table.c.id.in_(registry.ids)
                    )
                )
            ).scalars()
        )
        missing = [
            {"id": adapter.id, "name": adapter.name}
            for adapter in registry
            if adapter.id not in existing
        ]
        if missing:
            await conn.execute(sa.insert(marketplace_table), missing)
            log.info("created marketplace rows: %s", missing)


@asynccontextmanager
async def open_container(
    settings: Settings,
    *,
    backmarket_http: httpx.AsyncClient | None = None,
    marketplace_http: Mapping[int, httpx.AsyncClient] | None = None,
    migrate: bool | None = None,
) -> AsyncIterator[Container]:
    """Engine (migrated unless told not to), one adapter per configured marketplace, locks,
    runner, and each marketplace's schedule and watcher.

    `backmarket_http` is marketplace 1's HTTP client, `marketplace_http` any other's by id (tests
    hand in clients wired to simulators); a marketplace without one builds its own.

    Nothing runs in the background yet: `start_background` does that (the API's lifespan),
    the command line does not. Everything is closed on exit.
    """
    engine = create_engine(settings)
    try:
        if settings.run_migrations_on_startup if migrate is None else migrate:
            await run_migrations(engine)
        clients = {FIRST_MARKETPLACE_ID: backmarket_http, **(marketplace_http or {})}
        registry = MarketplaceRegistry(
            build_marketplace(config, http=clients.get(config.id))
            for config in settings.marketplace_settings()
        )
        try:
            try:
                await ensure_marketplace_rows(engine, registry)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                # Start anyway so /readyz can say what is wrong; live work on a marketplace
                # whose row is missing answers 422 until it exists.
                log.warning("could not create missing marketplace rows at start-up: %s", exc)
            ctx = ServiceContext(
                settings=settings, engine=engine, marketplaces=registry, locks=NamedLocks(engine)
            )
            runner = BulkSyncRunner(ctx)
            yield Container(
                ctx=ctx,
                runner=runner,
                schedulers={
                    marketplace.id: SyncScheduler(
                        runner=runner,
                        interval_minutes=settings.sync_interval_minutes,
                        marketplace_id=marketplace.id,
                    )
                    for marketplace in registry
                },
                watchers={
                    marketplace.id: OrdersWatcher(ctx, marketplace) for marketplace in registry
                },
            )
        finally:
            await registry.aclose()
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
    for marketplace_id, scheduler in container.schedulers.items():
        container.watchers[marketplace_id].schedule(scheduler.scheduler)
        scheduler.start()


async def stop_background(container: Container) -> None:
    """No new scheduled run, then the runs still going end as `failed`."""
    for scheduler in container.schedulers.values():
        scheduler.shutdown()
    for watcher in container.watchers.values():
        await watcher.shutdown()
    await container.runner.shutdown()
