"""A live refresh of one variation's quantity: read Back Market, write what it says.

Runs under the variation's lock (`hold_variation`), so it never interleaves with an addition
of the same variation in any process. Back Market is called with no transaction open.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import FIRST_MARKETPLACE_ID
from app.db import is_mysql, reading
from app.models import ChangeType, as_utc
from app.services import marketplace as mp
from app.services.context import ServiceContext
from app.services.locks import LockBusy, hold_variation
from app.services.quantity.schemas import Quantity
from app.services.quantity.stored import (
    StoredStock,
    observation_of,
    read_stored,
    remember_listing_identity,
)
from app.services.quantity.upstream import error_kind, read_failure_message
from app.services.stock import StockWriteResult, write_observations

log = logging.getLogger(__name__)

# A page load waits less than a person adding stock: it can fall back on stored values.
REFRESH_LOCK_TIMEOUT_SECONDS = 10.0

REFRESH_OUTCOMES = Counter(
    "stock_sync_quantity_refresh_total",
    "GET /variations/{id}/quantity answers, by outcome "
    "(refreshed, unchanged, skipped_newer, from_database, fresh_enough, stale_<reason>).",
    ["outcome"],
)


async def refresh_quantity(
    ctx: ServiceContext,
    *,
    variation_id: int,
    marketplace_id: int,
    refresh: bool = True,
    max_age: float | None = None,
    lock_timeout: float = REFRESH_LOCK_TIMEOUT_SECONDS,
) -> Quantity:
    """The variation's stock, read live from Back Market first when `refresh`.

    With `max_age`, a refresh is skipped when Back Market confirmed the stored row (bulk sync,
    orders watcher, refresh or add-quantity) less than `max_age` seconds ago in the database
    clock: the stored values are answered, with neither a call nor the variation's lock
    (outcome `fresh_enough`). The same errors as a refresh apply (a variation without Back
    Market reference is a Conflict even when fresh). `max_age` 0 never skips.

    The live value is written as one `refresh` change (sku and publication state too) unless
    the row changed after the read was sent (then the newer stored value is answered).
    When Back Market cannot be read, or another change of the variation holds its lock for
    longer than `lock_timeout`, the stored values are answered with `stale=True` and `error`
    saying why, and nothing is changed. `refresh=False` answers from the database without
    calling Back Market, so it needs neither a reference nor a marketplace with Back Market.

    Raises NotFound (unknown variation), Conflict (no Back Market reference),
    InvalidRequest (marketplace unknown, or without Back Market when refreshing).

    Cost, the hot path: one pooled connection on MySQL (the lock's), one statement before the
    GET (checks, stored row and database clock together), the stock write after it, and no
    read-back (the answer is built from the write's result).
    """
    engine = ctx.engine
    if not refresh:
        async with reading(engine) as conn:
            stored = await read_stored(
                conn, variation_id=variation_id, marketplace_id=marketplace_id
            )
        REFRESH_OUTCOMES.labels(outcome="from_database").inc()
        return stored.quantity()
    # A marketplace that is not configured is refused here (InvalidRequest), without queueing
    # for the lock; the other checks run under it, in the read before the GET.
    marketplace = ctx.marketplaces.get(marketplace_id)
    if max_age is not None and max_age > 0:
        fresh = await _fresh_enough(
            ctx, variation_id=variation_id, marketplace_id=marketplace_id, max_age=max_age
        )
        if fresh is not None:
            REFRESH_OUTCOMES.labels(outcome="fresh_enough").inc()
            return fresh
    try:
        async with hold_variation(
            engine=engine,
            locks=ctx.locks,
            settings=ctx.settings,
            variation_id=variation_id,
            wait_seconds=lock_timeout,
            # Everything below runs through held.connection().
            connections=1,
        ) as held:
            async with held.connection() as conn:
                # Read once the lock is held and before the GET is sent, so its clock is the
                # cutoff: a change recorded after it is newer than what Back Market is about
                # to tell us, and must not be overwritten.
                before = await read_stored(
                    conn,
                    variation_id=variation_id,
                    marketplace_id=marketplace_id,
                    for_refresh=True,
                )
            variation = before.variation
            ref = before.listing_ref()
            listing_ref = str(ref)
            try:
                listing = await marketplace.get_listing(ref)
            except mp.MarketplaceError as exc:
                REFRESH_OUTCOMES.labels(outcome=f"stale_{error_kind(exc)}").inc()
                log.warning("refresh of variation %s: Back Market not read: %s", variation_id, exc)
                # Read again: the stored values may have changed while Back Market was asked.
                async with held.connection() as conn:
                    now_stored = await read_stored(
                        conn, variation_id=variation_id, marketplace_id=marketplace_id
                    )
                return now_stored.quantity(error=read_failure_message(exc, listing_ref))
            # The lock's own connection (see HeldVariation.connection), so not
            # app.db.transaction, which would check out a second one.
            async with held.connection() as conn, conn.begin():
                written = await write_observations(
                    conn,
                    marketplace_id=marketplace_id,
                    observations=[
                        observation_of(variation, listing, not_changed_since=before.read_at)
                    ],
                    change_type=ChangeType.REFRESH,
                )
                identity = await remember_listing_identity(
                    conn, variation, listing, marketplace_id=marketplace_id
                )
                answer = _refreshed_quantity(conn, before, listing, written, identity)
                if answer is None:
                    # A newer change was kept (or the variation went meanwhile): answer what
                    # the database holds now, inside the same transaction.
                    stored_now = await read_stored(
                        conn, variation_id=variation_id, marketplace_id=marketplace_id
                    )
                    answer = stored_now.quantity()
    except LockBusy:
        async with reading(engine) as conn:
            # Checked like a refresh: an invalid request is refused, not answered stale.
            stored = await read_stored(
                conn, variation_id=variation_id, marketplace_id=marketplace_id
            )
        REFRESH_OUTCOMES.labels(outcome="stale_busy").inc()
        return stored.quantity(
            error=(
                f"another stock change of variation {variation_id} has been running for "
                f"{lock_timeout:g} s; stored values returned"
            )
        )
    outcome = (
        "skipped_newer"
        if written.skipped_newer
        else "refreshed"
        if written.updated
        else "unchanged"
    )
    REFRESH_OUTCOMES.labels(outcome=outcome).inc()
    return answer


async def _fresh_enough(
    ctx: ServiceContext, *, variation_id: int, marketplace_id: int, max_age: float
) -> Quantity | None:
    """The stored values when Back Market confirmed them less than `max_age` s ago, else None.

    One statement on a connection of its own, released before any lock is queued for; it
    checks the request as a refresh would (InvalidRequest, NotFound, Conflict).
    """
    async with reading(ctx.engine) as conn:
        stored = await read_stored(
            conn,
            variation_id=variation_id,
            marketplace_id=marketplace_id,
            with_clock=True,
        )
    # A refresh of a variation without reference is refused; so is its fresh-enough read.
    stored.listing_ref()
    age = stored.age_seconds()
    if age is None or age >= max_age:
        return None
    return stored.quantity()


def _refreshed_quantity(
    conn: AsyncConnection,
    before: StoredStock,
    listing: mp.Listing,
    written: StockWriteResult,
    identity: dict[str, Any],
) -> Quantity | None:
    """A refresh's answer built from what it read before the GET and what it wrote.

    No read-back: `written.rows` is the stock row as it stands after the write, the sku and
    state are the listing's when it has them (the write stores exactly those), and the
    variation's listed stock is, as after every write, the sum over its marketplaces. None
    when a newer change was kept (or the variation went meanwhile): then only the database
    knows the answer.
    """
    row = written.rows.get(before.variation.id)
    if row is None or written.skipped_newer:
        return None
    # Only marketplace 1's listing rewrites the variation's SKU and state.
    feed_written = before.marketplace_id == FIRST_MARKETPLACE_ID
    return Quantity(
        variation_id=before.variation.id,
        marketplace_id=before.marketplace_id,
        reference_id=identity.get("reference_id", before.variation.reference_id),
        reference_uuid=identity.get("reference_uuid", before.variation.reference_uuid),
        sku=listing.sku if feed_written and listing.sku is not None else before.sku,
        publication_state=(
            listing.state if feed_written and listing.state is not None else before.state
        ),
        quantity=row.listed_stock,
        locked_stock=row.locked_stock,
        available_stock=row.available_stock,
        variation_listed_stock=before.other_listed_stock + row.listed_stock,
        synced_at=as_utc(_as_stored_timestamp(conn, row.last_synced_at)),
        stale=False,
        error=None,
    )


def _as_stored_timestamp(conn: AsyncConnection, moment: datetime | None) -> datetime | None:
    """`moment` as `marketplace_stock.last_synced_at` gives it back when read.

    On MySQL/MariaDB that column is a TIMESTAMP of whole seconds: MariaDB drops the
    fraction, MySQL rounds it (unless sql_mode has TIME_TRUNCATE_FRACTIONAL). SQLite keeps
    the microseconds.
    """
    if moment is None or not is_mysql(conn):
        return moment
    whole = moment.replace(microsecond=0)
    if not getattr(conn.dialect, "is_mariadb", False) and moment.microsecond >= 500_000:
        return whole + timedelta(seconds=1)
    return whole
