"""The shared rolling-hour budget of listing updates (BACKMARKET_UPDATES_PER_HOUR)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import database_now, is_mysql
from app.models import ListingUpdateBudget, table_of
from app.services.quantity import update_budget
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    budget_rows,
    key_rows,
    stock_row,
    update_calls,
)

pytestmark = pytest.mark.watcher_off("counts every request to the simulator")

updates_table = table_of(ListingUpdateBudget)
BUDGET = 2


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "backmarket_requests_per_10s": 10_000,
        "backmarket_max_attempts": 2,
        "backmarket_updates_per_hour": BUDGET,
    }


async def insert_sent_updates(
    engine: AsyncEngine, *, count: int, ago: timedelta, marketplace_id: int = 1
) -> None:
    async with engine.begin() as conn:
        now = await database_now(conn)
        await conn.execute(
            sa.insert(updates_table),
            [
                {"sent_at": now - ago, "listing_ref": "elsewhere", "marketplace_id": marketplace_id}
                for _ in range(count)
            ],
        )


async def test_spent_budget_gives_429_with_retry_after_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    path = f"/variations/{listing.variation_id}/add-quantity"
    for _ in range(BUDGET):
        assert (await service.http.post(path, json={"quantity": 1})).status_code == 200
    requests_before = service.simulator.stats()["total_requests"]

    refused = await service.http.post(path, json={"quantity": 1}, headers={"Idempotency-Key": "k"})

    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.json()["reason"] == "update_budget_spent"
    assert service.simulator.stats()["total_requests"] == requests_before
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + BUDGET
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 7
    # Nothing was done under the key, so a later retry with it starts afresh.
    assert [row["idempotency_key"] for row in await key_rows(service.engine)] == []


async def test_updates_sent_by_other_processes_count_against_the_budget(
    service: Any, listing: LinkedListing
) -> None:
    await insert_sent_updates(service.engine, count=BUDGET, ago=timedelta(minutes=10))

    refused = await service.http.post(
        f"/variations/{listing.variation_id}/add-quantity", json={"quantity": 1}
    )

    assert refused.status_code == 429
    assert update_calls(service.simulator) == []


async def test_updates_older_than_an_hour_no_longer_count(
    service: Any, listing: LinkedListing
) -> None:
    await insert_sent_updates(service.engine, count=BUDGET, ago=timedelta(minutes=61))

    response = await service.http.post(
        f"/variations/{listing.variation_id}/add-quantity", json={"quantity": 1}
    )

    assert response.status_code == 200
    assert len(update_calls(service.simulator)) == 1


async def test_retry_after_is_the_time_until_the_oldest_update_leaves_the_hour(
    engine: AsyncEngine,
) -> None:
    await insert_sent_updates(engine, count=1, ago=timedelta(minutes=59))

    with pytest.raises(update_budget.BudgetExhausted) as refused:
        await update_budget.reserve_update(engine, marketplace_id=1, limit=1, listing_ref="x")

    # About 60 s: the row leaves the window one hour after it was sent.
    assert 50 <= refused.value.retry_after <= 61


async def test_concurrent_reservations_never_exceed_the_limit(engine: AsyncEngine) -> None:
    outcomes = await asyncio.gather(
        *(
            update_budget.reserve_update(engine, marketplace_id=1, limit=7, listing_ref=f"l{n}")
            for n in range(20)
        ),
        return_exceptions=True,
    )

    reserved = [o for o in outcomes if isinstance(o, update_budget.Reservation)]
    refused = [o for o in outcomes if isinstance(o, update_budget.BudgetExhausted)]
    assert (len(reserved), len(refused)) == (7, 13)
    assert await budget_rows(engine) == 7


async def test_a_released_reservation_frees_its_slot(engine: AsyncEngine) -> None:
    reservation = await update_budget.reserve_update(
        engine, marketplace_id=1, limit=1, listing_ref="x"
    )

    await update_budget.release_update(engine, reservation)

    assert await update_budget.reserve_update(engine, marketplace_id=1, limit=1, listing_ref="y")


async def test_budget_status_reports_use_and_wait(engine: AsyncEngine) -> None:
    await insert_sent_updates(engine, count=3, ago=timedelta(minutes=30))

    status = await update_budget.budget_status(engine, marketplace_id=1, limit=3)

    assert (status.used, status.remaining) == (3, 0)
    assert 1_700 <= status.retry_after <= 1_801


@pytest.mark.parametrize(("spent", "other"), [(4, 1), (1, 4)])
async def test_one_accounts_spent_budget_does_not_refuse_another_accounts_update(
    engine: AsyncEngine, spent: int, other: int
) -> None:
    await insert_sent_updates(engine, count=2, ago=timedelta(minutes=5), marketplace_id=spent)

    assert await update_budget.reserve_update(
        engine, marketplace_id=other, limit=2, listing_ref="x"
    )
    with pytest.raises(update_budget.BudgetExhausted):
        await update_budget.reserve_update(engine, marketplace_id=spent, limit=2, listing_ref="y")
    assert (await update_budget.budget_status(engine, marketplace_id=other, limit=2)).used == 1
    assert (await update_budget.budget_status(engine, marketplace_id=spent, limit=2)).used == 2


async def test_one_accounts_budget_lock_does_not_hold_up_another_accounts_reservation(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marketplace 4's reservation stuck inside its budget lock (MySQL/MariaDB's GET_LOCK)."""
    if not is_mysql(engine):
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE: no named lock")
    monkeypatch.setattr(update_budget, "BUDGET_LOCK_TIMEOUT_SECONDS", 1)
    entered, release = asyncio.Event(), asyncio.Event()
    count = update_budget._window_usage

    async def stuck_on_marketplace_4(
        conn: Any, *, marketplace_id: int, now: Any
    ) -> tuple[int, Any]:
        if marketplace_id == 4:
            entered.set()
            await release.wait()
        return await count(conn, marketplace_id=marketplace_id, now=now)

    monkeypatch.setattr(update_budget, "_window_usage", stuck_on_marketplace_4)
    stuck = asyncio.create_task(
        update_budget.reserve_update(engine, marketplace_id=4, limit=5, listing_ref="y")
    )
    await asyncio.wait_for(entered.wait(), timeout=10)
    try:
        assert await update_budget.reserve_update(
            engine, marketplace_id=1, limit=5, listing_ref="x"
        )
    finally:
        release.set()
    assert await stuck
