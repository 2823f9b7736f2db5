"""Helpers of the on-demand quantity tests: linked listings, stored rows, simulator counts."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import (
    ChangeType,
    IdempotencyKey,
    ListingUpdateBudget,
    MarketplaceStock,
    MarketplaceStockHistory,
    Variation,
    table_of,
)
from app.services.locks import hold_variation
from app.services.stock import StockObservation, write_observations

START_QUANTITY = 5
VARIATION_ID = 101
# Enough for concurrent requests to interleave in the in-process simulator (see below).
INTERLEAVING_LATENCY_MS = 3.0


@dataclass(frozen=True)
class LinkedListing:
    variation_id: int
    id: str
    listing_id: int
    sku: str


async def insert_variation(
    engine: AsyncEngine,
    *,
    variation_id: int,
    reference_id: str | None,
    reference_uuid: str | None,
    sku: str | None = None,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(table_of(Variation)).values(
                id=variation_id,
                reference_id=reference_id,
                reference_uuid=reference_uuid,
                sku=sku,
                listed_stock=0,
            )
        )


async def add_linked_listing(
    service: Any, *, variation_id: int, quantity: int = START_QUANTITY, sku: str | None = None
) -> LinkedListing:
    """A new simulator listing holding `quantity`, and a variation referencing it."""
    identity = service.simulator.add_listing(
        quantity=quantity, sku=sku or f"TEST-{variation_id}", publication_state=2
    )
    await insert_variation(
        service.engine,
        variation_id=variation_id,
        reference_id=str(identity["listing_id"]),
        reference_uuid=identity["id"],
    )
    return LinkedListing(
        variation_id=variation_id,
        id=identity["id"],
        listing_id=identity["listing_id"],
        sku=identity["sku"],
    )


async def seed_stock(
    engine: AsyncEngine, *, variation_id: int, quantity: int, locked: int = 0
) -> None:
    """A stored stock row, written the way the service writes (history included)."""
    async with engine.begin() as conn:
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[StockObservation(variation_id=variation_id, quantity=quantity)],
            change_type=ChangeType.BULK_SYNC,
        )
        if locked:
            stock = table_of(MarketplaceStock)
            await conn.execute(
                sa.update(stock)
                .where(stock.c.variation_id == variation_id)
                .values(locked_stock=locked, available_stock=max(0, quantity - locked))
            )


async def stock_row(engine: AsyncEngine, variation_id: int, marketplace_id: int = 1) -> Any:
    stock = table_of(MarketplaceStock)
    async with engine.connect() as conn:
        return (
            (
                await conn.execute(
                    sa.select(stock).where(
                        stock.c.variation_id == variation_id,
                        stock.c.marketplace_id == marketplace_id,
                    )
                )
            )
            .mappings()
            .first()
        )


async def variation_row(engine: AsyncEngine, variation_id: int) -> Any:
    variation = table_of(Variation)
    async with engine.connect() as conn:
        return (
            (await conn.execute(sa.select(variation).where(variation.c.id == variation_id)))
            .mappings()
            .one()
        )


async def history_rows(engine: AsyncEngine, variation_id: int) -> list[Any]:
    history = table_of(MarketplaceStockHistory)
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(history)
                    .where(history.c.variation_id == variation_id)
                    .order_by(history.c.id)
                )
            )
            .mappings()
            .all()
        )


async def key_rows(engine: AsyncEngine) -> list[Any]:
    keys = table_of(IdempotencyKey)
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(keys).order_by(keys.c.id))).mappings().all())


async def budget_rows(engine: AsyncEngine) -> int:
    updates = table_of(ListingUpdateBudget)
    async with engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(updates))).scalar_one()
        )


def update_calls(simulator: Any) -> list[dict[str, Any]]:
    """Listing updates that reached Back Market's origin."""
    return list(simulator.stats()["updates"])


def requests_sent(simulator: Any) -> int:
    return int(simulator.stats()["total_requests"])


def interleave_requests(simulator: Any) -> None:
    """Make every Back Market answer wait a few milliseconds, so concurrent requests interleave.

    The in-process simulator otherwise answers without yielding to the event loop: fifty
    "concurrent" additions would run one after another, and a test of a lock would pass with
    the lock removed.
    """
    simulator.configure(latency_ms=INTERLEAVING_LATENCY_MS)


def holding_variation(service: Any, variation_id: int) -> AbstractAsyncContextManager[Any]:
    """The variation's lock held by the test, as another stock change in this service would."""
    ctx = service.app.state.container.ctx
    return hold_variation(
        engine=ctx.engine,
        locks=ctx.locks,
        settings=ctx.settings,
        variation_id=variation_id,
        wait_seconds=1,
    )
