"""POST /variations/{id}/add-quantity against the simulator, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.errors import Conflict
from app.models import ChangeType
from app.services.quantity import add_quantity
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    add_linked_listing,
    budget_rows,
    history_rows,
    holding_variation,
    insert_variation,
    interleave_requests,
    requests_sent,
    seed_stock,
    stock_row,
    update_calls,
    variation_row,
)

pytestmark = pytest.mark.watcher_off('counts every request to the simulator ("sends nothing")')

ADD_RESULT_FIELDS = {
    "variation_id",
    "marketplace_id",
    "previous_quantity",
    "added",
    "quantity",
    "available_stock",
    "variation_listed_stock",
    "idempotent_replay",
    "sales_during_update",
}


def add_path(variation_id: int) -> str:
    return f"/variations/{variation_id}/add-quantity"


async def test_add_quantity_sends_live_quantity_plus_n_and_records_back_markets_answer(
    service: Any, listing: LinkedListing
) -> None:
    await seed_stock(service.engine, variation_id=listing.variation_id, quantity=2, locked=1)

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 3})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == ADD_RESULT_FIELDS
    assert body == {
        "variation_id": listing.variation_id,
        "marketplace_id": 1,
        "previous_quantity": START_QUANTITY,
        "added": 3,
        "quantity": START_QUANTITY + 3,
        "available_stock": START_QUANTITY + 3 - 1,
        "variation_listed_stock": START_QUANTITY + 3,
        "idempotent_replay": False,
        "sales_during_update": 0,
    }
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3
    assert [call["body"] for call in update_calls(service.simulator)] == [
        {"quantity": START_QUANTITY + 3}
    ]
    row = await stock_row(service.engine, listing.variation_id)
    assert (row["listed_stock"], row["locked_stock"], row["available_stock"]) == (8, 1, 7)
    assert (await variation_row(service.engine, listing.variation_id))["listed_stock"] == 8
    last = (await history_rows(service.engine, listing.variation_id))[-1]
    assert last["change_type"] == ChangeType.ADD_QUANTITY.value
    assert (last["listed_stock_before"], last["listed_stock_after"], last["quantity_change"]) == (
        2,
        8,
        6,
    )
    assert last["idempotency_key"] is None


async def test_negative_quantity_removes_stock_on_back_market(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.post(add_path(listing.variation_id), json={"quantity": -5})

    assert response.status_code == 200
    assert response.json()["quantity"] == 0
    assert service.simulator.quantity_of(listing.id) == 0
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 0


async def test_result_below_zero_is_409_and_sends_no_update(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.post(add_path(listing.variation_id), json={"quantity": -6})

    assert response.status_code == 409
    body = response.json()
    assert "nothing was sent" in body["detail"]
    assert body["current_quantity"] == START_QUANTITY
    assert update_calls(service.simulator) == []
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY
    assert await stock_row(service.engine, listing.variation_id) is None
    # The budget slot reserved for it was given back.
    assert await budget_rows(service.engine) == 0


INVALID_BODIES = {
    "string": {"quantity": "5"},
    "fraction": {"quantity": 2.5},
    "boolean": {"quantity": True},
    "zero": {"quantity": 0},
    "null": {"quantity": None},
    "missing": {},
    "extra_field": {"quantity": 1, "marketplace_id": 1},
    "too_large": {"quantity": 10_001},
    "too_small": {"quantity": -10_001},
    "huge": {"quantity": 10**30},
    "list": [1],
}


async def test_a_whole_number_written_as_a_float_is_that_number(
    service: Any, listing: LinkedListing
) -> None:
    """JSON has one number type and the document's `integer` admits 3.0: it adds 3."""
    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 3.0})

    assert response.status_code == 200
    assert response.json()["added"] == 3
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 3


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
async def test_invalid_body_is_422_with_a_message_and_sends_nothing(
    service: Any, listing: LinkedListing, case: str
) -> None:
    response = await service.http.post(add_path(listing.variation_id), json=INVALID_BODIES[case])

    assert response.status_code == 422
    assert response.json()["detail"]
    assert requests_sent(service.simulator) == 0


async def test_body_that_is_not_json_is_422_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.post(
        add_path(listing.variation_id),
        content=b"quantity=5",
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert requests_sent(service.simulator) == 0


async def test_limit_comes_from_settings_and_is_named_in_the_message(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 10_001})

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "quantity must be between -10000 and 10000 (ADD_QUANTITY_LIMIT), got 10001"
    )


async def test_add_quantity_to_an_unknown_variation_is_404_and_sends_nothing(
    service: Any,
) -> None:
    response = await service.http.post(add_path(999), json={"quantity": 1})

    assert response.status_code == 404
    assert requests_sent(service.simulator) == 0


async def test_add_quantity_without_back_market_reference_is_409_and_sends_nothing(
    service: Any,
) -> None:
    await insert_variation(service.engine, variation_id=9, reference_id=None, reference_uuid=None)

    response = await service.http.post(add_path(9), json={"quantity": 1})

    assert response.status_code == 409
    assert response.json()["reason"] == "no_reference"
    assert requests_sent(service.simulator) == 0


async def test_add_quantity_on_a_marketplace_without_client_is_422_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    response = await service.http.post(
        add_path(listing.variation_id), params={"marketplace_id": 4}, json={"quantity": 1}
    )

    assert response.status_code == 422
    assert requests_sent(service.simulator) == 0


async def test_fifty_concurrent_additions_of_one_all_land_in_back_market_and_in_the_database(
    service: Any, listing: LinkedListing
) -> None:
    interleave_requests(service.simulator)
    responses = await asyncio.gather(
        *(
            service.http.post(add_path(listing.variation_id), json={"quantity": 1})
            for _ in range(50)
        )
    )

    assert [r.status_code for r in responses] == [200] * 50
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 50
    assert len(update_calls(service.simulator)) == 50
    # Serialised: each one read what the one before it wrote.
    assert sorted(r.json()["previous_quantity"] for r in responses) == list(
        range(START_QUANTITY, START_QUANTITY + 50)
    )
    row = await stock_row(service.engine, listing.variation_id)
    assert row["listed_stock"] == START_QUANTITY + 50
    assert (await variation_row(service.engine, listing.variation_id))["listed_stock"] == (
        START_QUANTITY + 50
    )
    history = await history_rows(service.engine, listing.variation_id)
    assert len(history) == 50
    assert all(h["change_type"] == ChangeType.ADD_QUANTITY.value for h in history)


async def test_another_variation_is_not_held_up_by_a_running_addition(
    service: Any, listing: LinkedListing
) -> None:
    other = await add_linked_listing(service, variation_id=202)
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="GET")
    parked = asyncio.create_task(
        service.http.post(add_path(listing.variation_id), json={"quantity": 1})
    )
    await service.simulator.wait_held(hold)

    # The first addition holds its variation's lock, parked inside Back Market.
    response = await service.http.post(add_path(other.variation_id), json={"quantity": 2})

    assert response.status_code == 200
    assert service.simulator.quantity_of(other.id) == START_QUANTITY + 2
    assert not parked.done()
    service.simulator.release(hold)
    assert (await parked).status_code == 200


async def test_another_variation_is_not_held_up_by_additions_queued_behind_a_running_one(
    service: Any, listing: LinkedListing
) -> None:
    # Waiters for a busy variation queue without holding connections of the pool (the
    # per-variation queue in hold_variation): were each to hold its share while waiting, ten
    # of them would use up the connection budget and hold up every other variation too.
    other = await add_linked_listing(service, variation_id=202)
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="GET")
    parked = [
        asyncio.create_task(service.http.post(add_path(listing.variation_id), json={"quantity": 1}))
        for _ in range(10)
    ]
    await service.simulator.wait_held(hold)
    await asyncio.sleep(0.3)  # the nine others reach the variation's lock and wait there

    async with asyncio.timeout(5):
        response = await service.http.post(add_path(other.variation_id), json={"quantity": 2})

    assert response.status_code == 200
    assert service.simulator.quantity_of(other.id) == START_QUANTITY + 2
    assert not any(task.done() for task in parked)
    service.simulator.release(hold)
    assert [(await task).status_code for task in parked] == [200] * 10
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY + 10


async def test_read_failure_is_502_and_sends_no_update(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", count=2, kind="503", method="GET")

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 1})

    assert response.status_code == 502
    assert "nothing was recorded as applied" in response.json()["detail"]
    assert update_calls(service.simulator) == []
    assert await budget_rows(service.engine) == 0


async def test_update_refused_by_back_market_is_502_and_records_nothing(
    service: Any, listing: LinkedListing
) -> None:
    # A Cloudflare challenge stops the POST at the edge, on every attempt.
    service.simulator.fail_next(
        f"/ws/listings/{listing.id}", count=2, kind="html403", method="POST"
    )

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 1})

    assert response.status_code == 502
    assert response.json()["reason"] == "backmarket_failed"
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY
    assert await stock_row(service.engine, listing.variation_id) is None
    assert await history_rows(service.engine, listing.variation_id) == []


async def test_update_of_a_listing_gone_from_back_market_is_502_and_records_nothing(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.remove_listing(listing.id)

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 1})

    assert response.status_code == 502
    assert response.json()["reason"] == "listing_not_found"
    assert await stock_row(service.engine, listing.variation_id) is None


async def test_rate_limit_on_update_is_429_with_retry_after_and_records_nothing(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", count=2, kind="429", method="POST")

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 1})

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["reason"] == "backmarket_rate_limited"
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY
    assert await stock_row(service.engine, listing.variation_id) is None
    # Refused at Back Market's edge, so it did not use up the hourly update budget.
    assert await budget_rows(service.engine) == 0


async def test_unknown_outcome_without_key_is_504_with_previous_and_target_and_records_nothing(
    service: Any, listing: LinkedListing
) -> None:
    # Applied by Back Market, but the answer is lost on the way back.
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 4})

    assert response.status_code == 504
    body = response.json()
    assert (body["previous_quantity"], body["target_quantity"]) == (
        START_QUANTITY,
        START_QUANTITY + 4,
    )
    assert "Idempotency-Key" in body["detail"]
    assert await stock_row(service.engine, listing.variation_id) is None
    assert len(update_calls(service.simulator)) == 1


async def test_a_202_answer_to_the_update_is_success(service: Any, listing: LinkedListing) -> None:
    service.simulator.configure(update_status_code=202)

    response = await service.http.post(add_path(listing.variation_id), json={"quantity": 2})

    assert response.status_code == 200
    assert response.json()["quantity"] == START_QUANTITY + 2
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 7


async def test_add_quantity_outcomes_are_counted_in_metrics(
    service: Any, listing: LinkedListing
) -> None:
    await service.http.post(add_path(listing.variation_id), json={"quantity": 1})
    await service.http.post(add_path(listing.variation_id), json={"quantity": -100})

    metrics = (await service.http.get("/metrics")).text

    assert 'stock_sync_add_quantity_total{outcome="applied"}' in metrics
    assert 'stock_sync_add_quantity_total{outcome="below_zero"}' in metrics


async def test_addition_waiting_too_long_for_the_variation_is_409_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    ctx = service.app.state.container.ctx

    async with holding_variation(service, listing.variation_id):
        with pytest.raises(Conflict) as refused:
            await add_quantity(
                ctx,
                marketplace_id=1,
                variation_id=listing.variation_id,
                quantity=1,
                lock_timeout=0.05,
            )

    assert refused.value.extra["reason"] == "busy"
    assert requests_sent(service.simulator) == 0
