"""Refresh, add-quantity and the batch read against the back office's data as it may be: a
variation total set wrong by older code, soft-deleted variations and stock rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.models import utcnow
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    requests_sent,
    seed_stock,
    stock_row,
    update_calls,
    variation_row,
)

OTHER_MARKETPLACE = 4


async def execute(engine: Any, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text(sql), params)


async def add_other_marketplace_row(engine: Any, variation_id: int, listed_stock: int) -> None:
    await execute(
        engine,
        "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
        "locked_stock, available_stock) VALUES (:v, :m, :n, 0, :n)",
        v=variation_id,
        m=OTHER_MARKETPLACE,
        n=listed_stock,
    )


async def test_a_refresh_that_finds_the_quantity_unchanged_still_corrects_a_wrong_total(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=START_QUANTITY)
    await add_other_marketplace_row(service.engine, listing.variation_id, 7)
    await execute(
        service.engine,
        "UPDATE variation SET listed_stock = 1 WHERE id = :v",
        v=listing.variation_id,
    )

    body = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()

    assert body["quantity"] == START_QUANTITY
    assert body["variation_listed_stock"] == START_QUANTITY + 7
    assert (await variation_row(service.engine, listing.variation_id))["listed_stock"] == (
        START_QUANTITY + 7
    )


async def test_a_refresh_does_not_count_a_soft_deleted_row_of_another_marketplace(
    service: Any, listing: LinkedListing
) -> None:
    await add_other_marketplace_row(service.engine, listing.variation_id, 7)
    await execute(
        service.engine,
        "UPDATE marketplace_stock SET deleted_at = :now WHERE variation_id = :v",
        now=utcnow(),
        v=listing.variation_id,
    )

    body = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()

    assert body["variation_listed_stock"] == START_QUANTITY
    assert (await variation_row(service.engine, listing.variation_id))["listed_stock"] == (
        START_QUANTITY
    )
    assert (await stock_row(service.engine, listing.variation_id, OTHER_MARKETPLACE))[
        "listed_stock"
    ] == 7


async def test_a_soft_deleted_variation_is_unknown_to_refresh_add_quantity_and_batch_read(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=START_QUANTITY)
    await execute(
        service.engine,
        "UPDATE variation SET deleted_at = :now WHERE id = :v",
        now=utcnow(),
        v=listing.variation_id,
    )
    path = f"/variations/{listing.variation_id}"
    sent_before = requests_sent(service.simulator)

    refreshed = await service.http.get(f"{path}/quantity")
    stored = await service.http.get(f"{path}/quantity", params={"refresh": "false"})
    added = await service.http.post(f"{path}/add-quantity", json={"quantity": 2})
    batch = await service.http.get(
        "/variations/quantities", params={"ids": str(listing.variation_id)}
    )

    assert (refreshed.status_code, stored.status_code, added.status_code) == (404, 404, 404)
    assert f"variation {listing.variation_id} not found" in refreshed.json()["detail"]
    assert batch.json() == {"quantities": [], "unknown_ids": [listing.variation_id]}
    assert requests_sent(service.simulator) == sent_before
    assert update_calls(service.simulator) == []
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == (
        START_QUANTITY
    )
