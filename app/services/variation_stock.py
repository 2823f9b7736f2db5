"""One variation's stock as the status page's look-up shows it: a row per marketplace and its
latest stock changes (`marketplace_stock_history`), read in one short transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import reading
from app.models import (
    Marketplace,
    MarketplaceStock,
    MarketplaceStockHistory,
    Variation,
    as_utc,
    table_of,
)

variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)
history_table = table_of(MarketplaceStockHistory)
marketplace_table = table_of(Marketplace)

HISTORY_ROWS = 10


@dataclass(frozen=True, slots=True)
class MarketplaceStockRow:
    marketplace_id: int
    marketplace_name: str | None
    listed_stock: int
    locked_stock: int
    available_stock: int
    last_synced_at: datetime | None


@dataclass(frozen=True, slots=True)
class StockChange:
    created_at: datetime | None
    marketplace_id: int
    change_type: str
    listed_stock_before: int
    listed_stock_after: int
    available_stock_before: int
    available_stock_after: int
    quantity_change: int
    sync_run_id: int | None
    order_id: int | None


@dataclass(frozen=True, slots=True)
class VariationStock:
    id: int
    sku: str | None
    reference_id: str | None
    reference_uuid: str | None
    listed_stock: int
    marketplaces: list[MarketplaceStockRow]
    # Newest first.
    history: list[StockChange]


async def read_variation_stock(
    engine: AsyncEngine, *, variation_id: int, history_rows: int = HISTORY_ROWS
) -> VariationStock | None:
    """The variation, its stock row per marketplace and its newest changes; None if unknown.

    What the back office soft-deleted is left out: a deleted variation is unknown, a deleted
    stock row is not shown (nor counted in the variation's total).
    """
    async with reading(engine) as conn:
        variation = (
            await conn.execute(
                sa.select(
                    variation_table.c.sku,
                    variation_table.c.reference_id,
                    variation_table.c.reference_uuid,
                    variation_table.c.listed_stock,
                ).where(
                    variation_table.c.id == variation_id, variation_table.c.deleted_at.is_(None)
                )
            )
        ).first()
        if variation is None:
            return None
        stock_rows = (
            await conn.execute(
                sa.select(
                    stock_table.c.marketplace_id,
                    marketplace_table.c.name,
                    stock_table.c.listed_stock,
                    stock_table.c.locked_stock,
                    stock_table.c.available_stock,
                    stock_table.c.last_synced_at,
                )
                .select_from(
                    stock_table.outerjoin(
                        marketplace_table, marketplace_table.c.id == stock_table.c.marketplace_id
                    )
                )
                .where(
                    stock_table.c.variation_id == variation_id, stock_table.c.deleted_at.is_(None)
                )
                .order_by(stock_table.c.marketplace_id)
            )
        ).all()
        # By id, not created_at: changes of one moment keep the order they were written in.
        change_rows = (
            await conn.execute(
                sa.select(
                    history_table.c.created_at,
                    history_table.c.marketplace_id,
                    history_table.c.change_type,
                    history_table.c.listed_stock_before,
                    history_table.c.listed_stock_after,
                    history_table.c.available_stock_before,
                    history_table.c.available_stock_after,
                    history_table.c.quantity_change,
                    history_table.c.sync_run_id,
                    history_table.c.order_id,
                )
                .where(history_table.c.variation_id == variation_id)
                .order_by(history_table.c.id.desc())
                .limit(history_rows)
            )
        ).all()
    return VariationStock(
        id=variation_id,
        sku=variation.sku,
        reference_id=variation.reference_id,
        reference_uuid=variation.reference_uuid,
        listed_stock=variation.listed_stock or 0,
        marketplaces=[
            MarketplaceStockRow(
                marketplace_id=row.marketplace_id,
                marketplace_name=row.name,
                listed_stock=row.listed_stock,
                locked_stock=row.locked_stock,
                available_stock=row.available_stock,
                last_synced_at=as_utc(row.last_synced_at),
            )
            for row in stock_rows
        ],
        history=[
            StockChange(
                created_at=as_utc(row.created_at),
                marketplace_id=row.marketplace_id,
                change_type=row.change_type,
                listed_stock_before=row.listed_stock_before,
                listed_stock_after=row.listed_stock_after,
                available_stock_before=row.available_stock_before,
                available_stock_after=row.available_stock_after,
                quantity_change=row.quantity_change,
                sync_run_id=row.sync_run_id,
                order_id=row.order_id,
            )
            for row in change_rows
        ],
    )
