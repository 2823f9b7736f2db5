"""POST /ws/listings/{listingId}: partial update of the global quantity."""

from __future__ import annotations

import httpx
import pytest

from simulator import SimulatorState, create_simulator_app
from tests.simulator.conftest import client_for, make_config


async def test_update_with_int_quantity_returns_the_full_listing(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    listing = state.listing("SKU-0000005")

    response = await client.post(f"/ws/listings/{listing['id']}", json={"quantity": 12})

    assert response.status_code == 200
    assert response.json() == {**listing, "quantity": 12, "statuscode": 200}
    assert state.quantity_of(listing["id"]) == 12


async def test_update_with_string_quantity_is_accepted(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    response = await client.post("/ws/listings/100000", json={"quantity": "7"})

    assert response.status_code == 200
    assert state.quantity_of(100000) == 7


async def test_update_only_changes_the_fields_sent(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    before = state.listing(100000)

    await client.post("/ws/listings/100000", json={"comment": "Like new"})

    after = state.listing(100000)
    assert after == {**before, "comment": "Like new"}


@pytest.mark.parametrize("quantity", [-1, "-3", "ten", "1.5", 2.5, True, None])
async def test_bad_quantity_is_400_and_changes_nothing(
    client: httpx.AsyncClient, state: SimulatorState, quantity: object
) -> None:
    before = state.quantity_of(100000)

    response = await client.post("/ws/listings/100000", json={"quantity": quantity})

    assert response.status_code == 400
    # The spec documents this 400 as a bare JSON string.
    assert isinstance(response.json(), str)
    assert state.quantity_of(100000) == before


async def test_malformed_json_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ws/listings/100000", content=b"{quantity: 3", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400


async def test_price_in_another_currency_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ws/listings/100000",
        json={"price": "10.00", "currency": "GBP"},
        headers={"Accept-Language": "fr-fr"},
    )

    assert response.status_code == 400


async def test_bad_quantity_can_answer_error_response_v1() -> None:
    app = create_simulator_app(make_config(update_error_body="error_v1"))
    async with client_for(app) as http:
        response = await http.post("/ws/listings/100000", json={"quantity": -1})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_update_of_unknown_listing_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/ws/listings/100001", json={"quantity": 1})

    assert response.status_code == 404


async def test_update_can_answer_202_like_some_real_servers() -> None:
    app = create_simulator_app(make_config(update_status_code=202))
    async with client_for(app) as http:
        response = await http.post("/ws/listings/100000", json={"quantity": 3})

    assert response.status_code == 202
    assert response.json()["quantity"] == 3


async def test_patch_is_405(client: httpx.AsyncClient) -> None:
    response = await client.patch("/ws/listings/100000", json={"quantity": 3})

    assert response.status_code == 405


async def test_updates_are_recorded_in_stats(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    await client.post("/ws/listings/100000", json={"quantity": "5"})
    await client.post("/ws/listings/100007", json={"quantity": -5})

    updates = state.stats()["updates"]

    assert [(u["ref"], u["quantity"], u["status"]) for u in updates] == [
        ("100000", 5, 200),
        ("100007", None, 400),
    ]


async def test_zero_quantity_takes_an_online_listing_offline(
    client: httpx.AsyncClient, state: SimulatorState
) -> None:
    online = next(
        ref
        for ref in (f"SKU-{n:07d}" for n in range(1, 121))
        if state.listing(ref)["publication_state"] == 2
    )

    listing_id = state.listing(online)["id"]

    emptied = await client.post(f"/ws/listings/{listing_id}", json={"quantity": 0})
    refilled = await client.post(f"/ws/listings/{listing_id}", json={"quantity": 2})

    assert emptied.json()["publication_state"] == 3
    assert refilled.json()["publication_state"] == 2
