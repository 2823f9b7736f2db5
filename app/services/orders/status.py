"""The watcher's state in the database: its watermark and its last poll, shared by every process."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import FIRST_MARKETPLACE_ID
from app.db import reading
from app.models import OrderWatch, as_utc, table_of

watch_table = table_of(OrderWatch)

# The watch row's key: marketplace 1 keeps the row it always had.
FEED = "backmarket"


def feed_of(marketplace_id: int) -> str:
    return FEED if marketplace_id == FIRST_MARKETPLACE_ID else f"marketplace:{marketplace_id}"


class LastPoll(BaseModel):
    at: datetime | None
    calls: int
    orders: int
    listings_refreshed: int
    error: str | None


class WatcherStatus(BaseModel):
    """One marketplace's watcher, as `GET /sync/orders` answers it."""

    # Polling on schedule: ORDER_SYNC_INTERVAL_SECONDS > 0 and the marketplace's sync_enabled.
    enabled: bool
    # `marketplace.sync_enabled` as last read (0 stops the watcher without a restart).
    sync_enabled: bool = True
    interval_seconds: int
    overlap_seconds: int
    # Back Market's newest `date_modification` whose orders are all written (UTC); before the
    # first order, where the first poll read from. The next poll reads from it minus the overlap.
    watermark: datetime | None
    last_poll: LastPoll | None
    # Seconds since the last poll that read the feed to the end (None before the first).
    lag_seconds: float | None = None


async def read_watch(
    engine: AsyncEngine, *, marketplace_id: int
) -> sa.Row[tuple[object, ...]] | None:
    feed = feed_of(marketplace_id)
    async with reading(engine) as conn:
        return (
            await conn.execute(sa.select(watch_table).where(watch_table.c.feed == feed))
        ).first()


def last_poll_of(row: sa.Row[tuple[object, ...]] | None) -> LastPoll | None:
    if row is None or row.last_poll_at is None:
        return None
    return LastPoll(
        at=as_utc(row.last_poll_at),
        calls=row.last_poll_calls,
        orders=row.last_poll_orders,
        listings_refreshed=row.last_poll_listings,
        error=row.last_poll_error,
    )


async def save_poll(
    conn: AsyncConnection,
    *,
    marketplace_id: int,
    at: datetime,
    calls: int,
    orders: int,
    listings_refreshed: int,
    error: str | None,
    watermark: datetime | None = None,
) -> None:
    """Record a poll; the watermark only moves forward, and only when one is given."""
    values: dict[str, object] = {
        "last_poll_at": at,
        "last_poll_calls": calls,
        "last_poll_orders": orders,
        "last_poll_listings": listings_refreshed,
        "last_poll_error": error,
        "updated_at": at,
    }
    feed = feed_of(marketplace_id)
    # One watcher at a time holds the marketplace's orders lock, so reading then writing is safe.
    current = (
        await conn.execute(sa.select(watch_table.c.watermark).where(watch_table.c.feed == feed))
    ).first()
    if current is None:
        await conn.execute(sa.insert(watch_table).values(feed=feed, watermark=watermark, **values))
        return
    if watermark is not None and (current.watermark is None or watermark > current.watermark):
        values["watermark"] = watermark
    await conn.execute(sa.update(watch_table).where(watch_table.c.feed == feed).values(**values))


class MarketplaceWatcherStatus(WatcherStatus):
    marketplace_id: int


class OrdersWatchersStatus(WatcherStatus):
    """`GET /sync/orders`: marketplace 1's watcher at the top level (the clients written before
    there were several), and every configured marketplace's in `watchers`."""

    watchers: list[MarketplaceWatcherStatus]
