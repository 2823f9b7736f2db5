"""Helpers of the orders watcher tests: variations following simulator listings, another
process on the same database, and the rows the watcher writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services.orders import PollOutcome
from app.wiring import Container, open_container
from tests.quantity.support import seed_stock
from tests.sync.support import add_variation

WATCHER_TABLES = ("backmarket_order_watch", "backmarket_order_lines", "backmarket_stock_additions")
ORDERS_READ = "GET /ws/orders 200"
LISTING_READ = "GET /ws/listings/{listingId} 200"


@dataclass(frozen=True)
class Followed:
    variation_id: int
    id: str
    listing_id: int
    sku: str


async def follow(
    service: Any,
    index: int,
    *,
    quantity: int = 10,
    by: Literal["both", "listing_id", "sku"] = "both",
) -> Followed:
    """Simulator listing `index` holding `quantity`, and a variation following it, its stock as
    a bulk sync left it. `by="sku"`: no reference at all, only `variation.sku`."""
    identity = service.simulator.store.identity(index)
    service.simulator.set_quantity(identity.listing_id, quantity)
    variation_id = await add_variation(
        service.engine,
        reference_id=str(identity.listing_id) if by != "sku" else None,
        reference_uuid=identity.id if by == "both" else None,
        sku=identity.sku if by == "sku" else None,
    )
    await seed_stock(service.engine, variation_id=variation_id, quantity=quantity)
    return Followed(variation_id, identity.id, identity.listing_id, identity.sku)


async def poll(service_or_container: Any) -> PollOutcome | None:
    container = getattr(service_or_container, "app", None)
    found: Container = container.state.container if container is not None else service_or_container
    return await found.watcher.poll()


async def polled(service_or_container: Any) -> PollOutcome:
    """One poll that must have run (not skipped for another process)."""
    outcome = await poll(service_or_container)
    assert outcome is not None, "the poll was skipped: the orders lock is held"
    return outcome


@asynccontextmanager
async def another_process(settings: Settings, simulator_app: FastAPI) -> AsyncIterator[Container]:
    """What a second replica (or this one after a restart) has: its own engine, client, locks."""
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=simulator_app),
            base_url=settings.backmarket_base_url,
        ) as backmarket_http,
        open_container(settings, backmarket_http=backmarket_http, migrate=False) as container,
    ):
        container.ctx.marketplaces.get(1).client.backoff_base_seconds = 0.0
        container.ctx.marketplaces.get(1).client.backoff_cap_seconds = 0.0
        yield container


def calls(simulator: Any, endpoint: str) -> int:
    return int(simulator.stats()["by_endpoint"].get(endpoint, 0))


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.text(sql), params)).mappings().all())


async def listed_stock(engine: AsyncEngine, variation_id: int) -> tuple[int, int]:
    """(marketplace_stock.listed_stock on Back Market, variation.listed_stock)."""
    [row] = await rows(
        engine,
        "SELECT s.listed_stock AS stock, v.listed_stock AS variation FROM marketplace_stock s "
        "JOIN variation v ON v.id = s.variation_id WHERE s.variation_id = :v "
        "AND s.marketplace_id = 1",
        v=variation_id,
    )
    return row["stock"], row["variation"]


async def order_sync_history(engine: AsyncEngine, variation_id: int) -> list[Any]:
    return await rows(
        engine,
        "SELECT listed_stock_before, listed_stock_after, quantity_change, order_id, "
        "order_item_id FROM marketplace_stock_history WHERE variation_id = :v "
        "AND change_type = 'order_sync' ORDER BY id",
        v=variation_id,
    )


async def history_count(engine: AsyncEngine) -> int:
    [row] = await rows(engine, "SELECT COUNT(*) AS n FROM marketplace_stock_history")
    return int(row["n"])


async def seen_lines(engine: AsyncEngine) -> dict[int, int]:
    """line id -> the state the watcher acted on."""
    found = await rows(engine, "SELECT line_id, state FROM backmarket_order_lines")
    return {row["line_id"]: row["state"] for row in found}


async def watermark(service: Any) -> datetime | None:
    """The watermark GET /sync/orders shows (aware UTC), None before any."""
    response = await service.http.get("/sync/orders")
    assert response.status_code == 200, response.text
    shown = response.json()["watermark"]
    return None if shown is None else datetime.fromisoformat(shown)
