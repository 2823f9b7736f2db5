"""Sales that an addition may have undone: the order lines acted on, and additions' windows.

Shared by the orders watcher and add-quantity, so that a repeated poll is harmless and each
sale overwritten by an addition is subtracted again exactly once, by whichever sees it first.
Everything here is per marketplace: line ids are each marketplace's own, and an addition on
one marketplace overwrote that marketplace's sales only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.models import MarketplaceStock, OrderLineSeen, StockAddition, Variation, table_of
from app.services.marketplace import OrderLine

line_table = table_of(OrderLineSeen)
addition_table = table_of(StockAddition)
variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)

# Back Market's clock and ours differ, and an order's `date_creation` may be stamped a little
# before or after Back Market lowered the quantity. A sale this close to an addition's read or
# write counts as inside it: subtracting an unsold unit costs less than overselling one.
SALE_WINDOW_MARGIN = timedelta(seconds=2)
# Additions older than this no longer matter: a hidden order shows within minutes.
KEEP_ADDITIONS_FOR = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class LineEvent:
    """An order line seen for the first time, or seen again in another state."""

    line: OrderLine
    order_modified_at: datetime | None
    variation_id: int | None


async def variations_of_lines(
    conn: AsyncConnection, lines: Sequence[OrderLine], *, marketplace_id: int
) -> dict[int, int]:
    """line id -> variation id, soft-deleted variations aside.

    Marketplace 1: by `listing_id` = `variation.reference_id`, else SKU = `variation.sku`.
    Any other marketplace, as its bulk sync matches: by the listing's or offer's id stored on
    the variation's stock row of that marketplace (`listing_reference`), else by a SKU that
    exactly one variation carries (an ambiguous SKU names no variation).
    """
    if marketplace_id == FIRST_MARKETPLACE_ID:
        by_reference = await _variations_by_reference_id(
            conn, {str(line.listing_id) for line in lines if line.listing_id is not None}
        )
        reference_of = {
            line.id: str(line.listing_id) for line in lines if line.listing_id is not None
        }
    else:
        by_reference = await _variations_by_stored_reference(
            conn,
            {line.listing_ref for line in lines if line.listing_ref},
            marketplace_id=marketplace_id,
        )
        reference_of = {line.id: line.listing_ref for line in lines if line.listing_ref}
    by_sku = await _variations_by_sku(
        conn,
        {line.sku for line in lines if line.sku},
        unambiguous_only=marketplace_id != FIRST_MARKETPLACE_ID,
    )
    found: dict[int, int] = {}
    for line in lines:
        reference = reference_of.get(line.id)
        variation_id = by_reference.get(reference) if reference is not None else None
        if variation_id is None and line.sku:
            variation_id = by_sku.get(line.sku)
        if variation_id is not None:
            found[line.id] = variation_id
    return found


async def _variations_by_reference_id(conn: AsyncConnection, ids: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    if not ids:
        return found
    rows = await conn.execute(
        sa.select(variation_table.c.id, variation_table.c.reference_id)
        .where(
            variation_table.c.reference_id.in_(sorted(ids)), variation_table.c.deleted_at.is_(None)
        )
        .order_by(variation_table.c.id)
    )
    for variation_id, reference_id in rows:
        found.setdefault(str(reference_id).strip(), variation_id)
    return found


async def _variations_by_stored_reference(
    conn: AsyncConnection, references: set[str], *, marketplace_id: int
) -> dict[str, int]:
    found: dict[str, int] = {}
    if not references:
        return found
    rows = await conn.execute(
        sa.select(stock_table.c.variation_id, stock_table.c.listing_reference)
        .join(variation_table, variation_table.c.id == stock_table.c.variation_id)
        .where(
            stock_table.c.marketplace_id == marketplace_id,
            stock_table.c.listing_reference.in_(sorted(references)),
            stock_table.c.deleted_at.is_(None),
            variation_table.c.deleted_at.is_(None),
        )
        .order_by(stock_table.c.variation_id)
    )
    for variation_id, reference in rows:
        found.setdefault(str(reference), variation_id)
    return found


async def _variations_by_sku(
    conn: AsyncConnection, skus: set[str], *, unambiguous_only: bool
) -> dict[str, int]:
    """SKU -> variation; with `unambiguous_only`, a SKU two variations carry names none."""
    if not skus:
        return {}
    rows = await conn.execute(
        sa.select(variation_table.c.id, variation_table.c.sku)
        .where(variation_table.c.sku.in_(sorted(skus)), variation_table.c.deleted_at.is_(None))
        .order_by(variation_table.c.id)
    )
    carriers: dict[str, list[int]] = {}
    for variation_id, sku in rows:
        # Compared exactly: MariaDB's collation would also return another case of the SKU.
        if str(sku) in skus:
            carriers.setdefault(str(sku), []).append(variation_id)
    return {sku: ids[0] for sku, ids in carriers.items() if len(ids) == 1 or not unambiguous_only}


async def new_events(
    conn: AsyncConnection,
    lines: Sequence[tuple[OrderLine, datetime | None]],
    *,
    marketplace_id: int,
) -> list[tuple[OrderLine, datetime | None]]:
    """The lines not recorded yet, or recorded in another state (a cancellation, a refund)."""
    if not lines:
        return []
    known: dict[int, int] = {}
    ids = sorted({line.id for line, _ in lines})
    for start in range(0, len(ids), 1000):
        rows = await conn.execute(
            sa.select(line_table.c.line_id, line_table.c.state).where(
                line_table.c.marketplace_id == marketplace_id,
                line_table.c.line_id.in_(ids[start : start + 1000]),
            )
        )
        known.update({line_id: state for line_id, state in rows})
    events: dict[int, tuple[OrderLine, datetime | None]] = {}
    for line, modified_at in lines:
        if known.get(line.id) != line.state:
            events[line.id] = (line, modified_at)
    return list(events.values())


async def record_lines(
    conn: AsyncConnection,
    events: Sequence[LineEvent],
    *,
    marketplace_id: int,
    seen_at: datetime,
) -> None:
    """Insert new lines and update the state of known ones; compensation marks are kept."""
    if not events:
        return
    ids = [event.line.id for event in events]
    existing = set(
        (
            await conn.execute(
                sa.select(line_table.c.line_id).where(
                    line_table.c.marketplace_id == marketplace_id, line_table.c.line_id.in_(ids)
                )
            )
        ).scalars()
    )
    inserts = [
        _row(event, marketplace_id=marketplace_id, seen_at=seen_at)
        for event in events
        if event.line.id not in existing
    ]
    if inserts:
        await conn.execute(sa.insert(line_table), inserts)
    for event in events:
        if event.line.id in existing:
            await conn.execute(
                sa.update(line_table)
                .where(
                    line_table.c.marketplace_id == marketplace_id,
                    line_table.c.line_id == event.line.id,
                )
                .values(
                    state=event.line.state,
                    order_modified_at=event.order_modified_at,
                    variation_id=sa.func.coalesce(line_table.c.variation_id, event.variation_id),
                )
            )


def _row(event: LineEvent, *, marketplace_id: int, seen_at: datetime) -> dict[str, object]:
    line = event.line
    return {
        "marketplace_id": marketplace_id,
        "line_id": line.id,
        "order_id": line.order_id,
        "listing_id": line.listing_id,
        "sku": line.sku,
        "variation_id": event.variation_id,
        "quantity": line.quantity,
        "state": line.state,
        "created_at": line.created_at,
        "order_modified_at": event.order_modified_at,
        "seen_at": seen_at,
    }


async def claim_for_compensation(
    conn: AsyncConnection,
    events: Sequence[LineEvent],
    *,
    marketplace_id: int,
    by: str,
    at: datetime,
) -> list[LineEvent]:
    """Record the lines and mark those not compensated yet as compensated `by`; return those.

    The conditional UPDATE is what makes a line's units subtracted at most once, whichever of
    add-quantity and the watcher gets there first.
    """
    await record_lines(conn, events, marketplace_id=marketplace_id, seen_at=at)
    claimed: list[LineEvent] = []
    for event in events:
        result = await conn.execute(
            sa.update(line_table)
            .where(
                line_table.c.marketplace_id == marketplace_id,
                line_table.c.line_id == event.line.id,
                line_table.c.compensated_at.is_(None),
            )
            .values(compensated_at=at, compensated_by=by)
        )
        if result.rowcount == 1:
            claimed.append(event)
    return claimed


async def settle_claims(
    conn: AsyncConnection, line_ids: Sequence[int], *, marketplace_id: int, by: str
) -> None:
    """The subtraction of claimed lines was sent and answered: they are compensated `by`."""
    if line_ids:
        await conn.execute(
            sa.update(line_table)
            .where(
                line_table.c.marketplace_id == marketplace_id,
                line_table.c.line_id.in_(list(line_ids)),
            )
            .values(compensated_by=by)
        )


async def release_unsettled_claims(
    conn: AsyncConnection, *, marketplace_id: int, by: str
) -> list[int]:
    """Give back the marketplace's lines still claimed `by` a subtraction that never settled
    them (it failed, was cancelled, or its process died, and the database may have been gone for
    the release). Only for a claimer that runs one at a time per marketplace, called before it
    claims again: another marketplace's claims may be in flight."""
    line_ids = list(
        (
            await conn.execute(
                sa.select(line_table.c.line_id)
                .where(
                    line_table.c.marketplace_id == marketplace_id,
                    line_table.c.compensated_by == by,
                )
                .order_by(line_table.c.line_id)
            )
        ).scalars()
    )
    await release_claims(conn, line_ids, marketplace_id=marketplace_id)
    return line_ids


async def release_claims(
    conn: AsyncConnection, line_ids: Sequence[int], *, marketplace_id: int
) -> None:
    """The subtraction was not sent: the lines wait for the next chance."""
    if line_ids:
        await conn.execute(
            sa.update(line_table)
            .where(
                line_table.c.marketplace_id == marketplace_id,
                line_table.c.line_id.in_(list(line_ids)),
            )
            .values(compensated_at=None, compensated_by=None)
        )


async def record_addition(
    conn: AsyncConnection,
    *,
    variation_id: int,
    marketplace_id: int,
    listing_ref: str,
    read_sent_at: datetime,
    answered_at: datetime,
    added: int,
    idempotency_key: str | None,
) -> None:
    """Keep the addition's window so the watcher can subtract a sale Back Market shows later."""
    await conn.execute(
        sa.insert(addition_table).values(
            variation_id=variation_id,
            marketplace_id=marketplace_id,
            listing_ref=listing_ref,
            window_start=read_sent_at - SALE_WINDOW_MARGIN,
            window_end=answered_at + SALE_WINDOW_MARGIN,
            added=added,
            idempotency_key=idempotency_key,
        )
    )


async def forget_old_additions(conn: AsyncConnection, *, now: datetime) -> None:
    """Drop windows older than KEEP_ADDITIONS_FOR. Called by the watcher (one poller at a time),
    not by add-quantity: a range delete in every addition's transaction takes range locks that
    concurrent additions' inserts deadlock on (MariaDB). By the indexed `window_start`."""
    await conn.execute(
        sa.delete(addition_table).where(addition_table.c.window_start < now - KEEP_ADDITIONS_FOR)
    )


async def inside_additions(conn: AsyncConnection, *, marketplace_id: int) -> list[LineEvent]:
    """The marketplace's order lines not compensated yet that were created inside an addition's
    window of their variation on that marketplace: the addition's write may have undone their
    sale. Asked on every poll, so a subtraction that failed is tried again."""
    rows = (
        await conn.execute(
            sa.select(line_table)
            .where(
                line_table.c.marketplace_id == marketplace_id,
                line_table.c.compensated_at.is_(None),
                sa.exists().where(
                    addition_table.c.marketplace_id == marketplace_id,
                    addition_table.c.variation_id == line_table.c.variation_id,
                    addition_table.c.window_start <= line_table.c.created_at,
                    addition_table.c.window_end >= line_table.c.created_at,
                ),
            )
            .order_by(line_table.c.line_id)
        )
    ).all()
    return [
        LineEvent(
            line=OrderLine(
                id=row.line_id,
                order_id=row.order_id,
                listing_id=row.listing_id,
                sku=row.sku,
                quantity=row.quantity,
                state=row.state,
                created_at=row.created_at,
            ),
            order_modified_at=row.order_modified_at,
            variation_id=row.variation_id,
        )
        for row in rows
    ]
