"""What one refresh costs the database, pinned so it cannot silently grow back.

Counted through engine events: statements (`before_cursor_execute`; on SQLite that includes
the BEGIN IMMEDIATE of each transaction) and pooled connections checked out. The bounds are
what the refresh takes today; raise one only knowingly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import is_mysql
from app.models import MarketplaceStock, Variation, table_of
from tests.quantity.support import START_QUANTITY, LinkedListing, seed_stock

pytestmark = pytest.mark.watcher_off(
    "counts the statements and connections of a refresh; a poll would add its own"
)

# (backend, case) -> most statements one GET /variations/{id}/quantity may run. MySQL: GET_LOCK,
# the read before the GET (checks, stored row and database clock together), the stock
# write, RELEASE_LOCK. SQLite: no lock statements, a BEGIN IMMEDIATE per transaction instead.
# An unchanged row still re-sums the variation's total (the back office may have set it wrong).
STATEMENT_BUDGET = {
    ("mysql", "first"): 10,
    ("mysql", "changed"): 8,
    ("mysql", "unchanged"): 7,
    ("sqlite", "first"): 10,
    ("sqlite", "changed"): 8,
    ("sqlite", "unchanged"): 7,
}
# MySQL: everything runs on the connection holding the variation's lock. SQLite: one short
# connection before the GET, one after (none is held across it).
CHECKOUT_BUDGET = {"mysql": 1, "sqlite": 2}


@dataclass
class DatabaseWork:
    statements: list[str] = field(default_factory=list)
    checkouts: int = 0

    def describe(self) -> str:
        return "\n".join(statement.split("\n", 1)[0][:120] for statement in self.statements)


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[DatabaseWork]:
    work = DatabaseWork()
    sync_engine = engine.sync_engine

    def on_statement(*args: Any) -> None:
        work.statements.append(args[2])

    def on_checkout(*_: Any) -> None:
        work.checkouts += 1

    event.listen(sync_engine, "before_cursor_execute", on_statement)
    event.listen(sync_engine.pool, "checkout", on_checkout)
    try:
        yield work
    finally:
        event.remove(sync_engine, "before_cursor_execute", on_statement)
        event.remove(sync_engine.pool, "checkout", on_checkout)


def backend(engine: AsyncEngine) -> str:
    return "mysql" if is_mysql(engine) else "sqlite"


@pytest.mark.parametrize("case", ["first", "changed", "unchanged"])
async def test_a_refresh_stays_within_its_statement_and_connection_budget(
    service: Any, listing: LinkedListing, case: str
) -> None:
    if case != "first":
        await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)
        # The first refresh stores the listing's sku and state; the measured one need not.
        await service.http.get(f"/variations/{listing.variation_id}/quantity")
    service.simulator.set_quantity(listing.id, START_QUANTITY + (case == "changed"))

    with counted(service.engine) as work:
        response = await service.http.get(f"/variations/{listing.variation_id}/quantity")

    assert response.status_code == 200
    assert response.json()["stale"] is False
    name = backend(service.engine)
    assert len(work.statements) <= STATEMENT_BUDGET[name, case], work.describe()
    assert work.checkouts <= CHECKOUT_BUDGET[name]


async def test_refresh_false_is_one_statement_on_one_connection(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)

    with counted(service.engine) as work:
        response = await service.http.get(
            f"/variations/{listing.variation_id}/quantity", params={"refresh": "false"}
        )

    assert response.json()["quantity"] == 3
    # SQLite: plus the BEGIN DEFERRED of its read.
    assert len(work.statements) <= (1 if is_mysql(service.engine) else 2), work.describe()
    assert work.checkouts == 1


@pytest.mark.parametrize("case", ["first", "changed", "unchanged"])
async def test_a_refresh_answers_what_the_database_then_holds(
    service: Any, listing: LinkedListing, case: str
) -> None:
    # The answer is built from the write's result, not read back: it must still be exactly
    # what a read of the database gives (synced_at to the column's precision included).
    await insert_other_marketplace_stock(service.engine, listing.variation_id, listed=4)
    if case != "first":
        await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3, locked=1)
        await service.http.get(f"/variations/{listing.variation_id}/quantity")
    service.simulator.set_quantity(listing.id, START_QUANTITY + (case == "changed"))

    refreshed = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()
    stored = (
        await service.http.get(
            f"/variations/{listing.variation_id}/quantity", params={"refresh": "false"}
        )
    ).json()

    assert refreshed == stored
    assert refreshed["variation_listed_stock"] == refreshed["quantity"] + 4


async def insert_other_marketplace_stock(
    engine: AsyncEngine, variation_id: int, listed: int
) -> None:
    """A stock row on marketplace 4, with variation.listed_stock summed as the service does."""
    stock, variation = table_of(MarketplaceStock), table_of(Variation)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(stock).values(
                variation_id=variation_id,
                marketplace_id=4,
                listed_stock=listed,
                locked_stock=0,
                available_stock=listed,
            )
        )
        await conn.execute(
            sa.update(variation)
            .where(variation.c.id == variation_id)
            .values(listed_stock=variation.c.listed_stock + listed)
        )


async def test_no_transaction_is_open_while_back_market_is_read(
    service: Any, listing: LinkedListing
) -> None:
    # The read before the GET runs on the connection that keeps holding the lock (MySQL):
    # its transaction must be over before the GET is sent.
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="GET")
    refresh = asyncio.create_task(service.http.get(f"/variations/{listing.variation_id}/quantity"))
    await service.simulator.wait_held(hold)
    try:
        if is_mysql(service.engine):
            async with service.engine.connect() as conn:
                open_transactions = (
                    await conn.execute(
                        # This database's sessions only: the server may be shared.
                        sa.text(
                            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
                            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                            "WHERE p.DB = DATABASE()"
                        )
                    )
                ).scalar_one()
            assert open_transactions == 0
        else:
            # An open SQLite transaction (BEGIN IMMEDIATE) would make this writer wait.
            async with asyncio.timeout(5), service.engine.begin() as conn:
                await conn.execute(sa.text("UPDATE variation SET sku = sku"))
    finally:
        service.simulator.release(hold)
    assert (await refresh).status_code == 200
