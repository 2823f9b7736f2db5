"""What the database holds of one variation on one marketplace, and writing Back Market's
answer back into it (through the one stock writer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.db import now_expression
from app.errors import Conflict, NotFound
from app.models import Marketplace, MarketplaceStock, Variation, as_utc, table_of
from app.services import marketplace as mp
from app.services.marketplaces import check_marketplace, marketplace_name
from app.services.quantity.schemas import Quantity
from app.services.stock import StockObservation

variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)
marketplace_table = table_of(Marketplace)


@dataclass(frozen=True, slots=True)
class VariationRef:
    id: int
    reference_id: str | None
    reference_uuid: str | None

    @property
    def listing_ref(self) -> str:
        """The UUID when known (Back Market's preferred id), else the integer listing_id."""
        ref = (self.reference_uuid or "").strip() or (self.reference_id or "").strip()
        if not ref:
            raise Conflict(
                f"variation {self.id} has no Back Market reference "
                "(neither reference_id nor reference_uuid is set)",
                reason="no_reference",
            )
        return ref


@dataclass(frozen=True, slots=True)
class StoredStock:
    """A variation and its stock row on one marketplace, as read in one statement."""

    variation: VariationRef
    marketplace_id: int
    sku: str | None
    state: int | None
    variation_listed_stock: int
    # The stock row's columns; None when the variation was never synced to the marketplace.
    listed_stock: int | None
    locked_stock: int | None
    available_stock: int | None
    last_synced_at: datetime | None
    # The listing's or offer's id on the marketplace as last found (`marketplace_stock`).
    listing_reference: str | None = None
    # Read for a refresh only: the variation's listed stock on its other marketplaces.
    other_listed_stock: int = 0
    # The database clock at the read (a refresh's cutoff; the reference of `age_seconds`).
    read_at: datetime | None = None

    def age_seconds(self) -> float | None:
        """Seconds since Back Market last confirmed the row, in the database clock; None when
        never confirmed (or the clock was not read).

        Never below zero: on MySQL the stored time may be rounded up to the next second. On
        MySQL/MariaDB `last_synced_at` holds whole seconds, so the age may be over-stated by up
        to a second (a fresh-enough check errs towards calling Back Market).
        """
        if self.last_synced_at is None or self.read_at is None:
            return None
        return max(0.0, (self.read_at - self.last_synced_at).total_seconds())

    def listing_ref(self) -> mp.ListingRef:
        """How live calls name the variation's listing on this marketplace: marketplace 1 by
        `reference_uuid`/`reference_id`, any other by the listing reference stored when the
        listing was last found there, else (never found yet) by the variation's SKU. Conflict
        when there is neither."""
        if self.marketplace_id == FIRST_MARKETPLACE_ID:
            return mp.ListingRef(reference=self.variation.listing_ref)
        sku = (self.sku or "").strip()
        reference = (self.listing_reference or "").strip()
        if reference:
            return mp.ListingRef(reference=reference, sku=sku or None)
        if not sku:
            raise Conflict(
                f"variation {self.variation.id} has no SKU to find its listing on marketplace "
                f"{self.marketplace_id} by",
                reason="no_reference",
            )
        return mp.ListingRef(sku=sku)

    def quantity(self, error: str | None = None) -> Quantity:
        return Quantity(
            variation_id=self.variation.id,
            marketplace_id=self.marketplace_id,
            reference_id=self.variation.reference_id,
            reference_uuid=self.variation.reference_uuid,
            sku=self.sku,
            publication_state=self.state,
            quantity=self.listed_stock or 0,
            locked_stock=self.locked_stock or 0,
            available_stock=self.available_stock or 0,
            variation_listed_stock=self.variation_listed_stock,
            synced_at=as_utc(self.last_synced_at),
            stale=error is not None,
            error=error,
        )


async def read_stored(
    conn: AsyncConnection,
    *,
    variation_id: int,
    marketplace_id: int,
    for_refresh: bool = False,
    with_clock: bool = False,
) -> StoredStock:
    """The variation, its stock row and the marketplace's check, in one statement.

    `for_refresh` adds the other marketplaces' listed stock and the database clock (`read_at`);
    `with_clock` the clock alone.

    Raises InvalidRequest (marketplace unknown) before
    NotFound (unknown variation), whichever the request has both of.
    """
    row = (
        await conn.execute(
            _stored_statement(conn, for_refresh=for_refresh, with_clock=with_clock),
            {"variation_id": variation_id, "marketplace_id": marketplace_id},
        )
    ).first()
    if row is None:
        # No row, so no marketplace name either: look it up, its error comes first.
        name = await marketplace_name(conn, marketplace_id)
        check_marketplace(name, marketplace_id)
        raise NotFound(f"variation {variation_id} not found")
    check_marketplace(row.marketplace_name, marketplace_id)
    return _stored_of(
        row,
        variation_id=variation_id,
        marketplace_id=marketplace_id,
        other_listed_stock=int(row.other_listed_stock) if for_refresh else 0,
        read_at=row.read_at if for_refresh or with_clock else None,
    )


def _stored_of(
    row: Any,
    *,
    variation_id: int,
    marketplace_id: int,
    read_at: datetime | None,
    other_listed_stock: int = 0,
) -> StoredStock:
    return StoredStock(
        variation=VariationRef(
            id=variation_id, reference_id=row.reference_id, reference_uuid=row.reference_uuid
        ),
        marketplace_id=marketplace_id,
        sku=row.sku,
        state=row.state,
        variation_listed_stock=row.variation_listed_stock or 0,
        listed_stock=row.listed_stock,
        locked_stock=row.locked_stock,
        available_stock=row.available_stock,
        last_synced_at=row.last_synced_at,
        listing_reference=row.listing_reference,
        other_listed_stock=other_listed_stock,
        read_at=read_at,
    )


async def read_stored_many(
    conn: AsyncConnection, *, variation_ids: list[int], marketplace_id: int
) -> list[StoredStock]:
    """The known ones of `variation_ids` with their stock rows on the marketplace, and the
    database clock, in one statement (two when none is known: the marketplace check).

    Raises InvalidRequest when the marketplace does not exist. Answers in no particular order;
    each StoredStock's `read_at` is the same database clock.
    """
    rows = (
        await conn.execute(
            _stored_many_statement(conn),
            {"variation_ids": variation_ids, "marketplace_id": marketplace_id},
        )
    ).all()
    name = rows[0].marketplace_name if rows else await marketplace_name(conn, marketplace_id)
    check_marketplace(name, marketplace_id)
    return [
        _stored_of(row, variation_id=row.id, marketplace_id=marketplace_id, read_at=row.read_at)
        for row in rows
    ]


# Built once per dialect and kind, then reused: building a statement with subqueries costs
# more CPU than running it, and a reused statement also keeps its cache key memoized.
_stored_statements: dict[tuple[str, str], sa.Select[Any]] = {}


def _stored_statement(
    conn: AsyncConnection, *, for_refresh: bool, with_clock: bool = False
) -> sa.Select[Any]:
    """`read_stored`'s one statement; parameters `variation_id` and `marketplace_id`."""
    kind = "refresh" if for_refresh else "clock" if with_clock else "plain"
    key = (conn.dialect.name, kind)
    statement = _stored_statements.get(key)
    if statement is not None:
        return statement
    variation_id = sa.bindparam("variation_id", type_=sa.Integer)
    marketplace_id = sa.bindparam("marketplace_id", type_=sa.Integer)
    columns = _stored_columns(marketplace_id)
    if for_refresh:
        others = stock_table.alias("other_stock")
        columns.append(
            sa.select(sa.func.coalesce(sa.func.sum(others.c.listed_stock), 0))
            .where(
                others.c.variation_id == variation_table.c.id,
                others.c.marketplace_id != marketplace_id,
                others.c.deleted_at.is_(None),
            )
            .scalar_subquery()
            .label("other_listed_stock")
        )
    if for_refresh or with_clock:
        # Taken in the same round trip rather than by a `database_now` of its own.
        columns.append(_clock(conn))
    statement = (
        sa.select(*columns)
        .select_from(_with_stock_row(marketplace_id))
        .where(variation_table.c.id == variation_id, variation_table.c.deleted_at.is_(None))
    )
    _stored_statements[key] = statement
    return statement


def _stored_many_statement(conn: AsyncConnection) -> sa.Select[Any]:
    """`read_stored_many`'s one statement; parameters `variation_ids` (a list, expanded into
    IN) and `marketplace_id`."""
    key = (conn.dialect.name, "many")
    statement = _stored_statements.get(key)
    if statement is not None:
        return statement
    variation_ids = sa.bindparam("variation_ids", expanding=True, type_=sa.Integer)
    marketplace_id = sa.bindparam("marketplace_id", type_=sa.Integer)
    columns = [variation_table.c.id, *_stored_columns(marketplace_id), _clock(conn)]
    statement = (
        sa.select(*columns)
        .select_from(_with_stock_row(marketplace_id))
        .where(variation_table.c.id.in_(variation_ids), variation_table.c.deleted_at.is_(None))
    )
    _stored_statements[key] = statement
    return statement


def _stored_columns(marketplace_id: sa.BindParameter[int]) -> list[sa.ColumnElement[Any]]:
    """The marketplace's name, the variation's columns and its stock row's."""
    return [
        sa.select(marketplace_table.c.name)
        .where(marketplace_table.c.id == marketplace_id)
        .scalar_subquery()
        .label("marketplace_name"),
        variation_table.c.reference_id,
        variation_table.c.reference_uuid,
        variation_table.c.sku,
        variation_table.c.state,
        variation_table.c.listed_stock.label("variation_listed_stock"),
        stock_table.c.listed_stock,
        stock_table.c.locked_stock,
        stock_table.c.available_stock,
        stock_table.c.last_synced_at,
        stock_table.c.listing_reference,
    ]


def _with_stock_row(marketplace_id: sa.BindParameter[int]) -> sa.Join:
    """Variations with their stock row on the marketplace, when they have one the back office
    did not delete."""
    return variation_table.outerjoin(
        stock_table,
        sa.and_(
            stock_table.c.variation_id == variation_table.c.id,
            stock_table.c.marketplace_id == marketplace_id,
            stock_table.c.deleted_at.is_(None),
        ),
    )


def _clock(conn: AsyncConnection) -> sa.ColumnElement[Any]:
    """The database clock as a datetime column `read_at`."""
    return sa.type_coerce(now_expression(conn), sa.DateTime()).label("read_at")


def observation_of(
    variation: VariationRef, listing: mp.Listing, *, not_changed_since: datetime | None
) -> StockObservation:
    """Back Market's listing as the stock writer takes it."""
    return StockObservation(
        variation_id=variation.id,
        quantity=listing.quantity,
        sku=listing.sku,
        publication_state=listing.state,
        not_changed_since=not_changed_since,
        reference_id=(
            str(listing.listing_id) if listing.listing_id is not None else variation.reference_id
        ),
        listing_reference=listing.id,
    )


async def remember_listing_identity(
    conn: AsyncConnection, variation: VariationRef, listing: mp.Listing, *, marketplace_id: int
) -> dict[str, Any]:
    """Fill in a missing reference, so the next call can use the UUID Back Market prefers.

    Marketplace 1 only: the variation's reference columns are its listing's there; another
    marketplace's listing id is kept on the stock row (`StockObservation.listing_reference`).
    Returns the columns written (none, usually).
    """
    values: dict[str, Any] = {}
    if marketplace_id != FIRST_MARKETPLACE_ID:
        return values
    if not variation.reference_uuid:
        values["reference_uuid"] = listing.id
    if not variation.reference_id and listing.listing_id is not None:
        values["reference_id"] = str(listing.listing_id)
    if values:
        await conn.execute(
            sa.update(variation_table).where(variation_table.c.id == variation.id).values(values)
        )
    return values
