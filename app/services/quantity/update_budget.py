"""The listing-update budget: at most the account's updates per hour in any rolling hour.

Back Market "might not accept more than 2k lines of SKUs to process per hour" and refuses the
excess with 429. Every update is reserved here BEFORE it is sent, as one row of
`backmarket_listing_updates` stamped with the database clock, so every process sharing the
database shares the budget and no process can overshoot it.

Each marketplace (account) has its own budget: its rows carry its `marketplace_id`, its limit is
its own (`BACKMARKET_UPDATES_PER_HOUR`, `MARKETPLACE_<ID>_UPDATES_PER_HOUR`), and its lock is its
own, so one account's spent budget or busy lock never holds up another's updates.

The count and the insert must be one atomic step across processes:
- SQLite: the write transaction is BEGIN IMMEDIATE, which already excludes every other writer.
- MySQL/MariaDB: a named lock (`GET_LOCK`) taken on the transaction's own connection, so a
  reservation needs one pooled connection, not two. (A plain transaction would not do: under
  REPEATABLE READ two counts can both see room and both insert.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import FIRST_MARKETPLACE_ID
from app.db import database_now, is_mysql, reading, transaction
from app.models import ListingUpdateBudget, table_of
from app.services.locks import engine_lock_name

updates_table = table_of(ListingUpdateBudget)

BUDGET_LOCK = "stock_sync:update_budget"
BUDGET_WINDOW = timedelta(hours=1)
# Rows older than this are of no use to the count; they are deleted while reserving.
KEEP_ROWS_FOR = timedelta(hours=2)
# The critical section is a count and an insert: anything waiting longer means trouble.
BUDGET_LOCK_TIMEOUT_SECONDS = 10


class BudgetExhausted(Exception):
    """No update may be sent now; `retry_after` seconds until the oldest one leaves the window."""

    def __init__(self, *, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the listing-update budget of {limit} per hour is spent; "
            f"the next update may be sent in {retry_after} s"
        )
        self.limit = limit
        self.retry_after = retry_after


def budget_lock_name(marketplace_id: int) -> str:
    """One account's budget lock; marketplace 1 keeps the lock's original name."""
    if marketplace_id == FIRST_MARKETPLACE_ID:
        return BUDGET_LOCK
    return f"{BUDGET_LOCK}:{marketplace_id}"


class BudgetLockBusy(Exception):
    """Another process held the budget lock for too long (only possible on MySQL/MariaDB)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """One reserved update; `release` it when the update was surely not sent."""

    id: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    limit: int
    used: int
    # Seconds until a slot frees up; 0 when one is free now.
    retry_after: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


async def reserve_update(
    engine: AsyncEngine, *, marketplace_id: int, limit: int, listing_ref: str
) -> Reservation:
    """Reserve one update of the marketplace's listings, or raise BudgetExhausted (nothing
    reserved, nothing to send)."""
    lock_name = budget_lock_name(marketplace_id)
    async with engine.connect() as conn:
        mysql = is_mysql(conn)
        if mysql:
            await _get_budget_lock(conn, lock_name)
        try:
            async with conn.begin():
                now = await database_now(conn)
                await _delete_old_rows(conn, marketplace_id=marketplace_id, now=now)
                used, oldest = await _window_usage(conn, marketplace_id=marketplace_id, now=now)
                if used >= limit:
                    raise BudgetExhausted(limit=limit, retry_after=_seconds_until_free(oldest, now))
                inserted = await conn.execute(
                    sa.insert(updates_table).values(
                        marketplace_id=marketplace_id, sent_at=now, listing_ref=listing_ref
                    )
                )
                primary_key = inserted.inserted_primary_key
                assert primary_key is not None
                reservation_id = primary_key[0]
        finally:
            if mysql:
                await _release_budget_lock(conn, lock_name)
    return Reservation(id=int(reservation_id), sent_at=now)


async def release_update(engine: AsyncEngine, reservation: Reservation) -> None:
    """Give a slot back: only for an update that surely never reached Back Market."""
    async with transaction(engine) as conn:
        await conn.execute(sa.delete(updates_table).where(updates_table.c.id == reservation.id))


async def budget_status(engine: AsyncEngine, *, marketplace_id: int, limit: int) -> BudgetStatus:
    """How much of the marketplace's rolling hour is used, for operators and metrics."""
    async with reading(engine) as conn:
        now = await database_now(conn)
        used, oldest = await _window_usage(conn, marketplace_id=marketplace_id, now=now)
    retry_after = _seconds_until_free(oldest, now) if used >= limit else 0
    return BudgetStatus(limit=limit, used=used, retry_after=retry_after)


async def _window_usage(
    conn: AsyncConnection, *, marketplace_id: int, now: datetime
) -> tuple[int, datetime | None]:
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(updates_table.c.sent_at)).where(
                updates_table.c.marketplace_id == marketplace_id,
                updates_table.c.sent_at > now - BUDGET_WINDOW,
            )
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):
        # SQLite returns MIN() of a DATETIME column as the stored text.
        oldest = datetime.fromisoformat(oldest)
    return int(row[0]), oldest


async def _delete_old_rows(conn: AsyncConnection, *, marketplace_id: int, now: datetime) -> None:
    # By primary key after a plain read: a range DELETE would gap-lock recent rows on MySQL.
    # Only the marketplace's own rows: another account's are under another lock.
    old = (
        (
            await conn.execute(
                sa.select(updates_table.c.id).where(
                    updates_table.c.marketplace_id == marketplace_id,
                    updates_table.c.sent_at < now - KEEP_ROWS_FOR,
                )
            )
        )
        .scalars()
        .all()
    )
    if old:
        await conn.execute(sa.delete(updates_table).where(updates_table.c.id.in_(old)))


def _seconds_until_free(oldest: datetime | None, now: datetime) -> int:
    if oldest is None:
        # Only reachable with a limit of 0 rows, which the settings forbid; one second is safe.
        return 1
    return max(1, math.ceil((oldest + BUDGET_WINDOW - now).total_seconds()))


async def _get_budget_lock(conn: AsyncConnection, name: str) -> None:
    got = (
        await conn.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": engine_lock_name(name, conn), "timeout": BUDGET_LOCK_TIMEOUT_SECONDS},
        )
    ).scalar()
    # End the implicit transaction so the count below sees every committed reservation.
    await conn.commit()
    if got != 1:
        raise BudgetLockBusy(
            f"the update-budget lock was held elsewhere for {BUDGET_LOCK_TIMEOUT_SECONDS} s"
        )


async def _release_budget_lock(conn: AsyncConnection, name: str) -> None:
    try:
        await conn.execute(
            sa.text("SELECT RELEASE_LOCK(:name)"), {"name": engine_lock_name(name, conn)}
        )
        await conn.commit()
    except sa.exc.DBAPIError:
        # The server frees a dead connection's locks; keep it out of the pool.
        await conn.invalidate()
