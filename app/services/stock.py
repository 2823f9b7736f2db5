"""The one place that writes stock. Bulk sync, refresh and add-quantity all go through it.

After every write: `available_stock = max(0, listed_stock - locked_stock)` and
`variation.listed_stock = SUM(marketplace_stock.listed_stock)` over its marketplaces, for
every variation observed, whether its own row changed or its total was wrong before (the back
office's older code set totals directly); one history row per changed stock row, none for an
unchanged one. Only marketplace 1's observations update `variation.sku` and
`variation.state`: other marketplaces are matched by the SKU and never rewrite it.

Soft-deleted rows (`deleted_at` set by the back office) are left alone: a deleted variation is
not written at all, a deleted stock row is neither written nor summed.

A write is set-based: one SELECT … FOR UPDATE of the rows, one multi-row upsert, one
multi-row history insert, one UPDATE of the variations, whatever the batch size. The
caller owns the (short) transaction and never holds it across an HTTP call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.db import database_now, is_mysql
from app.models import ChangeType, MarketplaceStock, MarketplaceStockHistory, Variation, table_of

stock_table = table_of(MarketplaceStock)
history_table = table_of(MarketplaceStockHistory)
variation_table = table_of(Variation)

# Variations per set of statements: the upsert's 10 parameters a row and the variation
# UPDATE's CASE lists stay far below SQLite's limit of 32,766 parameters a statement.
WRITE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class StockObservation:
    """What Back Market said a variation's listing holds.

    `not_changed_since` (database clock): the row is written only if it has not changed
    after that moment, so an older snapshot never overwrites a newer value. None writes
    regardless (Back Market's answer to our own update is the newest value there is).
    """

    variation_id: int
    quantity: int
    sku: str | None = None
    publication_state: int | None = None
    not_changed_since: datetime | None = None
    reference_id: str | None = None
    # The listing's or offer's own id on the marketplace, kept on the stock row for live calls.
    listing_reference: str | None = None
    # The Back Market order line this observation was read for (the orders watcher).
    order_id: int | None = None
    order_item_id: int | None = None


@dataclass(frozen=True, slots=True)
class StockRow:
    variation_id: int
    marketplace_id: int
    listed_stock: int
    locked_stock: int
    available_stock: int
    last_api_quantity: int | None
    last_synced_at: datetime | None


@dataclass(frozen=True, slots=True)
class StockDifference:
    """A stock row the write changed from a value other than the one observed (drift)."""

    variation_id: int
    stored: int
    live: int
    # When the marketplace last confirmed the stored value; None when it never did.
    confirmed_at: datetime | None


@dataclass
class StockWriteResult:
    updated: int = 0
    unchanged: int = 0
    skipped_newer: int = 0
    created: int = 0
    # Variations whose `listed_stock` total the write corrected.
    resummed: int = 0
    # The rows written whose stored listed stock differed from the observed one.
    differences: list[StockDifference] = field(default_factory=list)
    # variation_id -> the row as it stands after the write (as it would, in a dry run)
    rows: dict[int, StockRow] = field(default_factory=dict)
    skipped_variation_ids: set[int] = field(default_factory=set)


def available_stock(listed_stock: int, locked_stock: int) -> int:
    return max(0, listed_stock - locked_stock)


async def write_observations(
    conn: AsyncConnection,
    *,
    marketplace_id: int,
    observations: Sequence[StockObservation],
    change_type: ChangeType,
    sync_run_id: int | None = None,
    idempotency_key: str | None = None,
    notes: str | None = None,
    dry_run: bool = False,
) -> StockWriteResult:
    """Apply observations to `marketplace_stock` and `variation` inside the caller's transaction.

    Of several observations of one variation the last wins. Large inputs are written in
    chunks of WRITE_CHUNK variations, each still set-based.
    """
    latest = {obs.variation_id: obs for obs in observations}
    result = StockWriteResult()
    pending = list(latest.values())
    for start in range(0, len(pending), WRITE_CHUNK):
        chunk = await _write_chunk(
            conn,
            marketplace_id=marketplace_id,
            latest={obs.variation_id: obs for obs in pending[start : start + WRITE_CHUNK]},
            change_type=change_type,
            sync_run_id=sync_run_id,
            idempotency_key=idempotency_key,
            notes=notes,
            dry_run=dry_run,
        )
        result.updated += chunk.updated
        result.unchanged += chunk.unchanged
        result.skipped_newer += chunk.skipped_newer
        result.created += chunk.created
        result.resummed += chunk.resummed
        result.differences.extend(chunk.differences)
        result.rows.update(chunk.rows)
        result.skipped_variation_ids |= chunk.skipped_variation_ids
    return result


async def _write_chunk(
    conn: AsyncConnection,
    *,
    marketplace_id: int,
    latest: dict[int, StockObservation],
    change_type: ChangeType,
    sync_run_id: int | None,
    idempotency_key: str | None,
    notes: str | None,
    dry_run: bool,
) -> StockWriteResult:
    result = StockWriteResult()
    now = await database_now(conn)
    current = await _lock_rows(conn, marketplace_id=marketplace_id, variation_ids=sorted(latest))

    upserts: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    touched_ids: list[int] = []
    feed_changes: list[StockObservation] = []
    # stock row id -> the listing reference to store, for rows not upserted below.
    new_references: dict[int, str] = {}
    writes_variation_feed = marketplace_id == FIRST_MARKETPLACE_ID
    for variation_id, obs in latest.items():
        if variation_id not in current:
            continue  # the variation is gone or soft-deleted: nothing to attach stock to
        row = current[variation_id]
        if row["stock_deleted_at"] is not None:
            continue  # the back office deleted this row: it stays as it was
        has_stock = row["stock_id"] is not None
        reference = obs.listing_reference or (row["listing_reference"] if has_stock else None)
        if has_stock and reference is not None and reference != row["listing_reference"]:
            new_references[row["stock_id"]] = reference
        if (
            has_stock
            and obs.not_changed_since is not None
            and row["stock_changed_at"] is not None
            and row["stock_changed_at"] > obs.not_changed_since
        ):
            result.skipped_newer += 1
            result.skipped_variation_ids.add(variation_id)
            result.rows[variation_id] = _stock_row(row, marketplace_id)
            continue
        if writes_variation_feed and (
            (obs.sku is not None and obs.sku != row["sku"])
            or (obs.publication_state is not None and obs.publication_state != row["state"])
        ):
            feed_changes.append(obs)
        locked = row["locked_stock"] if has_stock else 0
        after = StockRow(
            variation_id=variation_id,
            marketplace_id=marketplace_id,
            listed_stock=obs.quantity,
            locked_stock=locked,
            available_stock=available_stock(obs.quantity, locked),
            last_api_quantity=obs.quantity,
            last_synced_at=now,
        )
        result.rows[variation_id] = after
        stock_changed = not has_stock or (
            row["listed_stock"] != after.listed_stock
            or row["available_stock"] != after.available_stock
        )
        if not stock_changed and row["last_api_quantity"] == after.last_api_quantity:
            result.unchanged += 1
            touched_ids.append(row["stock_id"])
            continue
        result.updated += 1
        if not has_stock:
            result.created += 1
        else:
            new_references.pop(row["stock_id"], None)
            if row["listed_stock"] != after.listed_stock:
                result.differences.append(
                    StockDifference(
                        variation_id=variation_id,
                        stored=row["listed_stock"],
                        live=after.listed_stock,
                        confirmed_at=row["last_synced_at"],
                    )
                )
        upserts.append(
            {
                "variation_id": variation_id,
                "marketplace_id": marketplace_id,
                "listed_stock": after.listed_stock,
                "locked_stock": locked,
                "available_stock": after.available_stock,
                "last_api_quantity": after.last_api_quantity,
                "last_synced_at": now,
                "stock_changed_at": now if stock_changed else row["stock_changed_at"],
                "listing_reference": reference,
                "created_at": now,
                "updated_at": now,
            }
        )
        if not stock_changed:
            # Only `last_api_quantity` was filled in (a first sync over the seed's rows): the
            # listed stock did not change, so it is no stock change to record.
            continue
        before_listed = row["listed_stock"] if has_stock else 0
        history.append(
            {
                "marketplace_stock_id": row["stock_id"],
                "variation_id": variation_id,
                "marketplace_id": marketplace_id,
                "listed_stock_before": before_listed,
                "listed_stock_after": after.listed_stock,
                "locked_stock_before": locked,
                "locked_stock_after": locked,
                "available_stock_before": row["available_stock"] if has_stock else 0,
                "available_stock_after": after.available_stock,
                "quantity_change": after.listed_stock - before_listed,
                "change_type": change_type.value,
                "reference_id": obs.reference_id,
                "notes": notes,
                "sync_run_id": sync_run_id,
                "idempotency_key": idempotency_key,
                "order_id": obs.order_id,
                "order_item_id": obs.order_item_id,
                "created_at": now,
                "updated_at": now,
            }
        )
    if dry_run:
        return result

    if upserts:
        # One cached statement, the rows as executemany parameters: the drivers send them
        # as multi-row INSERTs, and SQLAlchemy compiles the statement once, not per batch.
        await conn.execute(_upsert_statement(conn), upserts)
    if history:
        await _fill_new_history_row_ids(conn, marketplace_id=marketplace_id, history=history)
        await conn.execute(sa.insert(history_table), history)
    if touched_ids:
        await conn.execute(
            sa.update(stock_table)
            .where(stock_table.c.id.in_(touched_ids))
            .values(last_synced_at=now)
        )
    if new_references:
        await conn.execute(
            sa.update(stock_table)
            .where(stock_table.c.id.in_(list(new_references)))
            .values(
                listing_reference=sa.case(
                    new_references, value=stock_table.c.id, else_=stock_table.c.listing_reference
                )
            )
        )
    if current:
        # Every variation observed, not only those whose row changed: a total the back
        # office's older code set directly is wrong whatever this write did.
        result.resummed = await _resum(conn, current=current, now=now)
    if feed_changes:
        await _update_sku_and_state(conn, feed_changes)
    return result


async def _lock_rows(
    conn: AsyncConnection, *, marketplace_id: int, variation_ids: list[int]
) -> dict[int, Any]:
    """The variations and their stock rows, locked in one statement (variation rows first).

    Locking the variation rows serialises writers of one variation, so each computes its
    listed_stock sum over what the others committed. Soft-deleted variations are left out.
    """
    joined = variation_table.outerjoin(
        stock_table,
        sa.and_(
            stock_table.c.variation_id == variation_table.c.id,
            stock_table.c.marketplace_id == marketplace_id,
        ),
    )
    query = (
        sa.select(
            variation_table.c.id.label("variation_id"),
            variation_table.c.sku,
            variation_table.c.state,
            stock_table.c.id.label("stock_id"),
            stock_table.c.listed_stock,
            stock_table.c.locked_stock,
            stock_table.c.available_stock,
            stock_table.c.last_api_quantity,
            stock_table.c.last_synced_at,
            stock_table.c.stock_changed_at,
            stock_table.c.listing_reference,
            stock_table.c.deleted_at.label("stock_deleted_at"),
        )
        .select_from(joined)
        .where(variation_table.c.id.in_(variation_ids), variation_table.c.deleted_at.is_(None))
        .order_by(variation_table.c.id)
    )
    if is_mysql(conn):
        # SQLite already holds the database write lock (BEGIN IMMEDIATE).
        query = query.with_for_update()
    rows = (await conn.execute(query)).mappings().all()
    return {row["variation_id"]: row for row in rows}


def _upsert_statement(conn: AsyncConnection) -> sa.Executable:
    updated_columns = (
        "listed_stock",
        "available_stock",
        "last_api_quantity",
        "last_synced_at",
        "stock_changed_at",
        "listing_reference",
        "updated_at",
    )
    if is_mysql(conn):
        mysql_insert = mysql.insert(stock_table)
        return mysql_insert.on_duplicate_key_update(
            {name: mysql_insert.inserted[name] for name in updated_columns}
        )
    sqlite_insert = sqlite.insert(stock_table)
    return sqlite_insert.on_conflict_do_update(
        index_elements=[stock_table.c.variation_id, stock_table.c.marketplace_id],
        set_={name: sqlite_insert.excluded[name] for name in updated_columns},
    )


async def _resum(conn: AsyncConnection, *, current: dict[int, Any], now: datetime) -> int:
    """Re-sum the totals of the variations in `current` (locked); the number corrected."""
    with_live_row = [vid for vid, row in current.items() if row["stock_deleted_at"] is None]
    # Their row here deleted, these may have no live row left: their total may fall to 0.
    without = [vid for vid, row in current.items() if row["stock_deleted_at"] is not None]
    corrected = 0
    if with_live_row:
        summed = await conn.execute(_resum_grouped_statement(), {"ids": with_live_row, "now": now})
        corrected += summed.rowcount
    if without:
        summed = await conn.execute(_resum_statement(), {"ids": without, "now": now})
        corrected += summed.rowcount
    return corrected


def _resum_grouped_statement() -> sa.Executable:
    """variation.listed_stock = SUM over its live stock rows, for those of `ids` that have one
    and whose total differs; its row count is the number of variations corrected.

    One grouped read of the batch's stock rows joined to the variations: cheaper than a
    correlated SUM per variation, evaluated once to compare and once to set.
    """
    totals = (
        sa.select(
            stock_table.c.variation_id,
            sa.func.sum(stock_table.c.listed_stock).label("total"),
        )
        .where(
            stock_table.c.variation_id.in_(sa.bindparam("ids", expanding=True)),
            stock_table.c.deleted_at.is_(None),
        )
        .group_by(stock_table.c.variation_id)
        .subquery("totals")
    )
    return (
        sa.update(variation_table)
        .where(
            variation_table.c.id == totals.c.variation_id,
            sa.or_(
                variation_table.c.listed_stock.is_(None),
                variation_table.c.listed_stock != totals.c.total,
            ),
        )
        .values(listed_stock=totals.c.total, updated_at=sa.bindparam("now"))
    )


def _resum_statement() -> sa.Executable:
    """variation.listed_stock = SUM over its live stock rows (0 without any), for those of
    `ids` whose total differs; its row count is the number of variations corrected."""
    summed = variation_total()
    return (
        sa.update(variation_table)
        .where(
            variation_table.c.id.in_(sa.bindparam("ids", expanding=True)),
            sa.or_(
                variation_table.c.listed_stock.is_(None), variation_table.c.listed_stock != summed
            ),
        )
        .values(listed_stock=summed, updated_at=sa.bindparam("now"))
    )


def variation_total() -> sa.ScalarSelect[Any]:
    """The SUM of a variation's listed stock over its stock rows the back office did not
    delete, correlated to `variation`."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(stock_table.c.listed_stock), 0))
        .where(
            stock_table.c.variation_id == variation_table.c.id,
            stock_table.c.deleted_at.is_(None),
        )
        .scalar_subquery()
    )


async def _fill_new_history_row_ids(
    conn: AsyncConnection, *, marketplace_id: int, history: list[dict[str, Any]]
) -> None:
    missing = [entry for entry in history if entry["marketplace_stock_id"] is None]
    if not missing:
        return
    ids = dict(
        (
            await conn.execute(
                sa.select(stock_table.c.variation_id, stock_table.c.id).where(
                    stock_table.c.marketplace_id == marketplace_id,
                    stock_table.c.variation_id.in_([entry["variation_id"] for entry in missing]),
                )
            )
        ).all()
    )
    for entry in missing:
        entry["marketplace_stock_id"] = ids.get(entry["variation_id"])


async def _update_sku_and_state(conn: AsyncConnection, changes: list[StockObservation]) -> None:
    """One UPDATE for the variations whose sku or publication state the feed changed.

    Usually only a few rows (a first sync sets them all once).
    """
    ids = [obs.variation_id for obs in changes]
    values: dict[str, Any] = {}
    with_sku = {obs.variation_id: obs.sku for obs in changes if obs.sku is not None}
    if with_sku:
        values["sku"] = sa.case(with_sku, value=variation_table.c.id, else_=variation_table.c.sku)
    with_state = {
        obs.variation_id: obs.publication_state
        for obs in changes
        if obs.publication_state is not None
    }
    if with_state:
        values["state"] = sa.case(
            with_state, value=variation_table.c.id, else_=variation_table.c.state
        )
    await conn.execute(
        sa.update(variation_table).where(variation_table.c.id.in_(ids)).values(values)
    )


def _stock_row(row: Any, marketplace_id: int) -> StockRow:
    return StockRow(
        variation_id=row["variation_id"],
        marketplace_id=marketplace_id,
        listed_stock=row["listed_stock"],
        locked_stock=row["locked_stock"],
        available_stock=row["available_stock"],
        last_api_quantity=row["last_api_quantity"],
        last_synced_at=row["last_synced_at"],
    )
