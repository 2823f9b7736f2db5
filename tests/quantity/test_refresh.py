"""GET /variations/{id}/quantity against the simulator, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.models import ChangeType
from app.services.quantity import refresh_quantity
from app.services.stock import StockObservation, write_observations
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    history_rows,
    holding_variation,
    insert_variation,
    requests_sent,
    seed_stock,
    stock_row,
    variation_row,
)

pytestmark = pytest.mark.watcher_off(
    'counts every request to the simulator ("without calling Back Market")'
)

QUANTITY_FIELDS = {
    "variation_id",
    "marketplace_id",
    "reference_id",
    "reference_uuid",
    "sku",
    "publication_state",
    "quantity",
    "locked_stock",
    "available_stock",
    "variation_listed_stock",
    "synced_at",
    "stale",
    "error",
}


async def test_refresh_reads_back_market_writes_the_stock_row_and_answers_quantity(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.set_quantity(listing.id, 7)

    response = await service.http.get(f"/variations/{listing.variation_id}/quantity")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == QUANTITY_FIELDS
    assert body["quantity"] == 7
    assert body["available_stock"] == 7
    assert body["locked_stock"] == 0
    assert body["variation_listed_stock"] == 7
    assert body["sku"] == listing.sku
    assert body["publication_state"] == 2
    assert body["stale"] is False
    assert body["error"] is None
    assert body["synced_at"] is not None
    row = await stock_row(service.engine, listing.variation_id)
    assert (row["listed_stock"], row["available_stock"], row["last_api_quantity"]) == (7, 7, 7)
    variation = await variation_row(service.engine, listing.variation_id)
    assert (variation["listed_stock"], variation["sku"], variation["state"]) == (7, listing.sku, 2)
    history = await history_rows(service.engine, listing.variation_id)
    assert [
        (h["change_type"], h["listed_stock_before"], h["listed_stock_after"]) for h in history
    ] == [(ChangeType.REFRESH.value, 0, 7)]


async def test_refresh_keeps_locked_stock_and_recomputes_available_stock(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3, locked=2)
    service.simulator.set_quantity(listing.id, 10)

    body = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()

    assert (body["quantity"], body["locked_stock"], body["available_stock"]) == (10, 2, 8)
    row = await stock_row(service.engine, listing.variation_id)
    assert (row["listed_stock"], row["locked_stock"], row["available_stock"]) == (10, 2, 8)


async def test_refresh_with_unchanged_quantity_writes_no_history_row(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=START_QUANTITY)
    before = await history_rows(service.engine, listing.variation_id)

    body = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()

    assert body["quantity"] == START_QUANTITY
    assert body["stale"] is False
    assert await history_rows(service.engine, listing.variation_id) == before


async def test_refresh_reads_by_listing_id_when_the_uuid_is_unknown_and_stores_the_uuid(
    service: Any,
) -> None:
    identity = service.simulator.add_listing(quantity=4, sku="BY-ID", publication_state=2)
    await insert_variation(
        service.engine,
        variation_id=7,
        reference_id=str(identity["listing_id"]),
        reference_uuid=None,
    )

    body = (await service.http.get("/variations/7/quantity")).json()

    assert body["quantity"] == 4
    assert body["reference_uuid"] == identity["id"]
    assert (await variation_row(service.engine, 7))["reference_uuid"] == identity["id"]


FAILURES = {
    # fault kind on GET /ws/listings/{id} -> words the error must contain
    "500": "unavailable",
    "503": "unavailable",
    "timeout": "unavailable",
    "html403": "unavailable",
    "429": "rate limiting",
}


@pytest.mark.parametrize("fault", sorted(FAILURES))
async def test_refresh_answers_stored_values_as_stale_when_back_market_fails(
    service: Any, listing: LinkedListing, fault: str
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3, locked=1)
    history_before = await history_rows(service.engine, listing.variation_id)
    row_before = await stock_row(service.engine, listing.variation_id)
    service.simulator.set_quantity(listing.id, 9)
    # As many faults as the client makes attempts: it gives up after its retries.
    service.simulator.fail_next(f"/ws/listings/{listing.id}", count=2, kind=fault)

    response = await service.http.get(f"/variations/{listing.variation_id}/quantity")

    assert response.status_code == 200
    body = response.json()
    assert body["stale"] is True
    assert FAILURES[fault] in body["error"]
    assert (body["quantity"], body["locked_stock"], body["available_stock"]) == (3, 1, 2)
    assert await stock_row(service.engine, listing.variation_id) == row_before
    assert await history_rows(service.engine, listing.variation_id) == history_before


async def test_refresh_answers_stale_when_back_market_no_longer_knows_the_listing(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)
    service.simulator.remove_listing(listing.id)

    body = (await service.http.get(f"/variations/{listing.variation_id}/quantity")).json()

    assert body["stale"] is True
    assert "404" in body["error"]
    assert body["quantity"] == 3
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 3


async def test_refresh_answers_stale_when_back_market_refuses_the_reference(
    service: Any,
) -> None:
    # Not a UUID nor an integer: Back Market answers 400, which is not a listing.
    await insert_variation(
        service.engine, variation_id=8, reference_id=None, reference_uuid="not-a-uuid"
    )

    response = await service.http.get("/variations/8/quantity")

    assert response.status_code == 200
    body = response.json()
    assert body["stale"] is True
    assert "unexpected" in body["error"]
    assert body["quantity"] == 0
    assert body["synced_at"] is None
    assert await stock_row(service.engine, 8) is None


async def test_refresh_false_answers_from_the_database_without_calling_back_market(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)

    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"refresh": "false"}
    )

    assert response.status_code == 200
    assert response.json()["quantity"] == 3
    assert response.json()["stale"] is False
    assert requests_sent(service.simulator) == 0


async def test_refresh_of_an_unknown_variation_is_404_and_sends_nothing(
    service: Any,
) -> None:
    response = await service.http.get("/variations/999/quantity")

    assert response.status_code == 404
    assert "999" in response.json()["detail"]
    assert requests_sent(service.simulator) == 0


async def test_refresh_of_a_variation_without_back_market_reference_is_409_and_sends_nothing(
    service: Any,
) -> None:
    await insert_variation(service.engine, variation_id=9, reference_id=None, reference_uuid=None)

    response = await service.http.get("/variations/9/quantity")

    assert response.status_code == 409
    assert "no Back Market reference" in response.json()["detail"]
    assert requests_sent(service.simulator) == 0


@pytest.mark.parametrize(
    ("marketplace_id", "words"), [(4, "is not configured"), (77, "is not configured")]
)
async def test_refresh_for_a_marketplace_not_configured_is_422_and_sends_nothing(
    service: Any, listing: LinkedListing, marketplace_id: int, words: str
) -> None:
    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity", params={"marketplace_id": marketplace_id}
    )

    assert response.status_code == 422
    assert words in response.json()["detail"]
    assert requests_sent(service.simulator) == 0


async def test_refresh_never_overwrites_a_change_recorded_while_back_market_was_read(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=START_QUANTITY)
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="GET")
    refresh = asyncio.create_task(service.http.get(f"/variations/{listing.variation_id}/quantity"))
    await service.simulator.wait_held(hold)
    # Back Market still says 5 to the parked read; meanwhile another writer records 12.
    async with service.engine.begin() as conn:
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[StockObservation(variation_id=listing.variation_id, quantity=12)],
            change_type=ChangeType.ADD_QUANTITY,
        )
    service.simulator.release(hold)

    body = (await refresh).json()

    assert body["quantity"] == 12
    assert body["stale"] is False
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 12


async def test_refresh_false_answers_stored_values_of_a_marketplace_without_client(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.get(
        f"/variations/{listing.variation_id}/quantity",
        params={"refresh": "false", "marketplace_id": 4},
    )

    assert response.status_code == 200
    assert (response.json()["marketplace_id"], response.json()["quantity"]) == (4, 0)
    assert requests_sent(service.simulator) == 0


async def test_refresh_answers_stale_when_another_change_holds_the_variation_too_long(
    service: Any, listing: LinkedListing
) -> None:
    ctx = service.app.state.container.ctx
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=3)

    async with holding_variation(service, listing.variation_id):
        answer = await refresh_quantity(
            ctx,
            marketplace_id=1,
            variation_id=listing.variation_id,
            lock_timeout=0.05,
        )

    assert answer.stale is True
    assert answer.error is not None and "another stock change" in answer.error
    assert answer.quantity == 3
    assert requests_sent(service.simulator) == 0
