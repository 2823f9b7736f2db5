"""PUT /variations/{id}/quantity against the simulator, on SQLite and MariaDB: a set with a
compare (`expected_quantity`), and the guarantees it shares with add-quantity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import Conflict
from app.services.quantity import idempotency, set_quantity
from app.services.quantity.send import UpdateSender
from tests.quantity.support import (
    START_QUANTITY,
    LinkedListing,
    budget_rows,
    history_rows,
    holding_variation,
    key_rows,
    requests_sent,
    stock_row,
    update_calls,
    variation_row,
)
from tests.quantity.test_sales_during_update import empty_order_tables, operational_error

pytestmark = pytest.mark.watcher_off('counts every request to the simulator ("sends nothing")')

SET_RESULT_FIELDS = {
    "variation_id",
    "marketplace_id",
    "previous_quantity",
    "quantity",
    "available_stock",
    "variation_listed_stock",
    "idempotent_replay",
    "sales_during_update",
}


@pytest.fixture(autouse=True)
async def no_order_rows(engine: AsyncEngine) -> AsyncIterator[None]:
    # The simulator numbers order lines from the same id in every test: rows left by another
    # test would read as lines already compensated.
    await empty_order_tables(engine)
    yield
    await empty_order_tables(engine)


def set_path(variation_id: int) -> str:
    return f"/variations/{variation_id}/quantity"


async def put(
    service: Any,
    variation_id: int,
    quantity: Any,
    *,
    expected: int | None = None,
    key: str | None = None,
    **params: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"quantity": quantity}
    if expected is not None:
        body["expected_quantity"] = expected
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await service.http.put(set_path(variation_id), json=body, headers=headers, params=params)


async def set_while_selling(
    service: Any,
    listing: LinkedListing,
    quantity: int,
    *,
    sell: Callable[[], Any],
    expected: int | None = None,
    key: str | None = None,
) -> httpx.Response:
    """Set `quantity`; `sell` runs after the service's read was answered, before its update
    reaches Back Market."""
    hold = service.simulator.hold(f"/ws/listings/{listing.id}", method="POST")
    request = asyncio.create_task(
        put(service, listing.variation_id, quantity, expected=expected, key=key)
    )
    await service.simulator.wait_held(hold)
    sell()
    service.simulator.release(hold)
    return await request


async def test_set_sends_the_quantity_and_records_back_markets_answer_as_set_quantity(
    service: Any, listing: LinkedListing
) -> None:
    response = await put(service, listing.variation_id, 12, key="set-1")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SET_RESULT_FIELDS
    assert body == {
        "variation_id": listing.variation_id,
        "marketplace_id": 1,
        "previous_quantity": START_QUANTITY,
        "quantity": 12,
        "available_stock": 12,
        "variation_listed_stock": 12,
        "idempotent_replay": False,
        "sales_during_update": 0,
    }
    assert [call["body"] for call in update_calls(service.simulator)] == [{"quantity": 12}]
    assert service.simulator.quantity_of(listing.id) == 12
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 12
    assert (await variation_row(service.engine, listing.variation_id))["listed_stock"] == 12
    history = await history_rows(service.engine, listing.variation_id)
    assert [(h["change_type"], h["idempotency_key"]) for h in history] == [
        ("set_quantity", "set-1")
    ]


async def test_set_to_zero_with_the_expected_quantity_empties_the_listing(
    service: Any, listing: LinkedListing
) -> None:
    response = await put(service, listing.variation_id, 0, expected=START_QUANTITY)

    assert response.status_code == 200
    assert (response.json()["previous_quantity"], response.json()["quantity"]) == (5, 0)
    assert service.simulator.quantity_of(listing.id) == 0


async def test_a_sale_between_the_pages_read_and_the_set_is_409_with_the_live_quantity(
    service: Any, listing: LinkedListing
) -> None:
    shown = (await service.http.get(set_path(listing.variation_id))).json()["quantity"]
    service.simulator.place_order(listing.id)
    calls_before = requests_sent(service.simulator)

    response = await put(service, listing.variation_id, shown + 3, expected=shown, key="page-1")

    assert response.status_code == 409
    body = response.json()
    assert (body["reason"], body["live_quantity"]) == ("quantity_changed", START_QUANTITY - 1)
    assert body["detail"]
    assert update_calls(service.simulator) == []
    # Only the live read was made; its budget slot was given back and the key freed.
    assert requests_sent(service.simulator) == calls_before + 1
    assert await budget_rows(service.engine) == 0
    assert await key_rows(service.engine) == []
    assert service.simulator.quantity_of(listing.id) == START_QUANTITY - 1


async def test_a_sale_between_the_services_read_and_its_update_is_subtracted_once(
    service: Any, listing: LinkedListing
) -> None:
    response = await set_while_selling(
        service,
        listing,
        9,
        expected=START_QUANTITY,
        sell=lambda: service.simulator.place_order(listing.id, units=2),
    )
    await service.app.state.container.watcher.poll()

    assert response.status_code == 200
    body = response.json()
    assert (body["previous_quantity"], body["quantity"], body["sales_during_update"]) == (5, 7, 2)
    assert [call["body"] for call in update_calls(service.simulator)] == [
        {"quantity": 9},
        {"quantity": 7},
    ]
    # The watcher saw the same sale afterwards and left it alone: subtracted once.
    assert service.simulator.quantity_of(listing.id) == 9 - 2
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 9 - 2
    history = await history_rows(service.engine, listing.variation_id)
    assert {h["change_type"] for h in history} == {"set_quantity"}


async def test_a_sets_subtraction_that_fails_with_the_database_gives_its_claims_to_the_watcher(
    service: Any, listing: LinkedListing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for an addition: without a key nobody retries the set's own subtraction, so whatever
    stops it (here the database, on the subtraction's budget reservation) gives the claimed
    lines back, and the watcher subtracts the sale once."""
    reserve = UpdateSender.reserve
    reservations = 0

    async def second_reservation_fails(sender: UpdateSender) -> Any:
        nonlocal reservations
        reservations += 1
        if reservations == 2:
            raise operational_error("UPDATE backmarket_stock_budget")
        return await reserve(sender)

    monkeypatch.setattr(UpdateSender, "reserve", second_reservation_fails)
    # The test client raises what the server answers with a 500.
    with pytest.raises(sa.exc.OperationalError):
        await set_while_selling(
            service,
            listing,
            9,
            expected=START_QUANTITY,
            sell=lambda: service.simulator.place_order(listing.id),
        )
    assert service.simulator.quantity_of(listing.id) == 9
    monkeypatch.setattr(UpdateSender, "reserve", reserve)

    polled = await service.app.state.container.watcher.poll()

    assert polled is not None and polled.compensated_lines == 1
    assert service.simulator.quantity_of(listing.id) == 9 - 1
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 9 - 1


async def test_twenty_concurrent_sets_expecting_the_same_quantity_apply_once(
    service: Any, listing: LinkedListing
) -> None:
    # Longer than `interleave_requests`: on SQLite the budget's reservations (BEGIN IMMEDIATE)
    # queue the requests one behind another, and every read must overlap another request's
    # write for a missing lock to show.
    service.simulator.configure(latency_ms=30)
    responses = await asyncio.gather(
        *(
            put(service, listing.variation_id, 10 + number, expected=START_QUANTITY)
            for number in range(20)
        )
    )

    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [200] + [409] * 19
    [applied] = [r.json() for r in responses if r.status_code == 200]
    refused = [r.json() for r in responses if r.status_code == 409]
    assert {(r["reason"], r["live_quantity"]) for r in refused} == {
        ("quantity_changed", applied["quantity"])
    }
    assert len(update_calls(service.simulator)) == 1
    assert service.simulator.quantity_of(listing.id) == applied["quantity"]
    assert len(await history_rows(service.engine, listing.variation_id)) == 1


async def test_a_keyed_retry_after_a_lost_answer_applies_the_set_once(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")
    lost = await put(service, listing.variation_id, 9, expected=START_QUANTITY, key="set-lost")

    retried = await put(service, listing.variation_id, 9, expected=START_QUANTITY, key="set-lost")

    assert lost.status_code == 504
    assert (lost.json()["previous_quantity"], lost.json()["target_quantity"]) == (5, 9)
    assert retried.status_code == 200
    body = retried.json()
    assert (body["previous_quantity"], body["quantity"], body["idempotent_replay"]) == (5, 9, True)
    assert len(update_calls(service.simulator)) == 1
    assert (await stock_row(service.engine, listing.variation_id))["listed_stock"] == 9
    history = await history_rows(service.engine, listing.variation_id)
    assert [(h["change_type"], h["idempotency_key"]) for h in history] == [
        ("set_quantity", "set-lost")
    ]


async def test_a_keyed_retry_sends_again_when_the_previous_quantity_is_still_there(
    service: Any, listing: LinkedListing
) -> None:
    # A 5xx to the update: Back Market did not apply it.
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="500", method="POST")
    failed = await put(service, listing.variation_id, 9, key="set-500")

    retried = await put(service, listing.variation_id, 9, key="set-500")

    assert failed.status_code == 504
    assert retried.status_code == 200
    assert (retried.json()["quantity"], retried.json()["idempotent_replay"]) == (9, False)
    assert [call["body"] for call in update_calls(service.simulator)] == [{"quantity": 9}]
    [row] = await key_rows(service.engine)
    assert row["status"] == "succeeded"


async def test_a_keyed_retry_is_409_for_a_person_when_the_stock_moved_otherwise(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")
    assert (await put(service, listing.variation_id, 9, key="set-moved")).status_code == 504
    service.simulator.place_order(listing.id)

    retried = await put(service, listing.variation_id, 9, key="set-moved")

    assert retried.status_code == 409
    body = retried.json()
    assert body["reason"] == "outcome_unresolved"
    assert (body["previous_quantity"], body["target_quantity"], body["current_quantity"]) == (
        5,
        9,
        8,
    )
    assert len(update_calls(service.simulator)) == 1
    assert service.simulator.quantity_of(listing.id) == 8


async def test_a_replay_answers_the_first_result_without_calling_back_market(
    service: Any, listing: LinkedListing
) -> None:
    first = await put(service, listing.variation_id, 7, expected=START_QUANTITY, key="twice")
    calls = requests_sent(service.simulator)

    replay = await put(service, listing.variation_id, 7, expected=START_QUANTITY, key="twice")

    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "idempotent_replay": True}
    assert requests_sent(service.simulator) == calls


@pytest.mark.parametrize("other", ["quantity", "expected", "an addition"])
async def test_the_same_key_with_another_request_is_409_and_sends_nothing(
    service: Any, listing: LinkedListing, other: str
) -> None:
    await put(service, listing.variation_id, 7, expected=START_QUANTITY, key="k")
    calls = requests_sent(service.simulator)

    if other == "quantity":
        response = await put(service, listing.variation_id, 8, expected=START_QUANTITY, key="k")
    elif other == "expected":
        response = await put(service, listing.variation_id, 7, expected=7, key="k")
    else:
        response = await service.http.post(
            f"/variations/{listing.variation_id}/add-quantity",
            json={"quantity": 7},
            headers={"Idempotency-Key": "k"},
        )

    assert response.status_code == 409
    assert response.json()["reason"] == "idempotency_key_reused"
    assert requests_sent(service.simulator) == calls


def test_a_sets_request_hash_differs_from_an_additions_and_by_expected_quantity() -> None:
    addition = idempotency.request_hash(variation_id=101, marketplace_id=1, quantity=3)
    blind = idempotency.request_hash(
        variation_id=101, marketplace_id=1, quantity=3, operation="set_quantity"
    )
    expecting = idempotency.request_hash(
        variation_id=101,
        marketplace_id=1,
        quantity=3,
        operation="set_quantity",
        expected_quantity=5,
    )

    assert len({addition, blind, expecting}) == 3


INVALID_BODIES: dict[str, Any] = {
    "negative": {"quantity": -1},
    "negative_expected": {"quantity": 1, "expected_quantity": -1},
    "string": {"quantity": "5"},
    "fraction": {"quantity": 2.5},
    "fraction_expected": {"quantity": 1, "expected_quantity": 4.5},
    "boolean": {"quantity": True},
    "boolean_expected": {"quantity": 1, "expected_quantity": False},
    "over_the_limit": {"quantity": 10_001},
    "huge": {"quantity": 10**30},
    "missing": {"expected_quantity": 5},
    "extra_field": {"quantity": 5, "added": 1},
    "list": [5],
}


async def test_whole_numbers_written_as_floats_are_those_numbers(
    service: Any, listing: LinkedListing
) -> None:
    """As for add-quantity: JSON has one number type, and 7.0 is 7."""
    response = await service.http.put(
        set_path(listing.variation_id),
        json={"quantity": 7.0, "expected_quantity": float(START_QUANTITY)},
    )

    assert response.status_code == 200
    assert (response.json()["previous_quantity"], response.json()["quantity"]) == (
        START_QUANTITY,
        7,
    )
    assert service.simulator.quantity_of(listing.id) == 7


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
async def test_invalid_body_is_422_with_a_message_and_sends_nothing(
    service: Any, listing: LinkedListing, case: str
) -> None:
    response = await service.http.put(set_path(listing.variation_id), json=INVALID_BODIES[case])

    assert response.status_code == 422
    assert response.json()["detail"]
    assert requests_sent(service.simulator) == 0


async def test_the_limit_comes_from_settings_and_is_named_in_the_message(
    service: Any, listing: LinkedListing
) -> None:
    response = await put(service, listing.variation_id, 10_001)

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "quantity must be between 0 and 10000 (ADD_QUANTITY_LIMIT), got 10001"
    )


async def test_set_of_an_unknown_variation_is_404_and_sends_nothing(service: Any) -> None:
    response = await put(service, 999, 1)

    assert response.status_code == 404
    assert requests_sent(service.simulator) == 0


async def test_set_on_a_marketplace_without_client_is_422_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    response = await put(service, listing.variation_id, 1, marketplace_id=4)

    assert response.status_code == 422
    assert requests_sent(service.simulator) == 0


async def test_read_failure_is_502_and_sends_no_update(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", count=2, kind="503", method="GET")

    response = await put(service, listing.variation_id, 9)

    assert response.status_code == 502
    assert update_calls(service.simulator) == []
    assert await stock_row(service.engine, listing.variation_id) is None


async def test_unknown_outcome_without_key_is_504_with_previous_and_target(
    service: Any, listing: LinkedListing
) -> None:
    service.simulator.fail_next(f"/ws/listings/{listing.id}", kind="lost_response", method="POST")

    response = await put(service, listing.variation_id, 9)

    assert response.status_code == 504
    body = response.json()
    assert (body["reason"], body["previous_quantity"], body["target_quantity"]) == (
        "outcome_unknown",
        START_QUANTITY,
        9,
    )
    assert await stock_row(service.engine, listing.variation_id) is None


@pytest.mark.parametrize("settings_overrides", [{"backmarket_updates_per_hour": 1}])
async def test_a_spent_update_budget_is_429_with_retry_after_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    assert (await put(service, listing.variation_id, 6)).status_code == 200
    calls = requests_sent(service.simulator)

    refused = await put(service, listing.variation_id, 7)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["reason"] == "update_budget_spent"
    assert requests_sent(service.simulator) == calls


async def test_a_set_waiting_too_long_for_the_variation_is_409_and_sends_nothing(
    service: Any, listing: LinkedListing
) -> None:
    ctx = service.app.state.container.ctx

    async with holding_variation(service, listing.variation_id):
        with pytest.raises(Conflict) as refused:
            await set_quantity(
                ctx,
                variation_id=listing.variation_id,
                quantity=1,
                marketplace_id=1,
                lock_timeout=0.05,
            )

    assert refused.value.extra["reason"] == "busy"
    assert requests_sent(service.simulator) == 0


async def test_set_quantity_outcomes_are_counted_in_metrics(
    service: Any, listing: LinkedListing
) -> None:
    await put(service, listing.variation_id, 6, expected=START_QUANTITY)
    await put(service, listing.variation_id, 7, expected=START_QUANTITY)

    metrics = (await service.http.get("/metrics")).text

    assert 'stock_sync_set_quantity_total{outcome="applied"}' in metrics
    assert 'stock_sync_set_quantity_total{outcome="quantity_changed"}' in metrics
